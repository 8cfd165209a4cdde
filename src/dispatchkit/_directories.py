"""A directory that long work will write into, checked before the work starts."""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = ["check_writable"]


def check_writable(directory: Path) -> None:
    """Create ``directory`` if need be and create (and remove) a file in it: permissions
    alone can mislead (a read-only filesystem, /proc, an ACL), a file cannot.

    Raises:
        OSError: the directory cannot be created, is not a directory, or refuses a file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory, prefix=".dispatchkit-probe-"):
        pass
