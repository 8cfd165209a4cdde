"""The pieces under the service: ``Dispatcher.offer``, the segment sink, request decoding."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import shutil
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from dispatchkit import ClosedError, Dispatcher
from dispatchkit.service.config import DEFAULT_MAX_DEPTH, MAX_MAX_DEPTH, ServeConfig
from dispatchkit.service.group_commit import GroupCommit
from dispatchkit.service.handler import HandlerJob
from dispatchkit.service.metrics import ServiceMetrics
from dispatchkit.service.payloads import BadRequest, decode_batch, decode_request, depth
from dispatchkit.service.preflight import choose_executor
from dispatchkit.service.sink import SegmentSink, SinkClosed, SinkFailure, read_lines
from tests import serve_handlers
from tests.serve_support import fill, mount_tmpfs, unmount


@pytest.mark.parametrize("strategy", ["round_robin", "batch", "pull"])
def test_offer_is_all_or_nothing_and_never_waits(strategy: str) -> None:
    gate = threading.Event()
    seen: list[int] = []
    d = Dispatcher(workers=2, strategy=strategy, queue_size=4)
    try:
        # Block both workers, then fill the inboxes.
        assert d.offer(lambda _: gate.wait(), [0, 0])
        accepted = 0
        while d.offer(seen.append, [1, 2]):
            accepted += 2
            assert accepted < 100, "offer never refused"
        before = d.stats().submitted
        assert not d.offer(seen.append, [3, 4, 5])
        assert d.stats().submitted == before  # a refused offer counts nothing
    finally:
        gate.set()
        d.join()
    assert sorted(seen) == sorted([1, 2] * (accepted // 2))
    stats = d.stats()
    assert stats.submitted == stats.succeeded == accepted + 2


def test_offer_with_chunks_and_keys() -> None:
    seen: list[tuple[str, int]] = []
    with Dispatcher(workers=3, strategy="key", chunk=2, queue_size=8) as d:
        for n in range(10):
            while not d.offer(seen.append, [("a", n), ("b", n)], key=lambda item: item[0]):
                threading.Event().wait(0.001)  # full: retry, as a client does after a 503
    assert [n for k, n in seen if k == "a"] == list(range(10))  # one key stays in order
    assert d.stats().succeeded == 20


def test_offer_counts_failures_and_refuses_after_close() -> None:
    errors: list[BaseException] = []
    d = Dispatcher(workers=1)
    assert d.offer(lambda x: 1 / x, [1, 0], on_error=lambda item, exc: errors.append(exc))
    assert d.offer(print, [])  # nothing to queue
    d.join()
    assert d.stats().failed == 1
    assert isinstance(errors[0], ZeroDivisionError)
    with pytest.raises(ClosedError):
        d.offer(print, [1])
    keyed = Dispatcher(workers=1, strategy="key")
    try:
        with pytest.raises(ValueError, match="key"):
            keyed.offer(print, [1])
    finally:
        keyed.join()


def test_sink_writes_at_once_rotates_and_flushes_on_close(tmp_path: Path) -> None:
    sink = SegmentSink(tmp_path, segment_bytes=100, fsync_interval=60)
    lines = [b'{"n":%d,"pad":"0123456789"}' % n for n in range(20)]
    sink.write(lines[:5])
    for line in lines[5:10]:
        sink.append(line)
    assert read_lines(tmp_path) == lines[:10]  # with the OS before write() returns
    sink.flush()
    for line in lines[10:]:
        sink.append(line)
        sink.flush()
    sink.close()
    sink.close()  # idempotent
    assert read_lines(tmp_path) == lines
    assert len(list(tmp_path.glob("segment-*.ndjson"))) > 2
    assert sink.lines_written == 20
    # A new sink continues the numbering: segments are never rewritten.
    again = SegmentSink(tmp_path, segment_bytes=100, fsync_interval=60)
    again.append(b'{"n":"last"}')
    again.close()
    assert read_lines(tmp_path) == [*lines, b'{"n":"last"}']


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")
def test_sink_closes_full_segments_at_the_next_flush(tmp_path: Path) -> None:
    def open_descriptors() -> int:
        return len(list(Path("/proc/self/fd").iterdir()))

    sink = SegmentSink(tmp_path, segment_bytes=1, fsync_interval=60)
    before = open_descriptors()
    for n in range(40):
        sink.append(b'{"n":%d}' % n)  # every write fills a segment
    # Full segments wait, still open, for the flusher to fsync them...
    assert open_descriptors() == before + 40
    sink.flush()
    # ...which closes them, leaving only the current segment open.
    assert open_descriptors() == before
    sink.close()
    assert open_descriptors() == before - 1
    assert len(read_lines(tmp_path)) == 40


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")
def test_a_segment_that_cannot_be_opened_leaves_the_current_one_in_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def open_descriptors() -> int:
        return len(list(Path("/proc/self/fd").iterdir()))

    before = open_descriptors()
    directory = tmp_path / "segments"
    sink = SegmentSink(directory, segment_bytes=1, fsync_interval=60)
    current = sink._fd
    shutil.rmtree(directory)
    directory.write_text("")  # the next segment cannot be created now
    with caplog.at_level(logging.CRITICAL, logger="dispatchkit.service.sink"):
        sink.append(b"{}")  # written; the rotation fails, is logged, and waits
        sink.append(b"{}")  # written to the same segment, no new attempt yet
    assert "cannot start a new segment" in caplog.text
    assert sink._fd == current  # still the segment in use, not queued for closing
    assert sink.lines_written == 2
    sink.flush()  # fsyncs go on meanwhile
    sink.close()
    assert open_descriptors() == before  # nothing leaked, nothing closed twice
    with pytest.raises(SinkClosed, match="closed"):
        sink.append(b"{}")


@pytest.fixture
def full_tmpfs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A 256 KiB tmpfs with 8 KiB left free, and the filler file that takes the rest."""
    mount = tmp_path / "disk"
    why_not = mount_tmpfs(mount, 256 << 10)
    if why_not is not None:
        pytest.skip(f"needs a real small filesystem: {why_not}")
    filler = mount / "filler"
    fill(filler, leave=8 << 10)
    try:
        yield mount / "sink", filler
    finally:
        unmount(mount)


