"""What a remote worker loads: none of the dispatchers it does not run, nor other commands."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("msgpack", reason="the remote worker needs dispatchkit[redis]")

from dispatchkit.remote import RedisDispatcher
from tests import redis_test_jobs as jobs
from tests.redis_support import QUEUE, client, namespace, redis_url, workers

__all__ = ["client", "namespace", "redis_url", "workers"]  # fixtures, imported for pytest

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

#: What ``import dispatchkit`` leaves until a name of it is used: a worker makes no
#: settings, picks no strategy and keeps no dispatcher stats.
LAZY_IN_THE_PACKAGE = (
    "dispatchkit.settings",
    "dispatchkit.strategies",
    "dispatchkit.stats",
)

#: What ``dispatchkit worker`` does not load before its first job either: the other
#: commands, the local dispatchers' core and thread pool, and the other extras.
NOT_BEFORE_THE_FIRST_JOB = (
    *DISPATCHER_ONLY,
    *LAZY_IN_THE_PACKAGE,
    "dispatchkit.cli.run",
    "dispatchkit.cli.bench",
    "dispatchkit.cli.serve",
    "dispatchkit.demo",
    "dispatchkit.bench",
    "dispatchkit.service",
    "dispatchkit.core.frontend",
    "dispatchkit.core.placement",
    "dispatchkit.core.ledger",
    "dispatchkit.core.window",
    "dispatchkit.core.adaptive",
    "dispatchkit.executors.thread",
    "dispatchkit._inbox",
    "dispatchkit._work",
    "rich",
    "msgspec",
    "matplotlib",
    "granian",
    "prometheus_client",
)

#: The commands, and the module of each.
COMMAND_NAMES = ("run", "worker", "bench", "serve")
COMMAND_MODULES = tuple(f"dispatchkit.cli.{name}" for name in COMMAND_NAMES)


def _loaded_after(code: str, among: tuple[str, ...] = DISPATCHER_ONLY) -> list[str]:
    report = f"print(','.join(m for m in {among!r} if m in sys.modules))"
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


def test_the_worker_command_loads_no_other_command() -> None:
    # `dispatchkit worker` parses its arguments through the whole CLI: the other
    # commands' modules (run's demo among them) must not load, nor start dispatchers.
    code = (
        "import dispatchkit.cli\n"
        "from dispatchkit.cli.common import drain_timeout\n"
        "argv = ['worker', '--redis', 'redis://x']\n"
        "drain_timeout(dispatchkit.cli._build_parser(argv).parse_args(argv))\n"
    )
    assert _loaded_after(code, NOT_BEFORE_THE_FIRST_JOB + COMMAND_MODULES) == [
        "dispatchkit.cli.worker"
    ]


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_a_command_loads_only_its_own_module(name: str) -> None:
    code = (
        "import contextlib, io, dispatchkit.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    dispatchkit.cli.main([{name!r}, '--help'])\n"
    )
    assert _loaded_after(code, COMMAND_MODULES) == [f"dispatchkit.cli.{name}"]


def test_the_top_level_help_lists_every_command_and_loads_none() -> None:
    from dispatchkit.cli.commands import COMMANDS

    assert tuple(COMMANDS) == COMMAND_NAMES
    code = (
        "import contextlib, io, dispatchkit.cli\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    dispatchkit.cli.main(['--help'])\n"
        "print(' '.join(out.getvalue().split()))\n"
    )
    probe = f"{code}import sys\nprint(','.join(m for m in {COMMAND_MODULES!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    help_text, loaded = out.stdout.split("\n")[:2]
    assert loaded == ""
    for name, summary in COMMANDS.items():
        assert f"{name} {summary}" in help_text


@pytest.mark.redis
@pytest.mark.timeout(60)
@pytest.mark.parametrize("executor", ["thread", "async"])
def test_a_worker_runs_its_first_job_with_none_of_the_rest_loaded(
    redis_url: str, namespace: str, workers: object, executor: str
) -> None:
    # The process kind runs a local process Dispatcher by design: not checked here.
    workers.start("--executor", executor)  # type: ignore[attr-defined]
    with RedisDispatcher(redis_url, QUEUE, namespace=namespace) as d:
        loaded = set(d.submit(jobs.modules).result(timeout=30))
    assert "dispatchkit.remote.worker" in loaded  # the probe ran in a worker
    assert sorted(loaded & set(NOT_BEFORE_THE_FIRST_JOB)) == []


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


def test_importing_the_package_loads_no_settings_strategies_or_stats() -> None:
    assert _loaded_after("import dispatchkit", LAZY_IN_THE_PACKAGE) == []


def test_the_package_gives_its_lazy_names_when_used() -> None:
    code = (
        "import dispatchkit\n"
        "assert dispatchkit.Settings.__name__ == 'Settings'\n"
        "assert dispatchkit.parse_strategy('pull').name == 'pull'\n"
        "from dispatchkit import *\n"
        "assert WorkerStats.__module__ == 'dispatchkit.stats'\n"
    )
    assert _loaded_after(code, LAZY_IN_THE_PACKAGE) == list(LAZY_IN_THE_PACKAGE)


def test_the_package_still_gives_the_modules_it_used_to_load_as_attributes() -> None:
    code = (
        "import dispatchkit\n"
        "assert dispatchkit.strategies.Strategy is dispatchkit.Strategy\n"
        "assert dispatchkit.settings.Settings is dispatchkit.Settings\n"
        "assert dispatchkit.stats.WorkerStats is dispatchkit.WorkerStats\n"
        "assert dispatchkit.executors.__name__ == 'dispatchkit.executors'\n"
        "assert {'Dispatcher', 'strategies', 'settings'} <= set(dir(dispatchkit))\n"
    )
    assert _loaded_after(code, LAZY_IN_THE_PACKAGE) == list(LAZY_IN_THE_PACKAGE)


def test_the_lazy_packages_give_every_name_they_export() -> None:
    code = (
        "import dispatchkit.core, dispatchkit.executors\n"
        "for package in (dispatchkit.core, dispatchkit.executors):\n"
        "    for name in package.__all__:\n"
        "        getattr(package, name)\n"
        "from dispatchkit.core import *\n"
        "from dispatchkit.executors import *\n"
    )
    assert _loaded_after(code, ("dispatchkit.core.frontend", "dispatchkit.executors.thread")) == [
        "dispatchkit.core.frontend",
        "dispatchkit.executors.thread",
    ]


@pytest.mark.redis
def test_a_transports_connections_do_not_look_up_the_redis_py_version(
    redis_url: str, namespace: str
) -> None:
    # redis-py would read the installed distributions' files for its own version on
    # every connection it opens: a few ms of each worker's start.
    code = (
        "import importlib.metadata as metadata\n"
        "looked_up = []\n"
        "real = metadata.version\n"
        "metadata.version = lambda name: looked_up.append(name) or real(name)\n"
        "from dispatchkit.transports.redis import RedisTransport\n"
        f"t = RedisTransport({redis_url!r}, queue='q', namespace={namespace!r}, consumer='c')\n"
        "t.ping()\n"  # the pool's first connection
        "t.close()\n"
        "print(','.join(looked_up))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
