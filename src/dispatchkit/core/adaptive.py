"""The adaptive hand-off size of the ``auto`` strategy: how many jobs go in the next chunk.

Sans-I/O: a front end feeds :class:`ChunkController` what its workers measured
(``observe(jobs, seconds)``, one call per finished chunk) and asks it for the
size of the next chunk (``next_chunk(remaining)``). The rule, in
:func:`chunk_size`:

* **grow while jobs are short relative to the hand-off**: a chunk should last
  ``GAP_FACTOR`` times the measured hand-off cost (how long a worker sits
  between the end of one chunk and the start of its next: a queue operation
  and a wake-up for a thread, a pipe round trip for a process), so that this
  cost stays near 2% of the work, as joblib's auto batching aims at a batch
  duration. A floor per worker kind covers what the gap does not show (the
  event loop's own work for asyncio tasks). The size is ``target / mean job
  time``;
* **shrink when job times vary**: the larger the measured variation, the
  smaller the chunk, so one slow job delays few others behind it;
* **shrink near the end**: never more than ``remaining / (tail_factor *
  workers)`` jobs, so the last jobs are spread over every worker rather than
  left in one worker's long chunk; but no further than the jobs that fill the
  worker kind's ``tail_seconds`` (about one hand-off): a chunk shorter than
  its own hand-off evens out less than it costs;
* **grow gradually**: at most twice the previous size, so one fast early
  sample does not commit a worker to a huge chunk.

The measurements arrive from several worker threads at once, without a lock.
The state is a few floats, each update a handful of stores under the GIL: a
race can lose a sample or part of one (its seconds but not its jobs), which
skews the estimates by at most that one sample until the decay washes it out;
a size is always clamped to its bounds whatever the estimates say.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import sqrt
from typing import Any, Final

from .window import MapRun

__all__ = [
    "GAP_FACTOR",
    "KIND_TUNING",
    "MAX_CHUNK",
    "MAX_SPREAD",
    "MAX_TARGET_SECONDS",
    "TAIL_FACTOR",
    "AdaptiveFeed",
    "BulkRun",
    "ChunkController",
    "KindTuning",
    "MeasuredMapRun",
    "chunk_size",
    "tuning",
]

#: Most jobs in one adaptive hand-off.
MAX_CHUNK: Final = 1024
#: The tail rule: at most ``remaining / (TAIL_FACTOR * workers)`` jobs per chunk
#: (half of a worker's fair share of what is left: "factoring").
TAIL_FACTOR: Final = 2
#: Largest variation signal taken into account (a coefficient of variation).
MAX_SPREAD: Final = 8.0
#: How much a sample's weight falls with each later one: the estimates reflect
#: about the last 1 / (1 - DECAY) chunks.
DECAY: Final = 0.95


@dataclass(frozen=True, slots=True)
class KindTuning:
    """The bounds of adaptive chunks for one worker kind.

    Args:
        target: least seconds a chunk should last, whatever the measured gap. A
            thread hand-off is a deque operation and at most one wake-up (tens of
            microseconds); a process hand-off pickles the chunk and crosses a
            pipe twice (a few hundred microseconds on a quiet machine), but with
            its next chunk queued in its pipe a process shows almost none of it
            as a gap: the floor bounds what the dispatcher's process spends per
            chunk. Asyncio workers wait side by side, so a job's measured time is
            mostly waiting, not the loop's work, and the loop's cost per hand-off
            shows in no gap: their chunks are left to grow until the tail rule
            bounds them.
        tail_factor: the tail rule's (chunks of at most ``remaining /
            (tail_factor * workers)``). Asyncio workers are many (a thousand) and
            the event loop's cost per hand-off is what bounds them, so they take a
            whole fair share at a time (guided self-scheduling), which halves the
            hand-offs.
        max_dispatch_chunk: most jobs in one hand-off of ``dispatch``. A
            fire-and-forget chunk sends back only counts, and a process hand-off
            costs a pipe round trip with the process idle meanwhile:
            sub-microsecond jobs need chunks of many thousands for it to vanish,
            as a fixed chunk of the input's share does. Threads and tasks hand
            over for far less.
        tail_seconds: the least a chunk of the tail is made to last, about one
            hand-off: the seed's jobs (a tenth of a microsecond) would otherwise
            end in dozens of chunks of a few jobs, each paying a hand-off worth
            thousands of them. Zero for asyncio, whose measured job time is mostly
            waiting.
    """

    target: float
    tail_factor: int
    max_dispatch_chunk: int
    tail_seconds: float


#: The bounds per worker kind (a kind not named here is tuned as threads).
KIND_TUNING: Final = {
    "thread": KindTuning(0.002, TAIL_FACTOR, MAX_CHUNK, 50e-6),
    "process": KindTuning(0.03, TAIL_FACTOR, 16384, 500e-6),
    "asyncio": KindTuning(60.0, 1, MAX_CHUNK, 0.0),
}
#: A chunk should last this many times the measured hand-off gap (about 2% cost).
GAP_FACTOR: Final = 50.0
#: Longest a chunk is aimed to last, however slow the hand-offs (seconds).
MAX_TARGET_SECONDS: Final = 1.0
#: Chunks kept queued per worker while a map runs: one to take when the
#: current one ends, one more so a refill can come late.
QUEUED_PER_WORKER: Final = 2


def tuning(executor: str) -> KindTuning:
    """The bounds of adaptive chunks for this worker kind."""
    return KIND_TUNING.get(executor, KIND_TUNING["thread"])


def chunk_size(
    job_seconds: float | None,
    spread: float,
    target: float,
    workers: int,
    remaining: int | None = None,
    previous: int = 1,
    *,
    tail_factor: int = TAIL_FACTOR,
    max_chunk: int = MAX_CHUNK,
    tail_seconds: float = 0.0,
) -> int:
    """The size of the next chunk (at least 1, at most ``max_chunk``).

    Args:
        job_seconds: the mean job duration measured so far; None before any.
        spread: the measured variation of job durations (a coefficient of variation).
        target: seconds a chunk should last.
        workers: how many workers share the input.
        remaining: jobs of the input not yet handed out, if known.
        previous: the size given last (growth is at most twice it).
        tail_seconds: the tail rule shrinks a chunk no further than the jobs that
            fill this many seconds (at the measured job time).

    Non-increasing in ``job_seconds`` and ``spread``; non-decreasing in
    ``target``, ``remaining`` and ``previous``.
    """
    if job_seconds is None:
        size = 1  # nothing measured: one job, to measure it soon
    elif job_seconds <= 0:
        size = max_chunk
    else:
        spread = min(max(spread, 0.0), MAX_SPREAD)
        # Variation costs only where one slow job holds its chunk-mates back (the
        # tail, an ordered map's head): a gentle penalty, so that the noise of a
        # loaded machine does not halve every chunk.
        ideal = target / (job_seconds * sqrt(1.0 + spread))
        # A hair over, so that 0.002 / 0.0001 gives 20, not 19 (floating point).
        size = int(min(ideal * (1.0 + 1e-9), float(max_chunk)))
        size = min(size, 2 * max(previous, 1))
    if remaining is not None:
        tail = remaining // (tail_factor * max(workers, 1))
        if tail_seconds > 0 and job_seconds is not None:
            # Jobs too short to measure fill the tail's seconds with any chunk (as
            # the size above takes them); capped before int() so a tiny time
            # cannot overflow.
            fill = tail_seconds / job_seconds if job_seconds > 0 else float(max_chunk)
            tail = max(tail, int(min(fill, float(max_chunk))))
        size = min(size, tail)
    return max(1, min(size, max_chunk))


class _DecayedMean:
    """A mean over samples whose weight falls by ``DECAY`` per later sample."""

    __slots__ = ("total", "weight")

    def __init__(self) -> None:
        self.total = 0.0
        self.weight = 0.0

    @property
    def mean(self) -> float | None:
        """The weighted mean; None before a sample."""
        return self.total / self.weight if self.weight else None

    def add(self, value: float, weight: float = 1.0) -> None:
        """A sample: ``value`` summed over ``weight`` units (jobs, chunks)."""
        self.total = DECAY * self.total + value
        self.weight = DECAY * self.weight + weight


class ChunkController:
    """Measured job times and hand-off gaps in, the next chunk size out (see the
    module's rule).

    The estimates are decaying sums over the chunks measured (each sample's
    weight falls by ``DECAY`` per later sample): the mean job time is the
    seconds over the jobs, so a chunk of 100 jobs counts 100 times a single
    job; the variation is the coefficient of variation of job times, from how
    far each chunk's mean strays from the overall mean (a mean of ``n`` jobs
    strays by about ``sigma / sqrt(n)``); the gap is the mean time a worker
    spent between two chunks.

    Args:
        workers: how many workers share the input.
        min_target: the least seconds a chunk should last (the worker kind's floor).
        max_chunk: the most jobs a chunk may hold.
        tail_factor: the tail rule's (chunks of at most ``remaining / (tail_factor *
            workers)``).
        tail_seconds: the least a chunk of the tail is made to last.
    """

    __slots__ = (
        "_gap", "_job", "_variance", "last", "max_chunk", "min_target", "tail_factor",
        "tail_seconds", "workers",
    )  # fmt: skip

    def __init__(
        self,
        workers: int,
        min_target: float,
        max_chunk: int = MAX_CHUNK,
        tail_factor: int = TAIL_FACTOR,
        tail_seconds: float = 0.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if not min_target > 0:
            raise ValueError(f"min_target must be a positive number of seconds, got {min_target!r}")
        self.workers = workers
        self.min_target = min_target
        self.max_chunk = max_chunk
        self.tail_factor = tail_factor
        self.tail_seconds = tail_seconds
        #: Seconds per job, per chunk the squared stray of its mean job time, and
        #: seconds a worker sat between two chunks.
        self._job = _DecayedMean()
        self._variance = _DecayedMean()
        self._gap = _DecayedMean()
        #: The size given last.
        self.last = 1

    @property
    def gap_seconds(self) -> float | None:
        """The mean time a worker spent between two chunks; None before a sample."""
        return self._gap.mean

    @property
    def target(self) -> float:
        """Seconds the next chunk should last: ``GAP_FACTOR`` gaps, within the bounds."""
        gap = self.gap_seconds
        aimed = self.min_target if gap is None else GAP_FACTOR * gap
        return min(max(aimed, self.min_target), max(MAX_TARGET_SECONDS, self.min_target))

    def observe_gap(self, seconds: float) -> None:
        """A worker spent ``seconds`` between the end of a chunk and the start of its next."""
        if not seconds >= 0:
            return
        self._gap.add(seconds)

    @property
    def job_seconds(self) -> float | None:
        """The mean duration of one job (seconds); None before a sample."""
        return self._job.mean

    @property
    def spread(self) -> float:
        """The measured variation of job durations (a coefficient of variation)."""
        mean = self.job_seconds
        variance = self._variance.mean
        if variance is None or not mean:
            return 0.0
        return sqrt(variance) / mean

    def observe(self, jobs: int, seconds: float) -> None:
        """A chunk of ``jobs`` jobs took ``seconds`` to run."""
        if jobs < 1 or not seconds >= 0:
            return
        mean = self.job_seconds
        if mean is not None:
            self._variance.add(jobs * (seconds / jobs - mean) ** 2)
        self._job.add(seconds, jobs)

    def next_chunk(self, remaining: int | None = None) -> int:
        """The size of the next chunk; ``remaining``: jobs not yet handed out, if known."""
        size = chunk_size(
            self.job_seconds,
            self.spread,
            self.target,
            self.workers,
            remaining,
            self.last,
            tail_factor=self.tail_factor,
            max_chunk=self.max_chunk,
            tail_seconds=self.tail_seconds,
        )
        self.last = size
        return size


class AdaptiveFeed:
    """One bulk call (``map`` or ``dispatch``) under adaptive chunking.

    It paces the input, so each chunk is cut when it is about to be needed,
    with what has been measured by then: blocks of one chunk per worker, and no
    more while ``QUEUED_PER_WORKER`` chunks per worker wait in the shared queue.

    Args:
        controller: measurements in, sizes out.
        queued: how many messages wait in the shared queue now.
        total: the input's length, if known (``operator.length_hint``).
    """

    __slots__ = ("controller", "ends", "placed", "queued", "size", "total")

    def __init__(
        self, controller: ChunkController, queued: Callable[[], int], total: int | None
    ) -> None:
        self.controller = controller
        self.queued = queued
        self.total = total
        self.placed = 0
        #: The chunk size decided for the block being placed.
        self.size = 1
        #: When each worker's last measured chunk ended (its clock's reading).
        self.ends: dict[Any, float] = {}

    def remaining(self) -> int | None:
        if self.total is None:
            return None
        return max(self.total - self.placed, 0)

    def wants_more(self, in_flight: int) -> bool:
        """Whether more should be placed now: the shared queue is short enough, or
        this call has nothing in flight (another call's chunks may fill the queue,
        and with none of its own out no result would come to wake it)."""
        return in_flight == 0 or self.queued() < QUEUED_PER_WORKER * self.controller.workers

    def block_limit(self, room: int) -> int:
        """Most jobs to take from the input now: a chunk per worker, within ``room``."""
        self.size = self.controller.next_chunk(self.remaining())
        return max(1, min(room, self.size * self.controller.workers))

    def take(self, count: int) -> int:
        """``count`` jobs are being placed: the chunk size decided for their block."""
        self.placed += count
        return self.size

    def cut(self, jobs: Sequence[Any]) -> list[list[Any]]:
        """A placed part of the input, in chunks of the size decided for its block."""
        size = self.size
        self.placed += len(jobs)
        if len(jobs) <= size:
            return [list(jobs)]
        return [list(jobs[low : low + size]) for low in range(0, len(jobs), size)]

    def slices(self, jobs: Sequence[Any]) -> list[Sequence[Any]]:
        """:meth:`cut`, with a range cut into ranges (sent to a worker process as its
        bounds, not its numbers) and a list into lists, neither copied when whole."""
        if type(jobs) not in (list, range):
            return list(self.cut(jobs))
        size = self.size
        self.placed += len(jobs)
        if len(jobs) <= size:
            return [jobs]
        return [jobs[low : low + size] for low in range(0, len(jobs), size)]

    def observe_rows(self, rows: Sequence[Any]) -> None:
        """Measure a delivered chunk of result rows (ResultRow's field order)."""
        if rows:
            self.observe_chunk(rows[0][3], len(rows), rows[0][5], rows[-1][6])

    def observe_chunk(
        self, worker: Any, jobs: int, started: float | None, finished: float | None
    ) -> None:
        """Measure a chunk of ``jobs`` jobs that ``worker`` ran from ``started`` to
        ``finished`` (its clock's readings; None: not measured)."""
        if started is None or finished is None:
            return
        controller = self.controller
        controller.observe(jobs, finished - started)
        # The gap since this worker's previous chunk ended: what a hand-off costs
        # it (the timestamps of one worker come from one clock, its process's).
        ended = self.ends.get(worker)
        if ended is not None and started >= ended:
            controller.observe_gap(started - ended)
        self.ends[worker] = finished


class MeasuredMapRun(MapRun):
    """A :class:`MapRun` whose every delivered chunk is measured for the controller:
    from its rows' timestamps (:meth:`deliver`: process workers, and thread workers
    timing each job for ``outcomes``), or from the span given beside them
    (:meth:`deliver_measured`: untimed thread chunks, asyncio blocks).
    """

    __slots__ = ("feed",)

    def __init__(
        self, feed: AdaptiveFeed, notify: Callable[[], None], outcomes: bool = False
    ) -> None:
        super().__init__(outcomes, notify)
        self.feed = feed

    def deliver(self, rows: list[Any]) -> None:
        self.feed.observe_rows(rows)
        super().deliver(rows)

    def deliver_measured(
        self,
        rows: list[Any],
        worker: Any,
        jobs: int,
        started: float | None,
        finished: float | None,
    ) -> None:
        self.feed.observe_chunk(worker, jobs, started, finished)
        MapRun.deliver(self, rows)


class BulkRun:
    """One ``dispatch`` call under adaptive chunking: its chunks out, measured as they end.

    Fire-and-forget chunks send back no rows: each tells :meth:`ended`, once,
    how many jobs it held and when it ran. The dispatching side, the only one
    to touch the controller here, measures them when it next decides
    (:meth:`wants_more`), so the workers' reports need no lock (a deque append
    is atomic). The waiting side belongs to the front end, as with
    :class:`MapRun`: it sets ``waiting``, then sleeps if :meth:`may_sleep`, and
    a report that finds it waiting and :meth:`may_sleep` false calls ``notify``.
    It is woken only once the shared queue is down to a chunk per worker (or
    every chunk of the call has ended), and then fills it again: one wake-up
    per ``workers`` chunks, not one per chunk.

    Args:
        feed: the pacing and chunking of the call.
        notify: wakes the dispatching side.
    """

    __slots__ = ("chunks", "feed", "notify", "reports", "waiting")

    def __init__(self, feed: AdaptiveFeed, notify: Callable[[], None]) -> None:
        self.feed = feed
        self.notify = notify
        #: Chunks cut and not yet measured (changed on the dispatching side only).
        self.chunks = 0
        #: ``(worker, jobs, started, finished)`` per chunk ended, not yet measured.
        self.reports: deque[tuple[Any, int, float | None, float | None]] = deque()
        self.waiting = False

    def ended(self, worker: Any, jobs: int, started: float | None, finished: float | None) -> None:
        """A chunk of ``jobs`` jobs ended on ``worker`` (from a worker): it ran from
        ``started`` to ``finished``, or was cancelled or lost (None: not measured)."""
        self.reports.append((worker, jobs, started, finished))
        if self.waiting and not self.may_sleep():
            self.notify()

    def may_sleep(self) -> bool:
        """Whether the dispatching side may sleep until the next report: chunks of
        the call are out and more than one per worker still wait in the queue."""
        feed = self.feed
        return len(self.reports) < self.chunks and feed.queued() > feed.controller.workers

    def limit(self) -> int:
        """Jobs the next block takes: a chunk per worker, sized now."""
        controller = self.feed.controller
        return self.feed.block_limit(controller.max_chunk * controller.workers)

    def cut(self, jobs: Sequence[Any]) -> list[list[Any]]:
        """A placed part of the input, in chunks (see :meth:`AdaptiveFeed.cut`)."""
        chunks = self.feed.cut(jobs)
        self.chunks += len(chunks)
        return chunks

    def slices(self, jobs: Sequence[Any]) -> list[Sequence[Any]]:
        """A placed part of the input, in chunks that keep its type (see
        :meth:`AdaptiveFeed.slices`)."""
        chunks = self.feed.slices(jobs)
        self.chunks += len(chunks)
        return chunks

    def wants_more(self) -> bool:
        """Measure what was reported; whether the next block should be placed now
        (False: wait for reports first). True once the known input is all placed,
        so that the call returns without waiting."""
        feed, reports = self.feed, self.reports
        while reports:
            worker, jobs, started, finished = reports.popleft()
            self.chunks -= 1
            feed.observe_chunk(worker, jobs, started, finished)
        return feed.remaining() == 0 or feed.wants_more(self.chunks)