def test_a_failed_write_is_cut_back_to_the_last_whole_line(
    full_tmpfs: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    directory, filler = full_tmpfs
    sink = SegmentSink(directory, segment_bytes=1 << 20, fsync_interval=60)
    (segment,) = directory.glob("segment-*.ndjson")
    lines = [b'{"n":%d,"pad":"%s"}' % (n, b"x" * 990) for n in range(100)]
    written = 0
    failure: SinkFailure | None = None
    with caplog.at_level(logging.CRITICAL, logger="dispatchkit.service.sink"):
        for line in lines:
            try:
                sink.append(line)
            except SinkFailure as exc:
                failure = exc
                break
            written += 1
    assert "No space left on device" in str(failure)
    assert 0 < written < len(lines)
    assert "write failed" in caplog.text
    # The filesystem takes part of that write (a short write, as the sink saw it):
    # the sink cut it off again, so the segment ends on its last whole line.
    size = segment.stat().st_size
    assert size == written * (len(lines[0]) + 1)
    fd = os.open(segment, os.O_WRONLY | os.O_APPEND)
    try:
        short = os.write(fd, lines[written] + b"\n")
    finally:
        os.ftruncate(fd, size)
        os.close(fd)
    assert 0 < short < len(lines[written]) + 1
    assert sink.failure() is not None
    assert "No space left on device" in (sink.failure() or "")
    with pytest.raises(SinkFailure):
        sink.write(lines[written : written + 2])  # tried again, refused again, cut again
    assert segment.stat().st_size == size
    assert sink.lines_written == written

    filler.unlink()
    assert sink.failure() is None  # room again: healthy before the next write
    sink.write(lines[written : written + 2])
    sink.close()
    assert read_lines(directory) == lines[: written + 2]  # nothing partial, fused or twice
    assert sink.lines_written == written + 2
    assert sink.unstored == 0


def test_lines_whose_fsync_failed_are_counted_and_writes_refused(tmp_path: Path) -> None:
    sink = SegmentSink(tmp_path, segment_bytes=10, fsync_interval=60)
    # The next segment is a device that takes writes but cannot be fsynced.
    (tmp_path / "segment-000002.ndjson").symlink_to("/dev/null")
    sink.write([b'{"n":1}', b'{"n":2}'])  # fills segment 1: the next is opened
    sink.write([b'{"n":3}'])  # into the device
    with pytest.raises(OSError, match="Invalid argument"):
        sink.flush()
    assert sink.unstored == 1  # only the line of the segment whose fsync failed
    assert "sink cannot fsync" in (sink.failure() or "")
    with pytest.raises(SinkFailure, match="cannot be fsynced"):
        sink.write([b'{"n":4}'])
    sink.close()  # never raises: the count says it
    assert sink.unstored == 1
    assert sink.lines_written == 3
    assert read_lines(tmp_path) == [b'{"n":1}', b'{"n":2}']


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")
def test_sink_flushes_on_its_interval(tmp_path: Path) -> None:
    def open_descriptors() -> int:
        return len(list(Path("/proc/self/fd").iterdir()))

    sink = SegmentSink(tmp_path, segment_bytes=1, fsync_interval=0.05)
    try:
        before = open_descriptors()
        sink.append(b"{}")  # fills its segment, which waits open for the flusher
        assert len(list(tmp_path.glob("segment-*.ndjson"))) == 2  # and the next one is open
        for _ in range(200):  # no flush() here: the flusher thread fsyncs and closes it
            if open_descriptors() == before:
                break
            threading.Event().wait(0.01)
        assert open_descriptors() == before
        assert read_lines(tmp_path) == [b"{}"]
    finally:
        sink.close()


def test_payloads_are_kept_as_sent_on_one_line() -> None:
    body = (
        b'{"version":"1","token":"t","request_id":"r",'
        b'"payloads":[{"a":\n [1,\r\n2]}, {"s":"x\\ny"}]}'
    )
    request_id, lines = decode_request(body)
    assert request_id == "r"
    assert lines == [b'{"a":  [1,  2]}', b'{"s":"x\\ny"}']


@pytest.mark.parametrize(
    ("payloads", "lines"),
    [
        (b'{"a":1},{"b":[2]}', [b'{"a":1}', b'{"b":[2]}']),  # one line of ASCII: joined as sent
        (b'{"a":1}, \n {"b":"\xc3\xa9"}', [b'{"a":1}', b'{"b":"\xc3\xa9"}']),  # checked one by one
        (b'{"a":\r\n1}', [b'{"a":  1}']),
    ],
)
def test_a_batch_holds_the_lines_the_sink_writes(payloads: bytes, lines: list[bytes]) -> None:
    body = b'{"version":"1","token":"t","request_id":"r","payloads":[%s]}' % payloads
    batch = decode_batch(body)
    assert (batch.request_id, batch.payload_count) == ("r", len(lines))
    assert batch.data == b"".join(line + b"\n" for line in lines)
    assert batch.lines() == lines


@pytest.mark.parametrize("payloads", [b'{"a":1},[2]', b'{"a":1},{},"x"', b"1,{}"])
def test_a_payload_that_is_no_object_is_named_in_a_body_on_one_line(payloads: bytes) -> None:
    body = b'{"version":"1","token":"t","request_id":"r","payloads":[%s]}' % payloads
    with pytest.raises(BadRequest) as caught:
        decode_batch(body)
    index = next(i for i, p in enumerate(payloads.split(b",")) if not p.startswith(b"{"))
    assert caught.value.status == 422
    assert f"`$.payloads[{index}]` must be an object" in caught.value.message


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{", 400),
        (b"null", 422),
        (b'{"version":"1","token":"t","request_id":"r","payloads":["x"]}', 422),
        # Payloads are stored as sent: they must be valid UTF-8 (the sink holds text).
        (b'{"version":"1","token":"t","request_id":"r","payloads":[{"a":"\xff"}]}', 400),
        (b'{"version":"1","token":"t","request_id":"\xff","payloads":[{}]}', 400),
        # Past --max-depth (64): 400 on every Python, not the decoder's recursion limit.
        (
            b'{"version":"1","token":"t","request_id":"r","payloads":['
            + b'{"a":' * 5000
            + b"1"
            + b"}" * 5000
            + b"]}",
            400,
        ),
    ],
)
def test_decode_errors(body: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as caught:
        decode_request(body)
    assert caught.value.status == status


def nested_body(levels: int, inside: bytes = b"1") -> bytes:
    """A request whose body is ``levels`` deep: its object, ``payloads``, then objects."""
    assert levels >= 3
    payload = b'{"a":' * (levels - 3) + b"{}" + b"}" * (levels - 3)
    return b'{"version":"1","token":"t","request_id":"r","payloads":[%s, %s]}' % (
        payload,
        inside,
    )


@pytest.mark.parametrize("limit", [DEFAULT_MAX_DEPTH, 3, 10, MAX_MAX_DEPTH])
def test_the_nesting_limit_is_the_service_s_own(limit: int) -> None:
    _, lines = decode_request(nested_body(limit, b"{}"), limit)  # at the limit: accepted
    assert len(lines) == 2
    with pytest.raises(BadRequest) as caught:
        decode_request(nested_body(limit + 1, b"{}"), limit)  # one past it: 400
    assert caught.value.status == 400
    assert f"more than {limit} levels" in caught.value.message


def test_the_nesting_limit_counts_brackets_outside_strings_only() -> None:
    strings = b'{"s":"[[[[{{{{","t":"\\"[[[[[","u":"\\\\"}'
    body = nested_body(DEFAULT_MAX_DEPTH, strings)
    assert body.count(b"[") + body.count(b"{") > DEFAULT_MAX_DEPTH  # the cheap count says maybe
    _, lines = decode_request(body)
    assert lines[1] == strings
    assert depth(b'["]"]') == 1
    assert depth(b"]][[[") == 1  # counted from the start, where the decoder reads
    assert depth(b"]" + b"[" * 100) == 99
    assert depth(b"") == 0


#: JSON values nested a few levels, their strings full of brackets and quotes.
_JSON_VALUES = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=40,
)


