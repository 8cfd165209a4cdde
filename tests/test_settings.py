"""Settings from arguments and ``DISPATCHKIT_*`` variables: read together, checked once."""

from __future__ import annotations

import math
import re
import time

import pytest

from dispatchkit import Dispatcher, Settings, TimedOut

#: Every variable of the README's table, with a valid value.
VARIABLES = {
    "DISPATCHKIT_WORKERS": "2",
    "DISPATCHKIT_QUEUE_SIZE": "8",
    "DISPATCHKIT_STRATEGY": "pull",
    "DISPATCHKIT_CHUNK": "4",
    "DISPATCHKIT_BLOCK": "10",
    "DISPATCHKIT_PUT_TIMEOUT": "0.5",
    "DISPATCHKIT_EXECUTOR": "process",
    "DISPATCHKIT_JOB_TIMEOUT": "3",
}

BAD_SECONDS = ["nan", "inf", "-inf", "-1", "1e12", "soon"]


def test_a_job_timeout_from_the_environment_goes_with_process_workers_given_as_argument() -> None:
    settings = Settings.from_env({"DISPATCHKIT_JOB_TIMEOUT": "1"}, executor="process")
    assert (settings.executor, settings.job_timeout) == ("process", 1.0)


def test_every_variable_is_read_and_the_whole_is_checked_once() -> None:
    settings = Settings.from_env(VARIABLES)
    assert (
        settings.workers,
        settings.queue_size,
        settings.resolved_strategy.name,
        settings.chunk,
        settings.block,
        settings.put_timeout,
        settings.executor,
        settings.job_timeout,
    ) == (2, 8, "pull", 4, 10, 0.5, "process", 3.0)


def test_dispatcher_from_env_stops_a_job_past_the_timeout_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISPATCHKIT_JOB_TIMEOUT", "0.5")
    with Dispatcher.from_env(executor="process", workers=1) as dispatcher:
        assert dispatcher.settings.job_timeout == 0.5
        quick = dispatcher.submit(pow, 2, 5)
        slow = dispatcher.submit(time.sleep, 30)
        assert quick.result(timeout=30) == 32
        assert isinstance(slow.exception(timeout=30), TimedOut)


@pytest.mark.parametrize(
    ("environ", "arguments", "message"),
    [
        (
            {"DISPATCHKIT_JOB_TIMEOUT": "1"},
            {},
            "DISPATCHKIT_JOB_TIMEOUT='1' needs process workers, "
            "but executor is 'thread' (the default)",
        ),
        (
            {"DISPATCHKIT_EXECUTOR": "thread"},
            {"job_timeout": 2},
            "job_timeout=2 needs process workers, but DISPATCHKIT_EXECUTOR='thread'",
        ),
        (
            {"DISPATCHKIT_JOB_TIMEOUT": "1", "DISPATCHKIT_EXECUTOR": "process"},
            {"executor": "thread"},
            "DISPATCHKIT_JOB_TIMEOUT='1' needs process workers, but executor='thread'",
        ),
    ],
)
def test_a_combination_that_does_not_go_together_names_where_each_value_came_from(
    environ: dict[str, str], arguments: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        Settings.from_env(environ, **arguments)


def test_an_argument_wins_and_its_variable_is_not_read() -> None:
    settings = Settings.from_env(
        {"DISPATCHKIT_WORKERS": "zero", "DISPATCHKIT_STRATEGY": ""}, workers=3, strategy="batch"
    )
    assert (settings.workers, settings.resolved_strategy.name) == (3, "batch")


@pytest.mark.parametrize("variable", sorted(VARIABLES))
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_variable_is_an_error_naming_it(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"^{variable} is empty: unset it or give "):
        Settings.from_env({**VARIABLES, variable: value})


@pytest.mark.parametrize("variable", ["DISPATCHKIT_PUT_TIMEOUT", "DISPATCHKIT_JOB_TIMEOUT"])
@pytest.mark.parametrize("value", BAD_SECONDS)
def test_a_duration_variable_must_be_a_finite_number_of_seconds(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"^{variable}='{value}' is not valid: expected a finite"):
        Settings.from_env({**VARIABLES, variable: value})


def test_a_job_timeout_of_zero_is_refused_and_a_put_timeout_of_zero_means_no_wait() -> None:
    with pytest.raises(ValueError, match=r"^DISPATCHKIT_JOB_TIMEOUT='0' is not valid"):
        Settings.from_env({**VARIABLES, "DISPATCHKIT_JOB_TIMEOUT": "0"})
    assert Settings.from_env({**VARIABLES, "DISPATCHKIT_PUT_TIMEOUT": "0"}).put_timeout == 0


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0, 1e12])
def test_the_api_refuses_a_duration_that_is_not_finite_and_in_range(value: float) -> None:
    with pytest.raises(ValueError, match=r"^put_timeout must be"):
        Dispatcher(1, put_timeout=value)
    with pytest.raises(ValueError, match=r"^job_timeout must be"):
        Settings(executor="process", job_timeout=value)


def test_a_wrong_chunk_or_executor_says_what_would_do() -> None:
    # run's chunk "even" is not the library's: the message names the string it takes.
    with pytest.raises(TypeError, match=r"^chunk must be an integer or 'auto', not str \('even'\)"):
        Settings(chunk="even")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"thread, process \(asyncio workers: AsyncDispatcher\)$"):
        Dispatcher(1, executor="async")


def test_every_front_end_refuses_a_keyword_it_does_not_take_even_none() -> None:
    # The settings keywords are written once (settings.DispatcherOptions); each
    # constructor still refuses what it does not take, as an explicit signature would.
    from dispatchkit import AsyncDispatcher, Dispatcher
    from dispatchkit.futures import ProcessPoolExecutor, ThreadPoolExecutor

    with pytest.raises(
        TypeError, match=r"Dispatcher\(\) got an unexpected keyword argument 'colour'"
    ):
        Dispatcher(1, colour=None)  # type: ignore[call-arg]
    with pytest.raises(
        TypeError, match=r"AsyncDispatcher.* unexpected keyword argument 'executor'"
    ):
        AsyncDispatcher(1, executor="process")  # type: ignore[call-arg]
    with pytest.raises(
        TypeError, match=r"ThreadPoolExecutor.* unexpected keyword argument 'block'"
    ):
        ThreadPoolExecutor(1, block=3)  # type: ignore[call-arg]
    with pytest.raises(
        TypeError, match=r"ProcessPoolExecutor.* unexpected keyword argument 'settings'"
    ):
        ProcessPoolExecutor(1, settings=None)  # type: ignore[call-arg]
    with Dispatcher(2, settings=Settings(workers=3, chunk=4), chunk=5) as d:
        assert (d.workers, d.settings.chunk) == (2, 5)
