"""What a remote worker loads: none of the dispatchers it does not run."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("msgpack", reason="the remote worker needs dispatchkit[redis]")

#: Modules only a local or remote dispatcher (or the process kind) needs.
DISPATCHER_ONLY = (
    "dispatchkit.dispatcher",
    "dispatchkit.async_dispatcher",
    "dispatchkit._async_front",
    "dispatchkit._async_work",
    "dispatchkit._thread_front",
    "dispatchkit.executors.process",
    "dispatchkit.remote.dispatcher",
    "dispatchkit.remote._bulk",
    "dispatchkit.remote._link",
)


def _loaded_after(code: str) -> list[str]:
    report = f"print(','.join(m for m in {DISPATCHER_ONLY!r} if m in sys.modules))"
    probe = f"import sys\n{code}\n{report}"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_a_thread_worker_loads_no_dispatcher() -> None:
    code = (
        "from dispatchkit.remote import RedisWorker, run_worker, make_runner\n"
        "import dispatchkit.transports.redis\n"
        "make_runner('thread', 2)\n"
    )
    assert _loaded_after(code) == []


def test_the_worker_command_loads_no_dispatcher() -> None:
    # `dispatchkit worker` parses its arguments through the whole CLI: the
    # other commands' modules (run's demo among them) must not start dispatchers.
    code = (
        "import dispatchkit.cli\n"
        "from dispatchkit.cli import worker\n"
        "dispatchkit.cli._build_parser().parse_args(['worker', '--redis', 'redis://x'])\n"
    )
    assert _loaded_after(code) == []


def test_the_names_load_when_used() -> None:
    code = (
        "import dispatchkit, dispatchkit.remote\n"
        "assert dispatchkit.Dispatcher.__name__ == 'Dispatcher'\n"
        "assert dispatchkit.remote.RedisDispatcher.__name__ == 'RedisDispatcher'\n"
        "from dispatchkit import AsyncDispatcher\n"
    )
    loaded = _loaded_after(code)
    assert {"dispatchkit.dispatcher", "dispatchkit.remote.dispatcher"} <= set(loaded)
    assert "dispatchkit.async_dispatcher" in loaded