#: A payload: a JSON object of such values.
_PAYLOAD = st.dictionaries(st.text(max_size=3), _JSON_VALUES, max_size=3)


@given(
    payloads=st.lists(_PAYLOAD, min_size=1, max_size=3),
    extra=st.none() | _JSON_VALUES,
    duplicate=st.none() | st.lists(_PAYLOAD),
    limit=st.integers(min_value=3, max_value=12),
)
def test_the_nesting_limit_is_the_whole_body_s_depth(
    payloads: list[object], extra: object, duplicate: object, limit: int
) -> None:
    # Nesting anywhere counts: in the payloads, in a field the service does not know
    # (which the decoder drops), in a "payloads" key given twice (the last one wins).
    fields = [
        b'"version":"1"',
        b'"token":"t"',
        b'"request_id":"r"',
        b'"payloads":' + msgspec.json.encode(payloads),
    ]
    if extra is not None:
        fields.insert(0, b'"extra":' + msgspec.json.encode(extra))
    if duplicate is not None:
        fields.insert(0, b'"payloads":' + msgspec.json.encode(duplicate))
    body = b"{" + b",".join(fields) + b"}"
    if depth(body) > limit:
        with pytest.raises(BadRequest) as caught:
            decode_batch(body, limit)
        assert (caught.value.status, caught.value.reason) == (400, "too_deep")
    else:
        batch = decode_batch(body, limit)
        assert [msgspec.json.decode(line) for line in batch.lines()] == payloads


