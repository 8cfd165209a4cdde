"""`dispatchkit bench` end to end, in a real subprocess, with tiny job counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "dispatchkit", "bench"]

USER_MODULE = textwrap.dedent(
    """
    import asyncio

    NOT_CALLABLE = 42

    def double(x):
        return x * 2

    def shout(item):
        return item["word"].upper()

    def fails_on_odd(x):
        if x % 2:
            raise ValueError(x)
        return x

    async def adouble(x):
        await asyncio.sleep(0)
        return x * 2
    """
)


@pytest.fixture
def user_module(tmp_path: Path) -> Path:
    (tmp_path / "benchme_jobs.py").write_text(USER_MODULE)
    return tmp_path


def run_bench(
    *args: str, cwd: Path | None = None, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd, check=False
    )


def test_a_small_bench_writes_results_and_charts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_bench(
        "--workload", "io,noop", "--jobs", "40", "--repeat", "2", "--workers", "2,4",
        "--strategies", "batch,pull", "--chunk", "1,8", "--out", str(out), "--report",
        "--executor", "thread",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "io: " in result.stdout
    assert "p50/p95/p99" in result.stdout
    data = json.loads((out / "results.json").read_text())
    assert {"cpu_count", "python", "platform"} <= data["machine"].keys()
    assert data["command"].startswith("dispatchkit bench --workload io,noop")
    # 2 workloads x 2 worker counts x (2 strategies x 2 chunks + the defaults),
    # 2 raw repeats each.
    assert len(data["configs"]) == 2 * 2 * (2 * 2 + 1)
    for config in data["configs"]:
        assert len(config["repeats"]) == 2
        assert config["repeats"][0]["jobs"] == 40
        assert {"latency_p95", "idle_before_first", "imbalance", "voluntary_switches"} <= (
            config["repeats"][0].keys()
        )
    assert len(data["verdicts"]) == 2
    assert [line.split(":")[0] for line in data["defaults"]] == ["io", "noop"]
    for chart in ("throughput.png", "latency.png", "timeline.png"):
        assert (out / chart).read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "![timeline](timeline.png)" in report
    assert data["command"] in report


def test_json_output_and_a_recommendation_for_the_users_function(
    user_module: Path, tmp_path: Path
) -> None:
    result = run_bench(
        "--workload", "benchme_jobs:double", "--inputs", "range:30", "--repeat", "1",
        "--workers", "2", "--chunk", "1", "--json", "--no-charts", "--out", str(tmp_path / "o"),
        pythonpath=user_module,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["workloads"]["benchme_jobs:double"]["jobs"] == 30
    [line] = data["recommendations"]
    assert line.startswith("Recommendation for benchme_jobs:double: strategy=")
    assert "thread workers, workers=2" in line
    assert "The defaults " in line  # within 5% of the best, or how far behind


def test_the_console_script_finds_a_module_in_the_current_directory(user_module: Path) -> None:
    script = Path(sys.executable).with_name("dispatchkit")
    result = subprocess.run(
        [str(script), "bench", "--workload", "benchme_jobs:double", "--jobs", "10",
         "--repeat", "1", "--strategies", "pull", "--chunk", "1", "--json", "--no-charts",
         "--out", "o"],
        capture_output=True, text=True, timeout=120, cwd=user_module, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_peers_run_the_users_function_in_worker_processes(
    user_module: Path, tmp_path: Path
) -> None:
    result = run_bench(
        "--workload", "benchme_jobs:double", "--jobs", "12", "--repeat", "1", "--workers", "2",
        "--strategies", "pull", "--chunk", "1", "--peers", "--json", "--no-charts",
        "--out", str(tmp_path / "o"), pythonpath=user_module,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    labels = {c["config"]["executor"] for c in json.loads(result.stdout)["configs"]}
    assert {"ProcessPoolExecutor", "multiprocessing.Pool", "ThreadPoolExecutor"} <= labels
    assert "asyncio" not in labels  # a sync function has no asyncio peer


def test_json_lines_inputs(user_module: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"word": "a"}\n\n{"word": "b"}\n{"word": "c"}\n')
    result = run_bench(
        "--workload", "benchme_jobs:shout", "--inputs", str(inputs), "--repeat", "1",
        "--strategies", "key,pull", "--chunk", "1", "--json", "--no-charts",
        "--out", str(tmp_path / "o"),
        pythonpath=user_module,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["workloads"]["benchme_jobs:shout"]["jobs"] == 3


def test_failing_jobs_give_exit_1(user_module: Path, tmp_path: Path) -> None:
    result = run_bench(
        "--workload", "benchme_jobs:fails_on_odd", "--jobs", "10", "--repeat", "1",
        "--strategies", "pull", "--chunk", "1", "--json", "--no-charts",
        "--out", str(tmp_path / "o"),
        pythonpath=user_module,
    )  # fmt: skip
    assert result.returncode == 1
    assert "jobs failed" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workload", "fibonacci"], "unknown workload 'fibonacci'"),
        (["--workload", "no_such_module_xyz:f"], "cannot import module 'no_such_module_xyz'"),
        (["--workload", "benchme_jobs:missing"], "has no attribute 'missing'"),
        (["--workload", "benchme_jobs:NOT_CALLABLE"], "is not callable (it is a int)"),
        (["--workload", "benchme_jobs:adouble", "--executor", "thread"], "nothing to run"),
        (["--workload", "benchme_jobs:double", "--inputs", "range:x"], "expected range:N"),
        (["--workload", "benchme_jobs:double", "--inputs", "nope.jsonl"], "cannot read it"),
        (["--workload", "io", "--inputs", "range:5"], "applies to your own function"),
        (["--workers", "0"], "argument --workers: must be between 1"),
        (["--workers", ","], "argument --workers: needs at least one value"),
        (["--workers", ""], "argument --workers: needs at least one value"),
        (["--chunk", "1,0"], "argument --chunk: must be between 1"),
        (["--strategies", ""], "needs at least one strategy"),
        (["--strategies", "fifo"], "unknown strategy 'fifo'"),
        (["--executor", "gpu"], "argument --executor: unknown value 'gpu'"),
        (["--repeat", "0"], "argument --repeat: must be between 1"),
        (["--jobs", "-1"], "argument --jobs: must be between 1"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    args: list[str], message: str, user_module: Path
) -> None:
    result = run_bench(*args, "--out", "o", cwd=user_module)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_an_out_directory_that_takes_no_file_is_refused_before_any_run(tmp_path: Path) -> None:
    # /proc/self exists and is a directory, but refuses files (root included): the
    # results would be lost after the runs, so nothing runs.
    (tmp_path / "a-file").write_text("")
    for out in (tmp_path / "a-file" / "o", Path("/proc/self")):
        result = run_bench("--workload", "noop", "--quick", "--out", str(out))
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert f"--out {out}: cannot write there: " in line
        assert result.stdout == ""


def test_help_lists_the_workloads_and_flags() -> None:
    result = run_bench("--help")
    assert result.returncode == 0
    for word in ("skewed", "--peers", "--quick", "--report", "package.module:function"):
        assert word in result.stdout
    # --executor auto measures processes on a user's function too, as the help says.
    assert "processes on cpu, mixed and your own function" in " ".join(result.stdout.split())
    # The default job counts it names are the ones a run uses.
    from dispatchkit.bench.workloads import BUILTIN

    help_text = " ".join(result.stdout.split())
    for name, (_, _, jobs, _) in BUILTIN.items():
        assert f"{name} {jobs:,}" in help_text, name


def test_an_unknown_executor_gives_one_line_and_exit_2() -> None:
    result = run_bench("--workload", "noop", "--executor", "gpu", "--out", "o")
    assert result.returncode == 2
    assert "gpu" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
