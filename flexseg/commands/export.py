"""`flexseg-export run_dir=... format=onnx|tf_saved_model|litert|torch`: the run's model for
deployment, checked by its own runtime, with preprocessing.json and model_card.md."""

from __future__ import annotations

from pathlib import Path

from flexseg.commands._app import command
from flexseg.config.schema import ExportConfig


@command
def main(cfg: ExportConfig, run_dir: Path) -> None:
    """Exports and checks the run's model, and says how close it came."""
    from flexseg import backend
    from flexseg.predict.export import export

    backend.use_compile_cache(cfg.compile_cache)
    result = export(cfg)
    print(
        f"exported {result['format']} to {result['folder']} (checked on {result['checked_on']}: "
        f"probabilities within {result['max_difference']:.2g} of the Keras model's)"
    )
