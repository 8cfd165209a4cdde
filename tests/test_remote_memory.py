"""The remote worker and dispatcher in one process, over the in-memory transport (no server)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dispatchkit import Job, RetryPolicy
from dispatchkit.errors import RemoteJobError, RemoteTraceback, TimedOut, WorkerLost
from dispatchkit.registry import Registry
from dispatchkit.remote import RedisDispatcher, RedisWorker, WorkerReport
from dispatchkit.strategies import SHARED, Strategy, stable_hash
from dispatchkit.transports.base import Transport
from dispatchkit.transports.memory import ManualClock, MemoryBroker, MemoryTransport
from tests import jobs as local_jobs

pytestmark = pytest.mark.timeout(30)

QUEUE = "q"

jobs = Registry()
runs: list[tuple[str, int]] = []
runs_lock = threading.Lock()


@jobs.register
def square(x: int) -> int:
    if x == 13:
        raise ValueError("unlucky")
    return x * x


@jobs.register
def record(key: str, value: int, seconds: float = 0.0) -> int:
    with runs_lock:
        runs.append((key, value))
    time.sleep(seconds)
    return value


fail_until = jobs.register(local_jobs.fail_until)
sleep_then = jobs.register(local_jobs.sleep_then)


#: Opened by a test to let :func:`gated` jobs end.
gate = threading.Event()


@jobs.register
def gated(x: int) -> int:
    """Waits for :data:`gate` (at most 10 s), so that entries stay where they were fetched."""
    gate.wait(10)
    return x


@jobs.register
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        time.sleep(0.01)


class Running:
    """A worker running on a thread; its report once stopped."""

    def __init__(self, worker: RedisWorker) -> None:
        self.worker = worker
        self.report: WorkerReport | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.report = self.worker.run()
        except BaseException as exc:  # the test asserts on it
            self.error = exc

    def stop(self) -> WorkerReport:
        self.worker.stop()
        self._thread.join(15)
        assert not self._thread.is_alive()
        assert self.error is None, self.error
        assert self.report is not None
        return self.report


@contextmanager
def workers(broker: MemoryBroker, *names: str, **options: Any) -> Iterator[list[Running]]:
    started = [
        Running(
            RedisWorker(
                transport=MemoryTransport(broker, queue=QUEUE, consumer=name),
                registry=jobs,
                heartbeat=0.05,
                **options,
            )
        )
        for name in names
    ]
    try:
        wait_for(lambda: len(broker.members(keys().workers)) >= len(names))
        yield started
    finally:
        for running in started:
            if running.report is None:
                running.stop()


def keys() -> Any:
    return MemoryTransport(MemoryBroker(), queue=QUEUE).keys


def dispatcher(broker: MemoryBroker, **options: Any) -> RedisDispatcher:
    return RedisDispatcher(transport=MemoryTransport(broker, queue=QUEUE), **options)


@pytest.fixture(autouse=True)
def _clear_runs() -> None:
    runs.clear()
    gate.clear()


def test_both_transports_implement_the_protocol() -> None:
    from dispatchkit.transports.redis import RedisTransport

    memory: Transport = MemoryTransport(MemoryBroker(), queue=QUEUE)
    redis: Transport = RedisTransport("redis://127.0.0.1:1/0", queue=QUEUE)  # never connects
    protocol = {name for name in dir(Transport) if not name.startswith("_")}
    assert protocol <= set(dir(memory))
    assert protocol <= set(dir(redis))
    redis.close()


def test_submit_and_map_with_chunks_run_on_a_worker_without_a_server() -> None:
    broker = MemoryBroker()
    with workers(broker, "w1", concurrency=2), dispatcher(broker) as d:
        assert d.submit(square, 7).result(timeout=10) == 49
        assert list(d.map(square, range(12), chunk=5)) == [x * x for x in range(12)]
        with pytest.raises(RemoteJobError) as info:
            list(d.map(square, range(20), chunk=4))
        assert info.value.type_name.endswith("ValueError")
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "unlucky" in str(info.value.__cause__)


def test_round_robin_spreads_jobs_over_every_registered_worker() -> None:
    broker = MemoryBroker()
    with workers(broker, "w1", "w2") as (w1, w2):
        with dispatcher(broker, strategy="round_robin") as d:
            handles = [d.submit(square, i) for i in range(40) if i != 13]
            assert [h.result(timeout=10) for h in handles] == [i * i for i in range(40) if i != 13]
        assert sorted([w1.stop().succeeded, w2.stop().succeeded]) == [19, 20]


def test_key_order_holds_while_a_worker_leaves_and_its_partitions_move() -> None:
    broker = MemoryBroker()
    with (
        workers(broker, "w1", "w2", partitions=4, concurrency=4) as (w1, _),
        dispatcher(broker, strategy="key", partitions=4) as d,
    ):
        handles = []
        for i in range(120):
            key = f"k{i % 6}"
            handles.append(d.submit_job(Job(record, (key, i, 0.001), key=key)))
            if i == 40:
                w1.worker.stop()  # leaves mid-run: its partitions go to w2
        assert [h.result(timeout=15) for h in handles] == list(range(120))
    by_key: dict[str, list[int]] = {}
    for key, value in runs:
        by_key.setdefault(key, []).append(value)
    assert all(values == sorted(values) for values in by_key.values())
    assert sorted(v for values in by_key.values() for v in values) == list(range(120))


def _held_by_a_dead_consumer(broker: MemoryBroker, d: RedisDispatcher, count: int) -> list[Any]:
    """Publish ``count`` jobs, let a consumer take them and fall silent: it looks dead."""
    ghost = MemoryTransport(broker, queue=QUEUE, consumer="ghost")
    ghost.open_stream(ghost.keys.pull)
    ghost.register("ghost", ghost.keys.worker_stream("ghost"))
    handles = [d.submit(square, i) for i in range(count)]
    wait_for(lambda: broker.stream_length(ghost.keys.pull) == count)
    assert len(ghost.fetch([ghost.keys.pull], count, 0.1)) == count
    return handles


def test_a_dead_consumers_entries_are_claimed_and_run_again() -> None:
    clock = ManualClock()
    broker = MemoryBroker(clock=clock)
    with dispatcher(broker) as d:
        handles = _held_by_a_dead_consumer(broker, d, 5)
        clock.advance(30)  # silent past dead_after; its entries younger than visibility_timeout
        with workers(broker, "w1") as (w1,):
            assert [h.result(timeout=10) for h in handles] == [i * i for i in range(5)]
            assert [h.attempts for h in handles] == [2] * 5  # the second delivery ran
            wait_for(lambda: "ghost" not in broker.members(keys().workers))
            report = w1.stop()
    assert (report.claimed, report.succeeded) == (5, 5)


def test_past_max_attempts_a_claimed_entry_is_dead_lettered_and_fails_with_worker_lost() -> None:
    clock = ManualClock()
    broker = MemoryBroker(clock=clock)
    with dispatcher(broker) as d:
        handles = _held_by_a_dead_consumer(broker, d, 3)
        clock.advance(30)
        with workers(broker, "w1", max_attempts=1) as (w1,):
            for handle in handles:
                with pytest.raises(WorkerLost, match="delivered 2 times"):
                    handle.result(timeout=10)
            assert w1.stop().dead_lettered == 3
    dead = broker.dead_letters(keys())
    assert [(letter.attempts, "max_attempts=1" in letter.error) for letter in dead] == [
        (2, True)
    ] * 3


def test_a_live_consumers_entries_are_left_alone_until_the_visibility_timeout() -> None:
    clock = ManualClock()
    broker = MemoryBroker(clock=clock)
    with dispatcher(broker) as d:
        handles = _held_by_a_dead_consumer(broker, d, 2)
        ghost = MemoryTransport(broker, queue=QUEUE, consumer="ghost")
        with workers(broker, "w1", dead_after=1000, visibility_timeout=30) as (w1,):
            time.sleep(0.3)  # several heartbeats: the ghost is alive, its entries are young
            assert not any(h.done() for h in handles)
            ghost.heartbeat("ghost", draining=False, dead_after=1000)
            clock.advance(31)  # idle past the visibility timeout, though the ghost lives
            assert [h.result(timeout=10) for h in handles] == [0, 1]
            assert w1.stop().claimed == 2


def test_an_entry_that_is_not_a_job_is_dead_lettered_and_the_worker_goes_on() -> None:
    broker = MemoryBroker()
    producer = MemoryTransport(broker, queue=QUEUE)
    with workers(broker, "w1"), dispatcher(broker) as d:
        producer.put([(producer.keys.pull, b"\xc1 not msgpack")])
        assert d.submit(square, 3).result(timeout=10) == 9
        wait_for(lambda: len(broker.dead_letters(producer.keys)) == 1)
    assert broker.stream_length(producer.keys.pull) == 0


class Anyone(Strategy):
    """A strategy of one's own that shares one queue: declared, not probed."""

    name = "anyone"
    shared = True

    def assign(self, seq: int, key: Hashable, workers: int) -> int:
        return SHARED


