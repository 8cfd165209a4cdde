"""The command line, end to end, in a real subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.signals import CLI_TAKING_SIGINT

#: A Redis port where nothing listens: a worker that got past its flags exits at once.
NO_REDIS = "redis://127.0.0.1:1/0"

CLI = [sys.executable, "-m", "dispatchkit"]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
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
        ("auto", "auto"),  # the library's defaults: hand-offs sized as it runs
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


def test_the_default_table_has_an_auto_row() -> None:
    result = run_cli("run", "--jobs", "3000", "--workers", "3", env={"COLUMNS": "160"})
    assert result.returncode == 0, result.stderr
    rows = [line.split("│") for line in result.stdout.splitlines() if "│" in line]
    assert [cells[1].strip() for cells in rows] == [
        *["batch"] * 2,
        *["round_robin"] * 2,
        *["pull"] * 2,
        "auto",
    ]
    assert rows[-1][2].strip() == "auto"
    assert rows[-1][4].strip() == "3,000"  # completed


@pytest.mark.parametrize(
    ("chunk", "expected"),
    [
        # even: the fixed share of the job count (5000 / (4 x 4 workers)).
        ("even", [("pull", 312), ("auto", 312)]),
        # auto: the library's chunk="auto": adaptive under auto, one job a hand-off otherwise.
        ("auto", [("pull", 1), ("auto", "auto")]),
        ("1,AUTO,even", [("pull", 1), ("pull", 312), ("auto", 1), ("auto", "auto"), ("auto", 312)]),
    ],
)
def test_chunk_auto_is_the_library_s_and_even_is_a_share_of_the_jobs(
    chunk: str, expected: list[tuple[str, object]]
) -> None:
    result = run_cli(
        "run", "--jobs", "5000", "--workers", "4", "--strategy", "pull,auto", "--chunk", chunk,
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["strategy"], r["chunk"]) for r in rows] == expected
    assert all(r["completed"] == 5000 for r in rows)


def test_the_environment_s_chunk_auto_is_the_library_s() -> None:
    result = run_cli(
        "run", "--jobs", "2000", "--workers", "2", "--strategy", "auto", "--json",
        env={"DISPATCHKIT_CHUNK": "auto"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [(r["strategy"], r["chunk"]) for r in json.loads(result.stdout)] == [("auto", "auto")]


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
        (["run", "--workers", "0"], {}, "argument --workers: must be between 1"),
        (["run", "--workers", "-2"], {}, "argument --workers: must be between 1"),
        (["run", "--workers", "many"], {}, "argument --workers: must be a whole number"),
        (["run", "--jobs", "0"], {}, "argument --jobs: must be between 1"),
        (["run", "--chunk", "0"], {}, "argument --chunk: must be between 1"),
        (["run", "--chunk", ","], {}, "argument --chunk: needs at least one value"),
        (
            ["run", "--chunk", "1,fast"],
            {},
            "argument --chunk: must be a whole number from 1 to 100,000,000, 'auto' or 'even', "
            "got 'fast'",
        ),
        (["run", "--chunk", "2.5"], {}, "argument --chunk: must be a whole number from 1 to"),
        (["run"], {"DISPATCHKIT_CHUNK": "even"}, "DISPATCHKIT_CHUNK='even' is not valid"),
        (["run", "--strategy", "fifo"], {}, "unknown strategy 'fifo'"),
        (["run", "--queue-size", "x"], {}, "argument --queue-size: must be a whole number"),
        (["run"], {"DISPATCHKIT_WORKERS": "zero"}, "DISPATCHKIT_WORKERS='zero' is not valid"),
        (["run"], {"DISPATCHKIT_QUEUE_SIZE": "-5"}, "DISPATCHKIT_QUEUE_SIZE='-5' is not valid"),
        (["run"], {"DISPATCHKIT_STRATEGY": "fifo"}, "DISPATCHKIT_STRATEGY='fifo' is not valid"),
        (["run"], {"DISPATCHKIT_CHUNK": "0"}, "DISPATCHKIT_CHUNK='0' is not valid"),
        (["run"], {"DISPATCHKIT_PUT_TIMEOUT": "nan"}, "DISPATCHKIT_PUT_TIMEOUT='nan' is not"),
        (
            ["run"],
            {"DISPATCHKIT_EXECUTOR": "process", "DISPATCHKIT_JOB_TIMEOUT": "inf"},
            "DISPATCHKIT_JOB_TIMEOUT='inf' is not valid",
        ),
        (
            ["run", "--job-timeout", "1", "--executor", "async"],
            {},
            "--job-timeout needs --executor process",
        ),
        # Named after the command, whose --help lists its flags.
        (["run", "--bogus"], {}, "dispatchkit run: error: unrecognized arguments: --bogus"),
        (
            ["bench", "--bogus", "x"],
            {},
            "dispatchkit bench: error: unrecognized arguments: --bogus x",
        ),
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
    assert not re.search(r"argument (--[\w-]+): \1", result.stderr), "the flag named twice"
    assert result.stdout == ""


def test_help_explains_the_strategies() -> None:
    result = run_cli("run", "--help")
    assert result.returncode == 0
    for word in ("batch", "round_robin", "pull", "auto", "even", "DISPATCHKIT_WORKERS", "--json"):
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
def test_the_auto_row_runs_on_other_executors(executor: str) -> None:
    result = run_cli(
        "run", "--jobs", "20000", "--workers", "2", "--executor", executor,
        "--strategy", "pull,auto", "--chunk", "even,auto", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["strategy"], r["chunk"]) for r in rows] == [
        ("pull", 2500),
        ("pull", 1),
        ("auto", 2500),
        ("auto", "auto"),
    ]
    assert all((r["executor"], r["completed"], r["failed"]) == (executor, 20000, 0) for r in rows)


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


@pytest.mark.parametrize("executor", ["thread", "async"])
def test_run_runs_the_key_strategy_its_help_lists(executor: str) -> None:
    result = run_cli(
        "run", "--jobs", "3000", "--workers", "3", "--executor", executor,
        "--strategy", "pull,key", "--chunk", "1,100", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["strategy"], r["chunk"]) for r in rows] == [
        ("pull", 1),
        ("pull", 100),
        ("key", 1),
        ("key", 100),
    ]
    assert all((r["completed"], r["failed"]) == (3000, 0) for r in rows)


def test_the_environment_s_key_strategy_runs() -> None:
    result = run_cli("run", "--jobs", "300", "--json", env={"DISPATCHKIT_STRATEGY": "key"})
    assert result.returncode == 0, result.stderr
    assert [(r["strategy"], r["completed"]) for r in json.loads(result.stdout)] == [
        ("key", 300),
        ("key", 300),
    ]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('raise RuntimeError("boom")\n', "'broken_jobs': RuntimeError: boom"),
        ("def f(:\n", "'broken_jobs': SyntaxError: "),
        (None, "'broken_jobs': ModuleNotFoundError: No module named 'broken_jobs'"),
    ],
)
def test_a_worker_s_job_module_that_does_not_import_is_one_line_and_exit_2(
    tmp_path: Path, source: str | None, message: str
) -> None:
    if source is not None:
        (tmp_path / "broken_jobs.py").write_text(source)
    result = subprocess.run(
        [*CLI, "worker", "--redis", NO_REDIS, "--import", "broken_jobs"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"dispatchkit worker: error: cannot import job module {message}")


def test_unknown_executor_is_one_line() -> None:
    result = run_cli("run", "--executor", "gpu")
    assert result.returncode == 2
    assert "invalid choice: 'gpu'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- settings from the environment, read together ----------------------------------


def test_a_job_timeout_from_the_environment_runs_with_process_workers_from_it() -> None:
    result = run_cli(
        "run",
        "--jobs",
        "200",
        "--workers",
        "2",
        "--strategy",
        "pull",
        "--chunk",
        "10",
        "--json",
        env={"DISPATCHKIT_EXECUTOR": "process", "DISPATCHKIT_JOB_TIMEOUT": "1"},
    )
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert (row["executor"], row["completed"], row["failed"]) == ("process", 200, 0)


def test_a_job_timeout_flag_goes_with_process_workers_from_the_environment() -> None:
    result = run_cli(
        "run",
        "--jobs",
        "100",
        "--workers",
        "1",
        "--strategy",
        "round_robin",
        "--chunk",
        "10",
        "--job-timeout",
        "5",
        "--json",
        env={"DISPATCHKIT_EXECUTOR": "process"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["executor"] == "process"


def test_run_takes_its_strategy_and_chunk_from_the_environment() -> None:
    result = run_cli(
        "run",
        "--jobs",
        "300",
        "--json",
        env={"DISPATCHKIT_STRATEGY": "pull", "DISPATCHKIT_CHUNK": "7", "DISPATCHKIT_WORKERS": "3"},
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["strategy"], r["chunk"], r["workers"]) for r in rows] == [("pull", 7, 3)]


def test_flags_win_over_the_environment_which_is_then_not_read() -> None:
    result = run_cli(
        "run",
        "--jobs",
        "300",
        "--workers",
        "2",
        "--strategy",
        "batch,round_robin",
        "--chunk",
        "3",
        "--json",
        env={"DISPATCHKIT_STRATEGY": "fifo", "DISPATCHKIT_CHUNK": "0", "DISPATCHKIT_WORKERS": ""},
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["strategy"], r["chunk"], r["workers"]) for r in rows] == [
        ("batch", 3, 2),
        ("round_robin", 3, 2),
    ]


@pytest.mark.parametrize(
    "variable",
    [
        "DISPATCHKIT_WORKERS",
        "DISPATCHKIT_QUEUE_SIZE",
        "DISPATCHKIT_STRATEGY",
        "DISPATCHKIT_CHUNK",
        "DISPATCHKIT_BLOCK",
        "DISPATCHKIT_PUT_TIMEOUT",
        "DISPATCHKIT_EXECUTOR",
        "DISPATCHKIT_JOB_TIMEOUT",
    ],
)
def test_an_empty_variable_is_refused_by_name(variable: str) -> None:
    result = run_cli("run", "--jobs", "100", "--json", env={variable: ""}, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"dispatchkit run: error: {variable} is empty: unset it")
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {"DISPATCHKIT_TOKEN": ""}, "DISPATCHKIT_TOKEN is empty: unset it"),
        (["--token", ""], {}, "token must not be empty"),
    ],
)
def test_serve_refuses_an_empty_token_rather_than_serving_without_one(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = run_cli(
        "serve", "--sink", str(tmp_path / "sink"), "--port", "0", *args, env=env, timeout=30
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_run_fails_in_one_line_when_the_put_timeout_runs_out() -> None:
    # One worker, a one-job inbox and no wait for room: a hand-off soon finds it full.
    result = run_cli(
        "run",
        "--jobs",
        "200000",
        "--workers",
        "1",
        "--queue-size",
        "1",
        "--strategy",
        "pull",
        "--chunk",
        "1",
        "--put-timeout",
        "0",
        "--json",
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("dispatchkit run: failed: inbox full")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- every duration flag of every command --------------------------------------------

#: (command and the other arguments it needs, duration flag, whether 0 is valid).
#: bench has no duration flag.
DURATION_FLAGS = [
    (["run", "--jobs", "10"], "--put-timeout", True),
    (["run", "--jobs", "10", "--executor", "process"], "--job-timeout", False),
    (["worker", "--redis", NO_REDIS], "--heartbeat", False),
    (["worker", "--redis", NO_REDIS], "--visibility-timeout", False),
    (["worker", "--redis", NO_REDIS], "--unreachable-timeout", False),
    (["serve", "--sink", "{tmp}", "--port", "0"], "--fsync-interval", False),
]


@pytest.mark.parametrize(
    ("base", "flag", "value"),
    [
        (base, flag, value)
        for base, flag, zero_ok in DURATION_FLAGS
        for value in ("nan", "inf", "-1", *(() if zero_ok else ("0",)))
    ],
)
def test_every_duration_flag_refuses_what_is_not_a_finite_number_of_seconds(
    tmp_path: Path, base: list[str], flag: str, value: str
) -> None:
    args = [part.replace("{tmp}", str(tmp_path / "sink")) for part in base]
    result = run_cli(*args, f"{flag}={value}", timeout=30)
    assert result.returncode == 2, result.stderr
    bound = ">= 0" if flag == "--put-timeout" else "> 0"
    assert result.stderr.startswith(
        f"dispatchkit {args[0]}: error: argument {flag}: "
        f"must be a finite number of seconds {bound}, not '{value}'"
    ), result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""
