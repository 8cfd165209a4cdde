"""The commands of ``dispatchkit``, in the order --help lists them, each with its line there.

The top-level parser lists every command from this table but imports only the
module of the one chosen (``dispatchkit.cli.<name>``), so that ``dispatchkit
worker`` does not load the demo, the bench or the HTTP service before its first job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = ["COMMANDS"]

#: Each command's name and its line in ``dispatchkit --help``.
COMMANDS: Final[Mapping[str, str]] = {
    "run": "run the seed's demo with every strategy and compare them",
    "worker": "run jobs from a Redis queue (on this or any other host)",
    "bench": "measure strategies, worker kinds and peers on a workload, with charts and a verdict",
    "serve": "serve the HTTP ingest service (needs dispatchkit[serve])",
}
