"""MkDocs hook (mkdocs.yml `hooks:`): before each build, writes the pages that are made from
the repository rather than written by hand, so they cannot drift from it:

- `docs/index.md`, the home page: README.md with its links into docs/ made relative to it;
- `docs/reference/configuration.md`: every key of every command, from the schema
  (`flexseg.config.reference`).

Both are left out of git (.gitignore).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path


def on_pre_build(config, **kwargs) -> None:
    docs = Path(config["docs_dir"])
    root = docs.parent
    write_home(root / "README.md", docs / "index.md")
    write_reference(root / "conf", docs / "reference" / "configuration.md")


def write_home(readme: Path, target: Path) -> None:
    text = readme.read_text()
    text = re.sub(r"\]\(docs/", "](", text)
    _write(target, text)


def write_reference(conf: Path, target: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(conf.parent))  # the flexseg of this repository, the one documented
    from flexseg.config.reference import markdown

    _write(target, markdown(conf))


def _write(path: Path, text: str) -> None:
    """Writes only a change: `mkdocs serve` would otherwise rebuild for ever."""
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