def test_nesting_outside_the_payloads_counts_on_every_python() -> None:
    # Deeper than the limit but not than the decoder's own guard: refused by the limit.
    deep = b"[" * 900 + b"]" * 900
    for body in (
        b'{"extra":%s,"version":"1","token":"t","request_id":"r","payloads":[{}]}' % deep,
        b'{"payloads":[%s],"version":"1","token":"t","request_id":"r","payloads":[{}]}' % deep,
        b'{"version":%s,"token":"t","request_id":"r","payloads":[{}]}' % deep[200:-200],
    ):
        with pytest.raises(BadRequest) as caught:
            decode_batch(body)
        assert caught.value.status == 400
        assert f"more than {DEFAULT_MAX_DEPTH} levels" in caught.value.message


def test_lazy_offer_runs_once_woken() -> None:
    ran = threading.Event()
    with Dispatcher(workers=1, queue_size=1024) as d:
        threading.Event().wait(0.05)  # let the worker fall asleep
        assert d.offer(lambda _: ran.set(), [1], wake=False)
        assert not ran.wait(0.1)  # one job is no burst: the worker sleeps on
        assert d.offer(print, [], wake=True)
        assert ran.wait(5)


def test_latency_histogram_renders_cumulative_buckets() -> None:
    with Dispatcher(workers=1) as d:
        metrics = ServiceMetrics(d)
        for seconds in (0.0001, 0.0005, 0.003, 0.02, 5.0):
            metrics.observe_latency(seconds)
        text = metrics.render().decode()
    (family,) = (
        f
        for f in text_string_to_metric_families(text)
        if f.name == "dispatchkit_request_duration_seconds"
    )
    samples = {(s.name.rsplit("_", 1)[1], s.labels.get("le")): s.value for s in family.samples}
    assert samples[("bucket", "0.0005")] == 2  # a bucket counts values up to and including it
    assert samples[("bucket", "0.005")] == 3
    assert samples[("bucket", "1.0")] == 4
    assert samples[("bucket", "+Inf")] == samples[("count", None)] == 5
    assert samples[("sum", None)] == pytest.approx(5.0236)


