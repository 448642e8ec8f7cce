"""`flexseg-infer run_dir=... input=... [output=...]`: masks and overlays for new images."""

from __future__ import annotations

from pathlib import Path

from flexseg.commands._app import command
from flexseg.config.schema import InferConfig


@command
def main(cfg: InferConfig, run_dir: Path) -> None:
    """Predicts the inputs and says where the files went."""
    from flexseg import backend
    from flexseg.predict.inference import infer

    backend.use_compile_cache(cfg.compile_cache)
    written = infer(cfg)
    folders = sorted({str(p.parent) for paths in written for p in paths.values()})
    print(f"predicted {len(written)} image(s) into {', '.join(folders)}")
