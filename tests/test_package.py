"""The public surface: __all__, and an import that stays light."""

from __future__ import annotations

import subprocess
import sys

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
