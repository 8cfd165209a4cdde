"""The job registry: names that remote workers look jobs up by."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dispatchkit.registry import Registry, job, job_name


def test_jobs_register_under_their_qualified_name_or_a_given_one() -> None:
    registry = Registry()

    @job(registry=registry)
    def plain(x: int) -> int:
        return x

    @job("billing.charge", registry=registry)
    def charge(x: int) -> int:
        return -x

    assert (
        job_name(plain)
        == f"{__name__}.test_jobs_register_under_their_qualified_name_or_a_given_one.<locals>.plain"
    )
    assert job_name(charge) == "billing.charge"
    assert registry.get("billing.charge")(2) == -2
    assert registry.names() == sorted([job_name(plain), "billing.charge"])
    assert "billing.charge" in registry
    assert len(registry) == 2


def test_a_name_belongs_to_one_function_and_unknown_names_fail_clearly() -> None:
    registry = Registry()
    registry.register(abs, "n")
    registry.register(abs, "n")  # the same function again is fine
    with pytest.raises(ValueError, match="already registered"):
        registry.register(len, "n")
    with pytest.raises(KeyError, match="no job is registered as 'missing'"):
        registry.get("missing")
    with pytest.raises(ValueError, match="not a registered job"):
        job_name(lambda: None)


def test_registering_jobs_loads_neither_redis_nor_msgpack() -> None:
    # Job modules are imported by submitters that may not have the extra installed.
    code = (
        "import sys, dispatchkit, dispatchkit.registry, dispatchkit.transports\n"
        "print(','.join(m for m in ('redis', 'msgpack') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_without_the_extra_the_worker_says_what_to_install() -> None:
    # sys.modules["redis"] = None makes "import redis" fail as if it were not installed.
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from dispatchkit.cli import main\n"
        "sys.exit(main(['worker', '--redis', 'redis://127.0.0.1:6379/0']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert "install dispatchkit[redis]" in out.stderr
    assert "Traceback" not in out.stderr
