"""Without a Redis server the Redis tests skip with a reason, except in CI, where they fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _run_transport_tests(ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["DISPATCHKIT_TEST_REDIS"] = "redis://127.0.0.1:1/0"  # nothing listens there
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            str(TESTS / "test_redis_transport.py"),
            "-k",
            "put_fetch",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        cwd=TESTS.parent,
    )


def test_redis_tests_skip_with_a_reason_without_a_server() -> None:
    result = _run_transport_tests(ci=False)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
    assert "no Redis server at redis://127.0.0.1:1/0" in result.stdout


def test_redis_tests_fail_in_ci_without_a_server() -> None:
    result = _run_transport_tests(ci=True)
    assert result.returncode != 0
    assert "no Redis server at redis://127.0.0.1:1/0" in result.stdout
