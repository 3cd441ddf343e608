"""Names of the files Oyez makes from a Piper model (its optimized copy, its halves): standard
library only, shared by :mod:`.engine` and :mod:`.vocoder`."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["versioned_name"]


def versioned_name(model_path: Path, tag: str, version: str) -> tuple[str, str]:
    """(a name for what is made from ``model_path``, the prefix every version of it shares):
    ``<model>-<hash of its path>-<tag><hash of its size, modification time and version>``, so
    a changed model or a new ``version`` of what makes it never reads a stale file."""
    resolved = model_path.resolve()
    stat = resolved.stat()
    where = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
    what = f"{stat.st_size}/{stat.st_mtime_ns}/{version}"
    prefix = f"{model_path.name.removesuffix('.onnx')}-{where}-{tag}"
    return f"{prefix}{hashlib.sha256(what.encode()).hexdigest()[:16]}", prefix