class Lanes(Strategy):
    """A strategy of one's own that places by key."""

    name = "lanes"
    needs_key = True

    def assign(self, seq: int, key: Hashable, workers: int) -> int:
        return stable_hash(key) % workers


def test_a_strategy_of_ones_own_is_routed_by_what_it_declares() -> None:
    broker = MemoryBroker()
    names = keys()
    with dispatcher(broker, strategy=Anyone(), worker_wait=0) as d:
        handles = [d.submit(square, i) for i in range(3)]
        wait_for(lambda: broker.stream_length(names.pull) == 3)  # no worker needed
        assert not any(h.done() for h in handles)
        d.shutdown(wait=False)
    with dispatcher(broker, strategy=Lanes(), partitions=4, worker_wait=0) as d:
        with pytest.raises(TypeError, match="job key"):
            d.submit_job(Job(square, (1,), key=1.5))  # checked at once, as with "key"
        for key in ("a", "b", "c", "a"):
            d.submit_job(Job(square, (1,), key=key))
        expected: dict[int, int] = {}
        for key in ("a", "b", "c", "a"):
            index = stable_hash(key) % 4
            expected[index] = expected.get(index, 0) + 1
        wait_for(
            lambda: all(broker.stream_length(names.partition(i)) == n for i, n in expected.items())
        )
        d.shutdown(wait=False)


