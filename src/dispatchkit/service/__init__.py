"""``dispatchkit serve``: the Go article's HTTP ingest service, on a Dispatcher.

Needs the ``serve`` extra (``pip install 'dispatchkit[serve]'``); the core
package never imports this one.
"""

from __future__ import annotations

try:
    import granian  # noqa: F401
    import msgspec  # noqa: F401
    import prometheus_client  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"dispatchkit serve needs the serve extra: pip install 'dispatchkit[serve]' ({exc})"
    ) from exc

from .app import IngestApp
from .config import ServeConfig
from .logs import configure_logging
from .outcome import UnstoredPayloads
from .server import serve
from .sink import SegmentSink, read_lines

__all__ = [
    "IngestApp",
    "SegmentSink",
    "ServeConfig",
    "UnstoredPayloads",
    "configure_logging",
    "read_lines",
    "serve",
]
