"""The public surface: __all__, and an import that stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import dispatchkit


def test_all_names_exist_and_are_public() -> None:
    for name in dispatchkit.__all__:
        assert hasattr(dispatchkit, name), name
        assert not name.startswith("_")
    assert sorted(dispatchkit.__all__) == sorted(set(dispatchkit.__all__))


def test_importing_the_core_loads_no_third_party_module() -> None:
    code = (
        "import sys, dispatchkit\n"
        "heavy = [m for m in ('rich', 'matplotlib', 'redis', 'msgpack', 'granian', 'msgspec',"
        " 'prometheus_client')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


HEAVY = ("rich", "matplotlib", "redis", "msgpack", "granian", "msgspec", "prometheus_client")


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        *([command, "--help"] for command in ("run", "worker", "bench", "serve")),
        ["run", "--jobs", "10", "--workers", "2", "--json", "--no-progress"],
    ],
)
def test_the_command_line_loads_only_what_its_command_needs(argv: list[str]) -> None:
    # Every command's parser is built for any command line: none of them may
    # import what only running it needs (the serve extra, Redis, charts, tables).
    code = (
        "import contextlib, io, sys\n"
        "from dispatchkit.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main({argv!r})\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout
