"""Where datasets live: the data root, and ``data:`` paths in configs.

The data root is ``--data-root DIR`` where a command takes it, else ``$LIIF_DATA_DIR``, else
``<liif cache>/datasets``; ``liif data fetch NAME`` writes there. A config path written
``data:Set14/HR`` means ``<data root>/Set14/HR``, so a shipped config names no machine's folders.
"""
from __future__ import annotations

import os
from pathlib import Path

PREFIX = "data:"

# Top-level folders under the data root that ``liif data fetch NAME`` provides, NAME being the folder's
# name in lower case.
FETCHABLE = frozenset({"set5", "set14", "b100", "urban100", "div2k", "train"})


def data_root() -> Path:
    """``$LIIF_DATA_DIR``, else ``<liif cache>/datasets``."""
    if os.environ.get("LIIF_DATA_DIR"):
        return Path(os.environ["LIIF_DATA_DIR"]).expanduser()
    from liif.weights import cache_dir

    return cache_dir() / "datasets"


def is_data_path(text: str) -> bool:
    return text.startswith(PREFIX)


def resolve(text: str, root: Path | None = None) -> str:
    """``data:REL`` -> ``<root>/REL`` (root: the given one, else :func:`data_root`); other paths as given."""
    if not is_data_path(text):
        return text
    rel = text[len(PREFIX):].lstrip("/")
    return str((root if root is not None else data_root()) / rel)


def fetch_hint(text: str) -> str:
    """What to run when the folder behind a ``data:`` path is missing (empty for other paths)."""
    if not is_data_path(text):
        return ""
    top = text[len(PREFIX):].lstrip("/").split("/", 1)[0].lower()
    where = "pass --data-root DIR or set LIIF_DATA_DIR to where it is"
    return f"; run `liif data fetch {top}` or {where}" if top in FETCHABLE else f"; {where}"