@pytest.mark.parametrize(
    ("handler", "executor"),
    [
        (None, "async"),
        ("tests.serve_handlers:slow", "thread"),
        ("tests.serve_handlers:slow_async", "async"),
        ("tests.serve_handlers:record_async", "async"),  # an object with async __call__
    ],
)
def test_auto_executor_runs_coroutine_handlers_and_the_sink_on_asyncio(
    tmp_path: Path, handler: str | None, executor: str
) -> None:
    config = ServeConfig(sink=None if handler else tmp_path, handler=handler)
    assert choose_executor(config) == executor


def test_a_handler_returning_a_coroutine_on_a_thread_fails_loudly() -> None:
    job = HandlerJob(serve_handlers.returns_coroutine)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited" either
        with pytest.raises(TypeError, match="--executor async"):
            job(b'{"id": 1}')

    # On an asyncio worker the coroutine is handed back, for the worker to await.
    coroutine = HandlerJob(serve_handlers.returns_coroutine, on_thread=False)(b'{"id": 1}')
    assert inspect.iscoroutine(coroutine)
    coroutine.close()


def test_group_commit_shares_one_flush_among_the_requests_that_arrive_during_one() -> None:
    started = threading.Semaphore(0)
    release = threading.Semaphore(0)
    flushes: list[str] = []
    fail = False

    def flush() -> None:  # runs in the group commit's own thread
        started.release()
        release.acquire()
        flushes.append(threading.current_thread().name)
        if fail:
            raise OSError(5, "Input/output error")

    async def scenario() -> None:
        nonlocal fail
        commit = GroupCommit(flush, lambda: 0)
        first = commit.synced()
        await asyncio.to_thread(started.acquire)  # the first flush is running
        # Written while it runs: they wait for the next flush, all together.
        later = [commit.synced() for _ in range(5)]
        later[0].cancel()  # a request that went away cancels its own wait only
        release.release()
        await first
        assert not any(waiter.done() for waiter in later[1:])
        await asyncio.to_thread(started.acquire)  # the second flush began at once
        fail = True
        release.release()
        results = await asyncio.gather(*later[1:], return_exceptions=True)
        assert all(isinstance(result, OSError) for result in results)
        commit.close()

    asyncio.run(scenario())
    assert len(flushes) == 2  # six requests, two fsyncs
    assert all(name.startswith("sink-fsync") for name in flushes)  # off the event loop


