"""The default store: append payloads to NDJSON segment files, written before the answer.

    buffered: request ──write(lines)──▶ os.write to the current segment (the OS page cache)
    durable:  requests ─▶ group commit (group_commit.py), in a thread of its own:
                          one write of a group's lines, then a flush; 202s after it
       │ buffered: 202 once written    flusher thread: every fsync_interval, fsync
       │ 503 if the write or the flush (outside the lock, on a duplicate descriptor)
       │   failed

Segments are ``segment-000001.ndjson``, ``segment-000002.ndjson``, ...; the
next one is opened once the current one reaches ``segment_bytes``, so files
are only ever appended to. A sink of a named ``series`` (one per server
process: ``p1``, ``p2``, ...) writes ``segment-p1-000001.ndjson``, ...: each
series is numbered on its own and written by one process only.

A request's lines are written in one ``os.write`` before it is answered (a
durable sink's, together with its group's), so a full disk is seen before the
202 and refused. When the sink is ``durable`` the request then waits for a
:meth:`SegmentSink.flush` that began after its write (the server's group
commit); otherwise the fsync is deferred to the flusher (at most one
``fsync_interval`` later).

A write that fails (a full disk, a short write) is undone: the segment is
truncated back to its last whole line before anything else is written, so a
segment never holds a partial or fused line, and the request is refused, so
nothing is written twice. Lines written but whose fsync failed are counted in
:attr:`SegmentSink.unstored` when the sink is not durable: they were answered
202 and may be lost. A durable sink's requests whose flush failed got 503
instead: their lines may be in a segment all the same (a client that sends them
again may store them twice), and nothing answered 202 was lost.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from time import monotonic, perf_counter
from typing import Final

from dispatchkit.errors import DispatchError

__all__ = [
    "SEGMENT_GLOB",
    "SegmentSink",
    "SinkClosed",
    "SinkFailure",
    "describe_os_error",
    "read_lines",
]

logger = logging.getLogger(__name__)

#: Seconds before a segment that could not be opened is tried again.
ROTATION_RETRY: Final = 1.0

#: File name pattern of the segments.
SEGMENT_GLOB: Final = "segment-*.ndjson"

#: Write errors that free space cures: the sink reports itself healthy again
#: once the filesystem has room for the write that failed.
_NO_ROOM: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


class SinkFailure(DispatchError, OSError):
    """The sink cannot store lines now (nothing of them was kept)."""


class SinkClosed(SinkFailure):
    """The sink is closed: the service is stopping."""


class SegmentSink:
    """Append-only NDJSON segments rotated by size, written at once, fsynced in the background.

    Used from one thread at a time for writes (the server's event loop, or
    for a durable sink the group commit's thread), and from its own flusher
    thread for fsyncs.

    Args:
        directory: where the segments go (created when missing). Numbering
            continues after the segments already there.
        segment_bytes: size at which a segment is closed and the next opened.
        fsync_interval: seconds between two fsyncs of the flusher thread.
        durable: each write is answered only after a :meth:`flush` that began
            after it succeeded, so a failed fsync loses nothing answered 202
            (and counts nothing in :attr:`unstored`).
        series: the name this sink's segments carry (empty: none), so that
            several processes can write to one directory without sharing a file.
        on_flush: called with the seconds each flush spent in fsync (its
            segments' and, after a new segment, the directory's), failed or
            not, unless it had nothing to make durable; one caller at a time
            (None: not measured).

    Raises:
        OSError: the directory cannot be created or the first segment opened.
    """

    def __init__(
        self,
        directory: Path,
        segment_bytes: int,
        fsync_interval: float,
        *,
        durable: bool = False,
        series: str = "",
        on_flush: Callable[[float], None] | None = None,
    ) -> None:
        self.directory = directory
        self.on_flush = on_flush
        directory.mkdir(parents=True, exist_ok=True)
        self._segment_bytes = segment_bytes
        self._interval = fsync_interval
        self.durable = durable
        self._lock = threading.Lock()
        #: Held for a whole flush: a flush returns only once every line written
        #: before it began is fsynced, even those a concurrent flush took.
        self._flush_lock = threading.Lock()
        #: A segment was created since the last flush: its directory entry needs an fsync.
        self._new_segment = True
        #: Full segments, fsynced and closed by the next flush: (descriptor,
        #: lines written to it since its last fsync).
        self._unsynced: list[tuple[int, int]] = []
        #: No rotation is tried before this time (after a failed one).
        self._next_rotation = 0.0
        #: What the segment names start with.
        self._prefix = f"segment-{series}-" if series else "segment-"
        existing = sorted(directory.glob(f"{self._prefix}[0-9]*.ndjson"))
        self._number = int(existing[-1].stem.rsplit("-", 1)[1]) if existing else 0
        self._fd = self._open_next()
        self._number += 1
        #: Bytes of whole lines in the current segment: where a failed write is cut back to.
        self._size = os.fstat(self._fd).st_size
        #: Lines written to segment files so far.
        self.lines_written = 0
        #: Lines written whose fsync failed: answered 202, perhaps not on disk.
        self.unstored = 0
        #: Flushes that failed so far: a durable write is answered 202 only if
        #: none failed between it and the end of the flush it waited for.
        self.failed_flushes = 0
        #: Lines written to the current segment since the last flush took its count.
        self._lines_unsynced = 0
        #: Why the last write failed (None: it succeeded), and how many bytes it had.
        self._write_failure: OSError | None = None
        self._failed_bytes = 0
        #: Why the last flush failed (None: it succeeded); writes are refused meanwhile.
        self._sync_failure: OSError | None = None
        #: The current segment ends on a partial line that could not be cut off yet.
        self._torn = False
        self._closed = threading.Event()
        #: The same as ``_closed`` (set under the lock), cheaper to read per write.
        self._closing = False
        self._flusher = threading.Thread(target=self._flush_loop, name="sink-flusher", daemon=True)
        self._flusher.start()

    def write(self, lines: list[bytes]) -> None:
        """Write lines (each without a newline) to the current segment: all of them or none.

        On success they are with the OS (fsynced by the next flush). On failure
        the segment is cut back to its last whole line, and none of them is kept.

        Raises:
            SinkClosed: the sink is closed.
            SinkFailure: they could not be written (the disk is full, say), or
                the last fsync failed and no fsync has succeeded since.
        """
        self.write_lines(b"\n".join(lines) + b"\n", len(lines))

    def write_lines(self, data: bytes, count: int) -> None:
        """:meth:`write` of ``count`` lines already joined, each ending in a newline.

        Raises:
            SinkFailure: as :meth:`write`.
        """
        size = len(data)
        with self._lock:
            if self._closing or self._sync_failure is not None or self._torn:
                self._refuse_or_mend_locked()
            try:
                written = os.write(self._fd, data)
                if written < size:  # a short write: the rest, or the error that stops it
                    self._write_rest_locked(memoryview(data)[written:], written)
            except OSError as exc:
                self._fail_write_locked(exc, size)
                raise SinkFailure(f"cannot write to the sink: {describe_os_error(exc)}") from exc
            if self._write_failure is not None:
                logger.warning("sink: writing again", extra={"segment": self._segment_name()})
                self._write_failure = None
            self._size += size
            self.lines_written += count
            self._lines_unsynced += count
            if self._size >= self._segment_bytes and monotonic() >= self._next_rotation:
                self._rotate_locked()

    def _refuse_or_mend_locked(self) -> None:
        """Before a write: refuse it while closed or unfsynced; cut a partial line off.

        Raises:
            SinkClosed: the sink is closed.
            SinkFailure: the last fsync failed, or the partial line stays.
        """
        if self._closing:
            raise SinkClosed("the sink is closed")
        if self._sync_failure is not None:
            reason = describe_os_error(self._sync_failure)
            raise SinkFailure(f"the segments cannot be fsynced: {reason}")
        if self._torn:
            self._cut_back_locked()  # raises while the partial line stays

    def _write_rest_locked(self, view: memoryview, written: int) -> None:
        """Write what a short write left, until done or an error says why not."""
        while True:
            if not written:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if not view:
                return
            written = os.write(self._fd, view)
            view = view[written:]

    def append(self, line: bytes) -> None:
        """Write one line: :meth:`write` of ``[line]``.

        Raises:
            SinkFailure: as :meth:`write`.
        """
        self.write([line])

    def failure(self) -> str | None:
        """Why the sink cannot take lines now, or None when it can.

        A write that failed for want of room counts as cured once the
        filesystem has room for it again (so that a health check does not keep
        traffic away for good); any other failure lasts until a write (or,
        for an fsync failure, a flush) succeeds.
        """
        with self._lock:
            sync_failure, write_failure, needed = (
                self._sync_failure,
                self._write_failure,
                self._failed_bytes,
            )
        if sync_failure is not None:
            return f"sink cannot fsync: {describe_os_error(sync_failure)}"
        if write_failure is None:
            return None
        if write_failure.errno in _NO_ROOM and _room(self.directory) > needed:
            return None
        return f"sink cannot write: {describe_os_error(write_failure)}"

    def flush(self) -> None:
        """Fsync every segment written since the last flush; close the full ones.

        A failure counts, in :attr:`unstored`, the lines written since the
        last flush to the segments whose fsync failed, and refuses writes until
        a flush succeeds.

        Raises:
            SinkClosed: the sink was closed (its close flushed it).
            OSError: an fsync failed (every descriptor is closed regardless).
        """
        with self._flush_lock:
            self._flush_serialized()

    def _flush_serialized(self) -> None:
        with self._lock:
            if self._fd < 0:
                raise SinkClosed("the sink is closed")
            pending = [*self._unsynced, (os.dup(self._fd), self._lines_unsynced)]
            self._unsynced = []
            self._lines_unsynced = 0
            new_segment, self._new_segment = self._new_segment, False
        started = perf_counter()
        failure, lost = _sync_and_close(pending)  # outside the lock: writes go on meanwhile
        if new_segment and failure is None:
            failure = _sync_directory(self.directory)  # a new file's name survives a crash too
            if failure is not None:
                self._new_segment = True
                lost = sum(lines for _, lines in pending)
        # Under the flush lock: one caller at a time. A flush with nothing to
        # make durable (the flusher's, on an idle sink) says nothing of the disk.
        if self.on_flush is not None and (new_segment or any(lines for _, lines in pending)):
            self.on_flush(perf_counter() - started)
        first = False
        with self._lock:
            if failure is not None:
                self.failed_flushes += 1
                if not self.durable:  # a durable sink's writes were not answered 202 yet
                    self.unstored += lost
                first = self._sync_failure is None
                self._sync_failure = failure
            elif self._sync_failure is not None:
                logger.warning("sink: fsync works again")
                self._sync_failure = None
        if failure is not None:
            if first:
                logger.critical(
                    "sink: fsync failed; refusing payloads until one succeeds",
                    extra={"error": describe_os_error(failure), "unstored": self.unstored},
                )
            raise failure

    def close(self) -> None:
        """Stop the flusher, fsync and close every segment. Idempotent, never raises.

        Lines whose fsync failed are counted in :attr:`unstored`.
        """
        if self._closed.is_set():
            return
        with self._lock:
            self._closed.set()  # under the lock: no write is half done
            self._closing = True
        self._flusher.join()
        with contextlib.suppress(OSError):  # counted in unstored and logged by the flush
            self.flush()
        # Both locks: a flush still asked for (a group commit's) finds it closed.
        with self._flush_lock, self._lock:
            if self._torn:  # one more try: leave no partial line behind
                try:
                    self._cut_back_locked()
                except SinkFailure:
                    logger.critical("sink: the last segment ends on a partial line")
            os.close(self._fd)
            self._fd = -1

    def _fail_write_locked(self, exc: OSError, size: int) -> None:
        """Undo a failed write: cut the segment back to its last whole line."""
        if self._write_failure is None:
            logger.critical(
                "sink: write failed; refusing payloads until a write succeeds",
                extra={"error": describe_os_error(exc), "segment": self._segment_name()},
            )
        self._write_failure = exc
        self._failed_bytes = size
        self._torn = True
        try:
            self._cut_back_locked()
        except SinkFailure:
            logger.critical("sink: cannot cut the segment back; retried before the next write")

    def _cut_back_locked(self) -> None:
        """Truncate the current segment to its whole lines.

        Raises:
            SinkFailure: the truncation failed (the next write tries again first).
        """
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as exc:
            raise SinkFailure(
                f"cannot cut a partial line off the sink's segment: {describe_os_error(exc)}"
            ) from exc
        self._torn = False

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
        self._unsynced.append((self._fd, self._lines_unsynced))
        self._lines_unsynced = 0
        self._fd = following
        self._number += 1
        self._size = 0
        self._new_segment = True

    def _open_next(self) -> int:
        """Open the segment after the current one (the caller counts it as opened)."""
        path = self.directory / f"{self._prefix}{self._number + 1:06d}.ndjson"
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _segment_name(self) -> str:
        return f"{self._prefix}{self._number:06d}.ndjson"

    def _flush_loop(self) -> None:
        while not self._closed.wait(self._interval):
            with contextlib.suppress(OSError):  # counted and logged; the next one tries again
                self.flush()


def _sync_and_close(pending: list[tuple[int, int]]) -> tuple[OSError | None, int]:
    """Fsync and close every descriptor, whatever fails.

    Args:
        pending: (descriptor, lines written to it since its last fsync).

    Returns:
        The first failure (None: none), and the lines of the descriptors whose fsync failed.
    """
    failure: OSError | None = None
    lost = 0
    for fd, lines in pending:
        try:
            os.fsync(fd)
        except OSError as exc:
            failure = failure or exc
            lost += lines
        finally:
            os.close(fd)
    return failure, lost


def _sync_directory(directory: Path) -> OSError | None:
    """Fsync ``directory`` (the names of the segments in it); the failure, if any."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as exc:
        return exc
    try:
        os.fsync(fd)
    except OSError as exc:
        return exc
    finally:
        os.close(fd)
    return None


def _room(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``directory``."""
    try:
        stats = os.statvfs(directory)
    except OSError:
        return 0
    return stats.f_bavail * stats.f_frsize


def describe_os_error(exc: OSError) -> str:
    """An OS error in one line: its number and text, as logs and answers give it."""
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.strerror else str(exc)


def read_lines(directory: Path) -> list[bytes]:
    """Every line of every segment in ``directory``, in segment order."""
    lines: list[bytes] = []
    for path in sorted(directory.glob(SEGMENT_GLOB)):
        lines.extend(path.read_bytes().splitlines())
    return lines
