"""The pieces under the service: ``Dispatcher.offer``, the segment sink, request decoding."""

from __future__ import annotations

import inspect
import logging
import shutil
import threading
import warnings
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatchkit import ClosedError, Dispatcher
from dispatchkit.service.config import ServeConfig
from dispatchkit.service.handler import HandlerJob
from dispatchkit.service.metrics import ServiceMetrics
from dispatchkit.service.payloads import BadRequest, decode_request
from dispatchkit.service.server import choose_executor
from dispatchkit.service.sink import BATCH_BYTES, SegmentSink, read_lines
from tests import serve_handlers


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


def test_sink_batches_rotates_and_flushes_on_close(tmp_path: Path) -> None:
    sink = SegmentSink(tmp_path, segment_bytes=100, fsync_interval=60)
    lines = [b'{"n":%d,"pad":"0123456789"}' % n for n in range(20)]
    for line in lines[:10]:
        sink.append(line)
    assert read_lines(tmp_path) == []  # batched in memory until a flush
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
        # A full batch each: every append writes, and every write fills a segment.
        sink.append(b'{"n":%d,"pad":"%s"}' % (n, b"x" * BATCH_BYTES))
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
    big = b'{"pad":"%s"}' % (b"x" * BATCH_BYTES)
    with caplog.at_level(logging.CRITICAL, logger="dispatchkit.service.sink"):
        sink.append(big)  # written; the rotation fails, is logged, and waits
        sink.append(big)  # written to the same segment, no new attempt yet
    assert "cannot start a new segment" in caplog.text
    assert sink._fd == current  # still the segment in use, not queued for closing
    assert sink.lines_written == 2
    sink.flush()  # fsyncs go on meanwhile
    sink.close()
    assert open_descriptors() == before  # nothing leaked, nothing closed twice
    with pytest.raises(OSError, match="closed"):
        sink.append(b"{}")


def test_sink_flushes_on_its_interval(tmp_path: Path) -> None:
    sink = SegmentSink(tmp_path, segment_bytes=1 << 20, fsync_interval=0.05)
    try:
        sink.append(b"{}")
        for _ in range(200):
            if read_lines(tmp_path):
                break
            threading.Event().wait(0.01)
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
    ("body", "status"),
    [
        (b"{", 400),
        (b"null", 422),
        (b'{"version":"1","token":"t","request_id":"r","payloads":["x"]}', 422),
        # Payloads are stored as sent: they must be valid UTF-8 (the sink holds text).
        (b'{"version":"1","token":"t","request_id":"r","payloads":[{"a":"\xff"}]}', 400),
        (b'{"version":"1","token":"t","request_id":"\xff","payloads":[{}]}', 400),
        # Too deep for the decoder: a client error, not a crash.
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