def test_group_commit_starts_the_next_flush_without_waiting_for_the_event_loop() -> None:
    started = threading.Semaphore(0)
    release = threading.Semaphore(0)

    def flush() -> None:
        started.release()
        release.acquire()

    async def scenario() -> None:
        commit = GroupCommit(flush, lambda: 0)
        first = commit.synced()
        await asyncio.to_thread(started.acquire)  # the first flush is running
        second = commit.synced()  # written meanwhile: waits for the next flush
        release.release()
        try:
            # The event loop is held here, running no callback: the next flush
            # must begin all the same, as soon as the first one ended.
            assert started.acquire(timeout=30), "the next flush waited for the event loop"
        finally:
            release.release()  # whatever happened, no flush stays blocked
        await asyncio.gather(first, second)
        commit.close()

    asyncio.run(scenario())


def test_group_commit_writes_each_group_s_lines_in_one_call_off_the_event_loop() -> None:
    started = threading.Semaphore(0)
    release = threading.Semaphore(0)
    writes: list[tuple[str, bytes, int]] = []
    flushes: list[int] = []
    full = False

    def write(data: bytes, lines: int) -> None:
        if full:
            raise SinkFailure("cannot write to the sink: [Errno 28] No space left on device")
        writes.append((threading.current_thread().name, data, lines))

    def flush() -> None:
        flushes.append(len(writes))
        started.release()
        release.acquire()

    async def scenario() -> None:
        nonlocal full
        commit = GroupCommit(flush, lambda: 0, write)
        first = commit.synced(b"1\n", 1)
        await asyncio.to_thread(started.acquire)  # written, and its flush is running
        later = [commit.synced(b"%d\n%d\n" % (n, n), 2) for n in (2, 3, 4)]
        release.release()
        await first
        await asyncio.to_thread(started.acquire)  # the next group's flush
        release.release()
        await asyncio.gather(*later)
        full = True  # the next group's write fails: each of its requests gets the error
        refused = await asyncio.gather(
            commit.synced(b"5\n", 1), commit.synced(b"6\n", 1), return_exceptions=True
        )
        assert all(isinstance(result, SinkFailure) for result in refused)
        commit.close()

    asyncio.run(scenario())
    assert [(data, lines) for _, data, lines in writes] == [(b"1\n", 1), (b"2\n2\n3\n3\n4\n4\n", 6)]
    assert all(name == "sink-fsync" for name, _, _ in writes)  # not the event loop's thread
    assert flushes == [1, 2]  # each after its group's write; none for the failed one


def test_group_commit_answers_no_write_as_stored_if_any_flush_failed_since_it() -> None:
    failed = 0

    def flush() -> None:
        pass  # this one succeeds...

    async def scenario() -> None:
        nonlocal failed
        commit = GroupCommit(flush, lambda: failed)
        before = commit.synced()
        await before  # nothing failed: stored
        failed += 1  # ...but another flush (the flusher thread's) failed meanwhile
        after = commit.synced()
        failed += 1
        with pytest.raises(OSError, match="a flush failed after the write"):
            await after
        await commit.synced()  # written after the failures: stored, no error
        commit.close()

    asyncio.run(scenario())
