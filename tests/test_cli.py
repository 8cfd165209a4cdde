"""The command line, end to end, in a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.signals import CLI_TAKING_SIGINT

CLI = [sys.executable, "-m", "dispatchkit"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_run_json_reports_every_strategy_and_chunk() -> None:
    result = run_cli("run", "--jobs", "5000", "--workers", "4", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["strategy"], r["chunk"]) for r in rows] == [
        ("batch", 1),
        ("batch", 312),
        ("round_robin", 1),
        ("round_robin", 312),
        ("pull", 1),
        ("pull", 312),
    ]
    for row in rows:
        assert {"strategy", "chunk", "jobs", "completed", "failed", "seconds"} <= row.keys()
        assert row["jobs"] == row["completed"] == 5000
        assert row["failed"] == 0
        assert row["seconds"] > 0


def test_run_table_names_the_fastest() -> None:
    result = run_cli(
        "run",
        "--jobs",
        "2000",
        "--workers",
        "3",
        "--strategy",
        "pull,batch",
        "--chunk",
        "1,50",
        env={"COLUMNS": "160"},
    )
    assert result.returncode == 0, result.stderr
    assert "first-start spread" in result.stdout
    assert "Fastest here:" in result.stdout
    assert "faster than the next best" in result.stdout
    for name in ("pull", "batch"):
        assert name in result.stdout


def test_env_settings_are_used(tmp_path: object) -> None:
    result = run_cli(
        "run",
        "--jobs",
        "300",
        "--strategy",
        "batch",
        "--chunk",
        "1",
        "--json",
        env={"DISPATCHKIT_WORKERS": "3", "DISPATCHKIT_BLOCK": "7"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["workers"] == 3


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["run", "--workers", "0"], {}, "--workers must be between 1"),
        (["run", "--workers", "-2"], {}, "--workers must be between 1"),
        (["run", "--workers", "many"], {}, "--workers must be a whole number"),
        (["run", "--jobs", "0"], {}, "--jobs must be between 1"),
        (["run", "--chunk", "0"], {}, "--chunk must be between 1"),
        (["run", "--strategy", "fifo"], {}, "unknown strategy 'fifo'"),
        (["run", "--queue-size", "x"], {}, "--queue-size must be a whole number"),
        (["run"], {"DISPATCHKIT_WORKERS": "zero"}, "DISPATCHKIT_WORKERS='zero' is not valid"),
        (["run"], {"DISPATCHKIT_QUEUE_SIZE": "-5"}, "DISPATCHKIT_QUEUE_SIZE='-5' is not valid"),
        (["run", "--bogus"], {}, "unrecognized arguments: --bogus"),
        (["frobnicate"], {}, "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_help_explains_the_strategies() -> None:
    result = run_cli("run", "--help")
    assert result.returncode == 0
    for word in ("batch", "round_robin", "pull", "DISPATCHKIT_WORKERS", "--json"):
        assert word in result.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_cancels_queued_jobs_and_says_so(sig: signal.Signals) -> None:
    process = subprocess.Popen(
        [
            *CLI_TAKING_SIGINT,
            "run",
            "--jobs",
            "50000000",
            "--strategy",
            "round_robin",
            "--chunk",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Wait until the run is under way: its 20 worker threads exist.
    deadline = time.monotonic() + 60
    while len(os.listdir(f"/proc/{process.pid}/task")) <= 20:
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(sig)
    _stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted:" in stderr
    assert "cancelled" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("executor", ["process", "async"])
def test_run_with_other_executors(executor: str) -> None:
    result = run_cli(
        "run",
        "--jobs",
        "3000",
        "--workers",
        "2",
        "--executor",
        executor,
        "--strategy",
        "pull,round_robin",
        "--chunk",
        "100",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {row["executor"] for row in rows} == {executor}
    assert all(row["completed"] == 3000 for row in rows)


def test_unknown_executor_is_one_line() -> None:
    result = run_cli("run", "--executor", "gpu")
    assert result.returncode == 2
    assert "invalid choice: 'gpu'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