NO_WAIT = RetryPolicy(max_attempts=3, backoff=0, jitter=0)


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_jobs_retry_policy_travels_to_the_worker(executor: str, tmp_path: Path) -> None:
    broker = MemoryBroker()
    with workers(broker, "w1", executor=executor), dispatcher(broker) as d:
        again = d.submit_job(Job(fail_until, (str(tmp_path / "a"), 2), retry=NO_WAIT))
        assert again.result(timeout=20) == 3
        assert again.attempts == 3
        other = RetryPolicy(max_attempts=3, backoff=0, retry_on=(KeyError,))
        once = d.submit_job(Job(fail_until, (str(tmp_path / "b"), 2), retry=other))
        with pytest.raises(RemoteJobError, match="ConnectionError"):
            once.result(timeout=20)
        assert once.attempts == 1  # not an error the policy retries
        plain = d.submit_job(Job(fail_until, (str(tmp_path / "c"), 1)))
        with pytest.raises(RemoteJobError, match="call 1 fails"):
            plain.result(timeout=20)


@pytest.mark.parametrize("executor", ["async", "process"])
def test_a_jobs_timeout_travels_to_the_worker_and_stops_the_job(executor: str) -> None:
    broker = MemoryBroker()
    fn, quick = (nap, (0.01,)) if executor == "async" else (sleep_then, (0.01, 0.01))
    with workers(broker, "w1", executor=executor), dispatcher(broker) as d:
        overrun = d.submit_job(Job(fn, (10,), timeout=0.3))
        with pytest.raises(TimedOut, match=r"timeout of 0\.3 s"):
            overrun.result(timeout=20)
        assert d.submit_job(Job(fn, quick, timeout=10)).result(timeout=20) == 0.01


def test_a_thread_worker_fails_a_job_with_a_timeout_saying_why() -> None:
    broker = MemoryBroker()
    with workers(broker, "w1"), dispatcher(broker) as d:
        handle = d.submit_job(Job(sleep_then, (0.01,), timeout=5))
        with pytest.raises(RemoteJobError, match="--executor process or async"):
            handle.result(timeout=10)


def test_the_remote_side_runs_over_memory_without_redis_py_installed() -> None:
    # sys.modules["redis"] = None makes "import redis" fail as if it were not installed.
    code = """
import sys
sys.modules["redis"] = None
import threading
from dispatchkit.registry import Registry
from dispatchkit.remote import RedisDispatcher, RedisWorker
from dispatchkit.transports.memory import MemoryBroker, MemoryTransport

jobs = Registry()
double = jobs.register(lambda x: 2 * x, "double")
broker = MemoryBroker()
worker = RedisWorker(
    transport=MemoryTransport(broker, queue="q", consumer="w1"), registry=jobs, heartbeat=0.05
)
thread = threading.Thread(target=worker.run)
thread.start()
with RedisDispatcher(transport=MemoryTransport(broker, queue="q")) as d:
    print(d.submit("double", 21).result(timeout=10))
worker.stop()
thread.join(10)
print("redis" in sys.modules and sys.modules["redis"] is None)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["42", "True"]


def test_chunks_queued_before_the_workers_start_are_shared_by_every_worker() -> None:
    # Six entries of two jobs wait before any worker starts; three workers of two
    # slots start one after another, each while the jobs of the ones before still
    # run. A worker holds what it can start soon: an entry per slot until it has
    # measured how long entries take. (Holding twice its slots, the first took
    # four, the second the last two, and the third ran nothing.)
    broker = MemoryBroker()
    stream = keys().pull
    with dispatcher(broker) as d:
        assert d.dispatch(gated, range(12), chunk=2) == 12
        wait_for(lambda: broker.stream_length(stream) == 6)
        started: list[Running] = []
        try:
            for name in ("w1", "w2", "w3"):
                left = broker.undelivered(stream)
                started.append(
                    Running(
                        RedisWorker(
                            transport=MemoryTransport(broker, queue=QUEUE, consumer=name),
                            registry=jobs,
                            heartbeat=0.05,
                            concurrency=2,
                        )
                    )
                )

                # Its first fetch taken (or, if none was left for it, registered).
                def fetched(left: int = left, count: int = len(started)) -> bool:
                    if left == 0:
                        return len(broker.members(keys().workers)) == count
                    return broker.undelivered(stream) < left

                wait_for(fetched)
            gate.set()
            assert d.join(15)
        finally:
            gate.set()
            reports = [running.stop() for running in started]
    assert sum(r.succeeded for r in reports) == 12
    assert all(r.succeeded > 0 for r in reports), [r.succeeded for r in reports]
