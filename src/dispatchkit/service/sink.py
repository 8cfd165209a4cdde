"""The default job: append payloads to NDJSON segment files, in batches.

    workers ──append(line)──▶ buffer ──(batch full)──▶ segment file
                                 ▲
                flusher thread ──┘ every fsync_interval: write the rest, fsync

Segments are ``segment-000001.ndjson``, ``segment-000002.ndjson``, ...; the
next one is opened once the current one reaches ``segment_bytes``, so files
are only ever appended to. Lines wait in memory at most one ``fsync_interval``
before they are written, and written lines reach the disk at the next flush;
:meth:`SegmentSink.close` writes and fsyncs everything.

Appends may come from the event loop (asyncio workers), so they never wait
for the disk: only the flusher thread fsyncs, outside the lock, on a
duplicate of the current segment's descriptor and on the descriptors of the
segments filled since the last flush, which it then closes.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from time import monotonic
from typing import Final

__all__ = ["SEGMENT_GLOB", "SegmentSink", "read_lines"]

logger = logging.getLogger(__name__)

#: Bytes buffered before a worker writes them out itself.
BATCH_BYTES: Final = 256 << 10

#: Seconds before a segment that could not be opened is tried again.
ROTATION_RETRY: Final = 1.0

#: File name pattern of the segments.
SEGMENT_GLOB: Final = "segment-*.ndjson"


class SegmentSink:
    """Append-only NDJSON segments rotated by size, written in batches.

    Args:
        directory: where the segments go (created when missing). Numbering
            continues after the segments already there.
        segment_bytes: size at which a segment is closed and the next opened.
        fsync_interval: seconds between two flushes to disk.

    Raises:
        OSError: the directory cannot be created or written.
    """

    def __init__(self, directory: Path, segment_bytes: int, fsync_interval: float) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._segment_bytes = segment_bytes
        self._interval = fsync_interval
        self._lock = threading.Lock()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._size = 0
        #: Descriptors of full segments, fsynced and closed by the next flush.
        self._unsynced: list[int] = []
        #: No rotation is tried before this time (after a failed one).
        self._next_rotation = 0.0
        existing = sorted(directory.glob(SEGMENT_GLOB))
        self._number = int(existing[-1].stem.rsplit("-", 1)[1]) if existing else 0
        self._fd = self._open_next()
        self._number += 1
        #: Lines written to segment files so far.
        self.lines_written = 0
        self._closed = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="sink-flusher", daemon=True)
        self._flusher.start()

    def append(self, line: bytes) -> None:
        """Queue one line (without its newline) for the current segment.

        Raises:
            OSError: writing a full batch failed, or the sink is closed.
        """
        with self._lock:
            if self._closed.is_set():
                raise OSError("the sink is closed")
            self._buffer.append(line)
            self._buffered += len(line) + 1
            if self._buffered >= BATCH_BYTES:
                self._write_locked()

    def flush(self) -> None:
        """Write what is buffered, then fsync every segment written since the last flush.

        Raises:
            OSError: the write or an fsync failed (every descriptor is closed
                regardless, and the next flush tries the current segment again).
        """
        with self._lock:
            self._write_locked()
            pending = [*self._unsynced, os.dup(self._fd)]
            self._unsynced = []
        failure = _sync_and_close(pending)  # outside the lock: appends go on meanwhile
        if failure is not None:
            raise failure

    def close(self) -> None:
        """Stop the flusher, write and fsync everything, close the segment. Idempotent.

        Raises:
            OSError: the last write or fsync failed.
        """
        if self._closed.is_set():
            return
        self._closed.set()
        self._flusher.join()
        try:
            self.flush()
        finally:
            # After a failed flush, segments may still wait: fsync and close them too.
            with self._lock:
                left, self._unsynced = [*self._unsynced, self._fd], []
            _sync_and_close(left)  # a failure was raised by the flush above already

    def _write_locked(self) -> None:
        if not self._buffer:
            return
        data = b"\n".join(self._buffer) + b"\n"
        count = len(self._buffer)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        # Cleared only once written: after a failed write the lines are tried again.
        self._buffer = []
        self._buffered = 0
        self._size += len(data)
        self.lines_written += count
        if self._size >= self._segment_bytes and monotonic() >= self._next_rotation:
            self._rotate_locked()

    def _rotate_locked(self) -> None:
        """Start the next segment; if it cannot be opened, keep writing to this one."""
        try:
            following = self._open_next()
        except OSError:
            # The lines are written already: not their failure. Try again later,
            # and let flushes fsync meanwhile (out of descriptors, a full disk...).
            self._next_rotation = monotonic() + ROTATION_RETRY
            logger.critical("sink: cannot start a new segment; retrying", exc_info=True)
            return
        self._unsynced.append(self._fd)
        self._fd = following
        self._number += 1
        self._size = 0

    def _open_next(self) -> int:
        """Open the segment after the current one (the caller counts it as opened)."""
        path = self.directory / f"segment-{self._number + 1:06d}.ndjson"
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _flush_loop(self) -> None:
        while not self._closed.wait(self._interval):
            try:
                self.flush()
            except OSError:
                # Lines stay counted as written or not; the next flush tries again.
                logger.critical("sink flush failed", exc_info=True)


def _sync_and_close(fds: list[int]) -> OSError | None:
    """Fsync and close every descriptor, whatever fails; the first failure, if any."""
    failure: OSError | None = None
    for fd in fds:
        try:
            os.fsync(fd)
        except OSError as exc:
            failure = failure or exc
        finally:
            os.close(fd)
    return failure


def read_lines(directory: Path) -> list[bytes]:
    """Every line of every segment in ``directory``, in segment order."""
    lines: list[bytes] = []
    for path in sorted(directory.glob(SEGMENT_GLOB)):
        lines.extend(path.read_bytes().splitlines())
    return lines
