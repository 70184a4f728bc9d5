"""Bad input, everywhere: every refusal is one line on stderr, exit status 2, no traceback, and
the line names the cause (issue 11, part 2).

Most cases run in-process through ``elmoe3d.cli.main`` (the same code path as the console
script); a handful run the real executable where the process boundary is the point (a closed
pipe, ``ELMOE3D_DEBUG``, the exit status of ``bench-cache --liberty nosuch``).
"""

import errno
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from elmoe3d import paths
from elmoe3d.cli import main

DATA = Path(__file__).resolve().parents[1] / "sim" / "data"
TINY_NUMERICS = ["numerics", "--d-model", "8", "--d-ffn", "8", "--experts", "2", "--tokens", "2", "--no-mixtral"]

# Every command that writes, with the least work around its output option; P marks the path.
FOLDER_OUTPUTS = {
    "demo": ["demo", "--quick", "-o", "P"],
    "generate": ["generate", "--top", "pe", "-o", "P"],
    "regress": ["regress", "--quick", "--only", "pe-t1", "-o", "P"],
    "synth": ["synth", "--top", "pe", "-o", "P"],
    "sd": ["sd", "--quick", "--no-baselines", "-o", "P"],
    "bench-pe": ["bench-pe", "--no-sim", "--rows", "2", "--cols", "2", "-o", "P"],
    "bench-cache": ["bench-cache", "--no-rtl", "--no-synth", "--steps", "10", "-o", "P"],
    "compile": ["compile", "--tokens", "1", "-o", "P"],
    "bench-core": ["bench-core", "--no-rtl", "--no-synth", "-o", "P"],
}
FILE_OUTPUTS = {
    "numerics --json": TINY_NUMERICS + ["--json", "P"],
    "bench-pe --json": ["bench-pe", "--no-sim", "--rows", "2", "--cols", "2", "--json", "P"],
}


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("ELMOE3D_DEBUG", raising=False)


def refused(capsys, argv, cause):
    """Run ``argv`` in-process; assert exit 2, one stderr line, no traceback, ``cause`` in it."""
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, f"{argv}: exit {status}, stderr {err!r}"
    assert len(lines) == 1, f"{argv}: {len(lines)} stderr lines: {err!r}"
    assert "Traceback" not in err
    assert cause in lines[0], f"{argv}: {lines[0]!r} does not name {cause!r}"
    return lines[0]


def _with(argv, path):
    return [path if a == "P" else a for a in argv]


# -- output paths -----------------------------------------------------------------------------

def _a_file(tmp_path):
    f = tmp_path / "plain_file"
    f.write_text("x")
    return f


FOLDER_CASES = [
    ("empty", lambda t: "", "an empty path names nothing"),
    ("existing file", lambda t: _a_file(t), "it is a file"),
    ("under a file", lambda t: _a_file(t) / "sub" / "dir", "plain_file is a file, not a folder"),
    ("name of 300 characters", lambda t: t / ("n" * 300), "300 bytes, longer than the 255"),
    ("a device", lambda t: "/dev/full", "it exists and is not a folder"),
]


@pytest.mark.parametrize("command", FOLDER_OUTPUTS)
@pytest.mark.parametrize("case, make, cause", FOLDER_CASES, ids=[c[0] for c in FOLDER_CASES])
def test_bad_output_folder(capsys, tmp_path, command, case, make, cause):
    refused(capsys, _with(FOLDER_OUTPUTS[command], make(tmp_path)), cause)


FILE_CASES = [
    ("empty", lambda t: "", "an empty path names nothing"),
    ("a folder", lambda t: t, "it is a folder"),
    ("under a file", lambda t: _a_file(t) / "x.json", "plain_file is a file, not a folder"),
    ("name of 300 characters", lambda t: t / ("n" * 300 + ".json"), "305 bytes, longer than the 255"),
    ("full device", lambda t: "/dev/full", "cannot write /dev/full: no space left on the device"),
]


@pytest.mark.parametrize("command", FILE_OUTPUTS)
@pytest.mark.parametrize("case, make, cause", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_output_file(capsys, tmp_path, command, case, make, cause):
    refused(capsys, _with(FILE_OUTPUTS[command], make(tmp_path)), cause)


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="no sysfs")
@pytest.mark.parametrize("command", FOLDER_OUTPUTS)
def test_output_folder_in_sysfs(capsys, command):
    """The kernel refuses a folder in /sys (EPERM): named, not a traceback."""
    refused(capsys, _with(FOLDER_OUTPUTS[command], "/sys/kernel/elmoe3d-test/out"),
            "cannot create folder /sys/kernel/elmoe3d-test/out: operation not permitted")


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="no sysfs")
@pytest.mark.parametrize("command", FILE_OUTPUTS)
def test_output_file_in_sysfs(capsys, command):
    refused(capsys, _with(FILE_OUTPUTS[command], "/sys/kernel/elmoe3d-test.json"),
            "cannot write /sys/kernel/elmoe3d-test.json")


@pytest.mark.parametrize("code, cause", [(errno.EROFS, "the file system is read-only"),
                                         (errno.EACCES, "permission denied"),
                                         (errno.EPERM, "operation not permitted")])
@pytest.mark.parametrize("command", ["generate", "synth", "bench-cache", "numerics --json"])
def test_unwritable_folder(capsys, tmp_path, monkeypatch, command, code, cause):
    """A read-only file system, a folder without write permission, an immutable folder: the
    probe file's creation fails with the OS's error (simulated here: root ignores mode bits and
    chattr needs a file system that has it), and the line names folder and cause."""
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), kwargs.get("dir"))
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    argv = {**FOLDER_OUTPUTS, **FILE_OUTPUTS}[command]
    target = tmp_path / "out" / ("x.json" if "--json" in command else "")
    line = refused(capsys, _with(argv, target), cause)
    assert str(tmp_path / "out") in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_for_real(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    refused(capsys, ["generate", "--top", "pe", "-o", ro / "out"], "permission denied")


def test_a_full_disk_while_writing_names_the_file(tmp_path, monkeypatch):
    """A disk that fills during the run: write_text turns ENOSPC into a line naming the file."""
    import builtins
    real_open = builtins.open

    class Full:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(builtins, "open", lambda p, *a, **k: Full() if str(p).endswith("r.txt") else real_open(p, *a, **k))
    with pytest.raises(paths.UserError, match=r"cannot write .*r\.txt: no space left on the device"):
        paths.write_text(tmp_path / "r.txt", "x")


def test_an_oserror_reaching_the_command_line_is_one_line(capsys, monkeypatch):
    """Whatever OSError escapes a command (here: ENOSPC from a write that names no file)."""
    from elmoe3d.commands import generate

    def boom(args):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(generate, "run", boom)
    refused(capsys, ["generate", "--list"], "no space left on the device")


def test_nested_output_folders_are_created(capsys, tmp_path):
    out = tmp_path / "a" / "b" / "c"
    assert main(["generate", "--top", "pe", "-o", str(out)]) == 0
    assert (out / "pe.v").is_file()
    assert main([*TINY_NUMERICS, "--json", str(tmp_path / "d" / "e" / "r.json")]) == 0
    assert json.loads((tmp_path / "d" / "e" / "r.json").read_text())[0]["tokens"] == 2
    capsys.readouterr()


def test_a_folder_name_with_a_space_is_synthesized(capsys, tmp_path):
    """Yosys and OpenSTA both take it (OpenSTA once refused the name)."""
    from elmoe3d.toolchain import shipped_liberty
    liberty = ["--liberty", "sky130hd"] if shipped_liberty("sky130hd") else []
    out = tmp_path / "with space" / "pe"
    assert main(["synth", "--top", "pe", *liberty, "-o", str(out)]) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    if liberty and report["timing"] is not None:
        assert report["timing"]["fmax_mhz"] > 0


def test_probe_files_are_removed(tmp_path):
    paths.output_dir(tmp_path)
    paths.output_file(tmp_path / "new.json")
    assert list(tmp_path.iterdir()) == []          # neither probe nor the file itself is left


# -- sizes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, cause", [
    (["numerics", "--experts", "1000000"], "needs about"),
    (["numerics", "--tokens", "1000000000000", "--no-mixtral"], "needs about"),
    (["numerics", "--shared", "1000000"], "needs about"),
    (["numerics", "--experts", "64", "--d-ffn", "131071", "--no-mixtral"], "needs about"),
    (["generate", "--top", "pe", "--terms", "100000", "-o", "P"], "--terms 100000: at most 256"),
    (["generate", "--top", "lsb_augment", "--width", "100000", "-o", "P"], "--width 100000: at most 256"),
    (["synth", "--top", "pe", "--terms", "100000", "-o", "P"], "--terms 100000: at most 256"),
    (["bench-cache", "--no-rtl", "--no-synth", "--layers", "1000000000", "-o", "P"], "at most 256 layers"),
    (["bench-cache", "--no-rtl", "--no-synth", "--experts", "1000000000", "-o", "P"], "1024 experts"),
    (["bench-cache", "--no-rtl", "--no-synth", "--steps", "1000000000", "-o", "P"], "the limit is 60 min"),
    (["bench-pe", "--no-sim", "--rows", "1000000000", "-o", "P"], "rows must be at most 256"),
    (["sd", "--quick", "--prompt-len", "1000000000", "-o", "P"], "held-out text has"),
    (["sd", "--quick", "--gamma", "1000000000", "-o", "P"], "gamma must be an integer in 1 .. 16"),
    (["sd", "--quick", "--capacity", "1000000000", "-o", "P"], "--capacity 1000000000: the golden expert cache holds at most 4096"),
    (["sd", "--quick", "--engine", "iss", "--lanes", "1000000000", "-o", "P"], "lanes must be in [1, 16]"),
    (["sd", "--quick", "--lanes", "2", "-o", "P"], "--lanes sets the accelerator of --engine iss|rtl"),
    (["bench-cache", "--no-rtl", "--no-synth", "--plane-kib", "1000000000", "-o", "P"], "a plane must fit the HB address space"),
])
def test_sizes_are_refused_up_front_with_the_limit(capsys, tmp_path, argv, cause):
    start = time.monotonic()
    line = refused(capsys, _with(argv, tmp_path / "out"), cause)
    assert time.monotonic() - start < 30, f"{argv} took {time.monotonic() - start:.0f} s to refuse"
    if "needs about" in cause:
        assert "available on this machine" in line
    assert not (tmp_path / "out").exists(), "refused after the output folder was made"


def test_memory_limit_names_both_figures():
    from elmoe3d.limits import check_memory
    with pytest.raises(paths.UserError, match=r"the job needs about 2\.0 GiB of memory, more than the 1\.0 GiB"):
        check_memory("the job", 2 * 2**30, available=2**30)
    assert check_memory("the job", 2**30, available=2**30) == 2**30


def test_numerics_memory_estimate_bounds_a_measured_run():
    """The estimate must not refuse what runs: >= the measured peak (255 MiB for this shape)."""
    from elmoe3d.commands.numerics import memory_estimate
    from elmoe3d.sim.golden.moe_layer import MoEShape
    assert memory_estimate(MoEShape(d_model=512, n_experts=8, top_k=2, d_ffn=1024), 64) >= 255 * 2**20


# -- corrupt inputs ---------------------------------------------------------------------------

def _model_with(tmp_path, name, **replace):
    with np.load(DATA / "moe_lm.npz", allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data.update({k: np.array(v) for k, v in replace.items()})
    path = tmp_path / name
    np.savez(path, **data)
    return path


def _config(**change):
    with np.load(DATA / "moe_lm.npz", allow_pickle=False) as z:
        cfg = json.loads(str(z["config"]))
    cfg.update(change)
    return json.dumps(cfg)


@pytest.mark.parametrize("name, replace, cause", [
    ("meta_not_json.npz", {"meta": "{not json"}, "metadata is not valid JSON"),
    ("meta_list.npz", {"meta": "[1, 2]"}, "metadata must be a JSON object, got list"),
    ("meta_steps_str.npz", {"meta": json.dumps({"steps": "many"})}, "metadata steps has the wrong type"),
    ("config_not_json.npz", {"config": "nope"}, "model config is not valid JSON"),
    ("config_list.npz", {"config": "[]"}, "model config must be a JSON object"),
    ("config_str_width.npz", {"config": _config(d_model="128")}, "field d_model must be an integer, got '128'"),
    ("config_float_layers.npz", {"config": _config(n_layers=4.5)}, "field n_layers must be an integer"),
    ("config_str_base.npz", {"config": _config(rope_base="big")}, "field rope_base must be a finite number"),
])
def test_corrupt_model_file(capsys, tmp_path, name, replace, cause):
    path = _model_with(tmp_path, name, **replace)
    line = refused(capsys, ["sd", "--quick", "--no-baselines", "--model", path, "-o", tmp_path / "o"], cause)
    assert name in line


def test_model_path_that_is_a_folder(capsys, tmp_path):
    refused(capsys, ["sd", "--quick", "--model", tmp_path, "-o", tmp_path / "o"], "is a folder")


def _reuse_folder(tmp_path, text):
    """The report bench-pe --reuse finds first, under each folder name it may use (one per
    pipeline depth, or one for all); the parameters name the depth of their folder."""
    for suffix, depth in [("", 3)] + [(f"-p{d}", d) for d in range(4)]:
        folder = tmp_path / "bp" / f"sky130hd-pe_array{suffix}"
        folder.mkdir(parents=True)
        try:
            report = json.loads(text)
            if isinstance(report, dict):
                report["params"]["pipeline"] = depth
            body = json.dumps(report)
        except json.JSONDecodeError:
            body = text
        (folder / "report.json").write_text(body)
    return tmp_path / "bp"


@pytest.mark.parametrize("text, cause", [
    ("not json at all", "is not a JSON synthesis report"),
    ("[1, 2]", "is not a synthesis report"),
    (json.dumps({"top": "pe_array", "clock_ns": 10.0, "activity": 0.2, "params": {"rows": 2, "cols": 2, "lanes": 1}}),
     "lacks area/total/area"),
    (json.dumps({"top": "pe_array", "clock_ns": 10.0, "activity": 0.2, "params": {"rows": 2, "cols": 2, "lanes": 1},
                 "area": {"total": {"area": "big", "sequential_share": 0.1}}}), "lacks area/total/area as a number"),
])
def test_corrupt_reuse_report(capsys, tmp_path, text, cause):
    from elmoe3d.toolchain import shipped_liberty
    if not shipped_liberty("sky130hd"):
        pytest.skip("no shipped sky130hd Liberty")
    out = _reuse_folder(tmp_path, text)
    refused(capsys, ["bench-pe", "--no-sim", "--rows", "2", "--cols", "2", "--liberty", "sky130hd",
                     "--reuse", "-o", out], cause)


LIBERTY_CASES = [
    ("empty.lib", "", "Liberty file {} is empty"),
    ("notes.lib", "These notes describe the library we use.\n", "does not look like a Liberty file"),
    ("garbage.lib", "\x00\x01binary", "does not look like a Liberty file"),
    ("nocell.lib", "library (x) {\n  time_unit : \"1ns\";\n}\n", "defines no cell"),
    ("truncated.lib", "library (x) {\n  cell (INV) {\n", "is truncated or malformed"),
    ("ffonly.lib", "library (x) {\n cell (DFF) { ff (IQ, IQN) { next_state : \"D\"; clocked_on : \"CK\"; }\n"
                   "  pin (Q) { direction : output; function : \"IQ\"; } }\n}\n", "has no combinational cell"),
    ("combonly.lib", "library (x) {\n cell (INV) { pin (A) { direction : input; }\n"
                     "  pin (Y) { direction : output; function : \"!A\"; } }\n}\n", "has no flip-flop cell"),
]


@pytest.mark.parametrize("command", [
    ["synth", "--top", "pe", "-o", "P"],
    ["bench-pe", "--no-sim", "--rows", "2", "--cols", "2", "-o", "P"],
    ["bench-cache", "--no-rtl", "--steps", "10", "-o", "P"],
], ids=["synth", "bench-pe", "bench-cache"])
@pytest.mark.parametrize("name, text, cause", LIBERTY_CASES, ids=[c[0] for c in LIBERTY_CASES])
def test_bad_liberty(capsys, tmp_path, command, name, text, cause):
    lib = tmp_path / name
    lib.write_text(text)
    refused(capsys, _with(command, tmp_path / "out") + ["--liberty", lib], cause.format(lib))
    assert not (tmp_path / "out").exists(), "refused after the output folder was made"


@pytest.mark.parametrize("argv, cause", [
    (["bench-cache", "--alpha", "nan"], "expected a finite number, got 'nan'"),
    (["bench-cache", "--alpha", "inf"], "expected a finite number, got 'inf'"),
    (["bench-cache", "--alpha", "-1"], "--alpha must be >= 0"),
    (["synth", "--top", "pe", "--clock-ns", "1e-300", "-o", "P"], "expected a clock period from 0.001 ns"),
    (["synth", "--top", "pe", "--clock-ns", "1e300", "-o", "P"], "expected a clock period from 0.001 ns"),
    (["synth", "--top", "pe", "--clock-ns", "nan", "-o", "P"], "expected a positive number, got 'nan'"),
    (["bench-pe", "--clock-ns", "1e-300"], "expected a clock period from 0.001 ns"),
    (["bench-cache", "--clock-ns", "1e-300"], "expected a clock period from 0.001 ns"),
    (["bench-cache", "--trace", ""], "expected a file name, got an empty string"),
    (["synth", "--verilog", "/nonexistent.v", "--top", "x", "-o", "P"], "no such file: '/nonexistent.v'"),
    (["bench-cache", "--no-rtl", "--liberty", "nosuch", "-o", "P"], "Liberty file not found: nosuch"),
    (["synth", "--top", "pe", "--liberty", "", "-o", "P"], "--liberty: an empty name"),
])
def test_bad_values(capsys, tmp_path, argv, cause):
    refused(capsys, _with(argv, tmp_path / "out"), cause)



# -- elmoe3d explore: the space file and the options (issue 19) --------------------------------

EXPLORE_WORKLOAD = "\n[[workloads]]\nmodel = 'olmoe-1b-7b'\nbatch = 1\n"


@pytest.mark.parametrize("argv, space, cause", [
    (["explore", "/nonexistent.toml"], None, "no such space file: '/nonexistent.toml'"),
    (["explore", "S"], "[nosuch]\n" + EXPLORE_WORKLOAD, "nosuch: unknown table"),
    (["explore", "S"], "[params]\nrows = 0\n" + EXPLORE_WORKLOAD, "params.rows: array.rows must be in [1, 256]"),
    (["explore", "S"], "[params]\nrows = 8\n", "workloads: missing"),
    (["explore", "S"], "[search]\nmethod = 'optuna'\n" + EXPLORE_WORKLOAD, "search.samples"),
    (["explore", "S"], "[params\n", "not valid TOML"),
    (["explore", "S"], b"\xff\xfe\x00", "not a text file"),
    (["explore", "--serial", "--address", "127.0.0.1:6379"], None, "--serial and --address exclude each other"),
    (["explore", "--address", "not an address"], None, "--address 'not an address': expected HOST:PORT"),
    (["explore", "--page", "../up"], None, "--page '../up'"),
    (["explore", "--num-cpus", "0"], None, "expected a positive integer, got '0'"),
    (["explore", "-o", "F"], None, "it is a file"),
    (["explore", "--cache", "F"], None, "it is a file"),
])
def test_explore_refusals(capsys, tmp_path, argv, space, cause):
    path = tmp_path / "space.toml"
    if space is not None:
        path.write_bytes(space if isinstance(space, bytes) else space.encode())
    (tmp_path / "file").write_text("x")
    argv = [str(path) if a == "S" else str(tmp_path / "file") if a == "F" else a for a in argv]
    refused(capsys, [*argv, *(["-o", str(tmp_path / "out")] if "-o" not in argv else [])], cause)
    assert not (tmp_path / "out").exists(), "refused after the output folder was made"

# -- valid input is not refused ---------------------------------------------------------------

def test_valid_edge_values_are_taken(capsys, tmp_path):
    out = tmp_path / "o"
    assert main(["generate", "--top", "pe", "--terms", "256", "-o", str(out)]) == 0     # the limit itself
    assert main(["generate", "--top", "pe", "-o", str(out)]) == 0                       # a second time
    assert main([*TINY_NUMERICS, "--json", "/dev/null"]) == 0                          # a device that takes data
    existing = tmp_path / "r.json"
    existing.write_text("old")
    assert main([*TINY_NUMERICS, "--json", str(existing)]) == 0                        # an existing file
    assert json.loads(existing.read_text())
    capsys.readouterr()


# -- the process boundary ---------------------------------------------------------------------

ELMOE3D = [sys.executable, "-m", "elmoe3d"]


def test_bench_cache_missing_liberty_exits_2():
    """It used to log the failed syntheses and exit 0."""
    r = subprocess.run([*ELMOE3D, "bench-cache", "--no-rtl", "--steps", "10", "--liberty", "nosuch",
                        "-o", tempfile.mkdtemp()], capture_output=True, text=True)
    assert r.returncode == 2 and "Liberty file not found: nosuch" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("argv", [["generate", "--list"], ["regress", "--list"], TINY_NUMERICS])
def test_output_piped_into_a_closed_reader(argv):
    """`elmoe3d ... | head -0`: the reader has gone before the command writes; it ends quietly
    with 141 (128 + SIGPIPE), as a Unix tool does, and prints nothing on stderr."""
    r = subprocess.run(["bash", "-c", " ".join([*ELMOE3D, *argv]) + " | head -c 0; exit ${PIPESTATUS[0]}"],
                       capture_output=True, text=True)
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
    assert r.returncode in (0, 141), r.stderr          # 0 when all output fit in the pipe first


def test_broken_pipe_is_quiet_in_process(capsys, monkeypatch):
    from elmoe3d.commands import generate

    def boom(args):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")
    monkeypatch.setattr(generate, "run", boom)
    monkeypatch.setattr("elmoe3d.cli._quiet_broken_pipe", lambda: None)
    assert main(["generate", "--list"]) == 141
    assert capsys.readouterr().err == ""


def test_broken_pipe_for_real():
    """A reader that closes before the first line: the writer sees EPIPE, not a traceback."""
    proc = subprocess.Popen([*ELMOE3D, "generate", "--list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141, err
    assert err == "", err


def test_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "ELMOE3D_DEBUG": "1"}
    r = subprocess.run([*ELMOE3D, "generate", "--top", "pe", "-o", ""], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "Traceback" in r.stderr and "an empty path names nothing" in r.stderr


# -- elmoe3d perf (issue 18's share of issue 20's list) ------------------------------------------

def _perf_config(tmp_path, name, data):
    f = tmp_path / name
    f.write_bytes(data)
    return f


PERF_CASES = [
    ("config of random bytes", lambda t: ["--config", _perf_config(t, "c.toml", bytes(range(128, 256)) * 4)],
     "is not a text file"),
    ("JSON tier without gbps", lambda t: ["--config", _perf_config(
        t, "c.json", b'{"systems": {"z": {"decoding": "plain", "offchip": {"efficiency": 0.5}, '
                     b'"compute": {"macs_per_s": 1e12}}}}')], "system z: offchip is missing field(s) gbps"),
    ("empty output folder", lambda t: ["-o", ""], "an empty path names nothing"),
    ("empty --json", lambda t: ["--json", ""], "an empty path names nothing"),
    ("bench-pe report that is not one", lambda t: ["--bench-pe", _perf_config(t, "pe.json", b"[1, 2]")],
     "is not a bench-pe --json report"),
    ("negative gamma", lambda t: ["--gamma", "-1"], "--gamma -1: a draft length is 0 to 16"),
    ("bench-core result that is missing", lambda t: ["--bench-core", str(t / "nowhere")],
     "no bench-core result there"),
    ("bench-core result that is not JSON", lambda t: ["--bench-core", _perf_config(t, "bench_core.json", b"\x00\xff")],
     "is not a bench-core result (not JSON)"),
    ("bench-core result of another schema", lambda t: ["--bench-core", _perf_config(t, "bc.json", b'{"passes": 3}')],
     "is not a bench-core result: 'passes' must be a list"),
    ("rtl-overhead without a bench-core result", lambda t: ["--rtl-overhead"],
     "--rtl-overhead needs the RTL core's verify and draft passes"),
]


@pytest.mark.parametrize("case, make, cause", PERF_CASES, ids=[c[0] for c in PERF_CASES])
def test_perf_bad_input(capsys, tmp_path, case, make, cause, monkeypatch):
    monkeypatch.chdir(tmp_path)              # a refusal that wrote into the current folder would show here
    argv = ["perf", "--no-plot", "--no-sensitivity", "--models", "shipped", "--batch", "1", *make(tmp_path)]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "out")]
    refused(capsys, argv, cause)
    assert not (tmp_path / "out").exists() and not (tmp_path / "report.txt").exists()


# -- the commands added last round (issue 20): compile, bench-core, the new tops, sd, traces -------

def _bytes_file(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _json_file(tmp_path, name, obj):
    return _bytes_file(tmp_path, name, json.dumps(obj).encode())


def _core_json(tmp_path, **change):
    """The JSON `generate --top core` writes, with some of its accelerator configuration changed."""
    from elmoe3d.config import preset
    acc = preset("small").to_dict()
    acc.update(change)
    return _json_file(tmp_path, "core.json", {"top": "core", "params": {"preset": "small"}, "ports": [],
                                              "accelerator_config": acc})


# (argv, cause); P is the output folder, F(name, bytes or object) a file made in tmp_path
NEW_COMMAND_CASES = [
    # compile: --random malformed, absurd, conflicting; layers, tokens, configurations
    (["compile", "--random", "", "-o", "P"], "--random takes five integers D,E,K,F,S"),
    (["compile", "--random", "1,2,3", "-o", "P"], "got '1,2,3'"),
    (["compile", "--random", "8,4,x,16,0", "-o", "P"], "--random takes five integers"),
    (["compile", "--random", "8,0,1,16,0", "-o", "P"], "--random experts must be in [1, 64], got 0"),
    (["compile", "--random", "8,4,8,16,0", "-o", "P"], "--random top-k 8 exceeds the 4 experts"),
    (["compile", "--random", "4096,64,2,16384,8", "-o", "P"], "cache.expert_bits = 6 holds 64 experts"),
    (["compile", "--random", "8,4,2,16,0", "--layer", "3", "-o", "P"], "give one of them"),
    (["compile", "--layer", "9", "-o", "P"], "--layer must be below 4"),
    (["compile", "--tokens", "17", "-o", "P"], "--tokens must be in [1, 16]"),
    (["compile", "--tokens", "0", "-o", "P"], "expected a positive integer, got '0'"),
    (["compile", "--pass", "draft", "--k-d", "3", "-o", "P"], "--k-d must be at most the layer's top-k 2"),
    (["compile", "--config", "nosuch", "-o", "P"], "unknown accelerator preset 'nosuch'"),
    (["compile", "--config", "tiny", "-o", "P"], "hb.len_bits = 12 cannot express one plane"),
    (["compile", "--config", "tiny", "--random", "128,64,2,256,8", "-o", "P"], "cache.expert_bits = 4 holds 16 experts"),
    (["compile", "--config", ("random.json", bytes(range(256))), "-o", "P"], "not a JSON file"),
    (["compile", "--config", ("empty.json", b""), "-o", "P"], "not a JSON file"),
    (["compile", "--config", ("list.json", [1, 2]), "-o", "P"], "must be a JSON object, got list"),
    (["compile", "--config", ("extra.json", {"top": "core"}), "-o", "P"], "unknown configuration field 'top'"),
    (["compile", "--config", ("rows.json", {"array": {"rows": "many"}}), "-o", "P"], "rows.json"),
    (["compile", "--config", ("buffers.json", {"buffers": 3}), "-o", "P"], "configuration field buffers must be an object"),
    # bench-core: presets it offers work; layers, lanes, Liberty files
    (["bench-core", "--preset", "tiny", "--no-synth", "-o", "P"], "invalid choice: 'tiny'"),
    (["bench-core", "--layer", "9", "--no-synth", "-o", "P"], "--layer must be below 4"),
    (["bench-core", "--layer", "-1", "--no-synth", "-o", "P"], "expected an integer >= 0, got '-1'"),
    (["bench-core", "--lanes", "17", "--no-synth", "-o", "P"], "lanes must be in [1, 16]"),
    (["bench-core", "--no-rtl", "--liberty", "nosuch", "-o", "P"], "Liberty file not found: nosuch"),
    (["bench-core", "--no-rtl", "--synth-config", "nosuch", "-o", "P"], "invalid choice: 'nosuch'"),
    (["bench-core", "--no-rtl", "--no-macros=yes", "-o", "P"], "ignored explicit argument 'yes'"),
    (["bench-core", "--no-rtl", "--no-power=yes", "-o", "P"], "ignored explicit argument 'yes'"),
    (["bench-core", "--no-synth", "--no-power", "--lanes", "17", "-o", "P"], "lanes must be in [1, 16]"),
    (["synth", "--top", "pe", "--no-macros", "yes", "-o", "P"], "unrecognized arguments: yes"),
    # generate / regress / synth of the new tops
    (["generate", "--top", "stream_fifo", "--width", "1000000000", "-o", "P"], "--width 1000000000: at most 32768"),
    (["generate", "--top", "stream_fifo", "--width", "0", "-o", "P"], "--width 0: at least 1"),
    (["generate", "--top", "stream_arbiter", "--width", "1000000000", "-o", "P"], "--width 1000000000: at most 32768"),
    (["generate", "--top", "core", "--preset", "tiny", "--max-k", "1000000000", "-o", "P"], "--max-k 1000000000: at most 64"),
    (["generate", "--top", "core", "--preset", "tiny", "--max-k", "0", "-o", "P"], "--max-k 0: at least 1"),
    (["generate", "--top", "core", "--preset", "nosuch", "-o", "P"], "--preset: 'nosuch' is not one of"),
    (["generate", "--top", "core", "--preset", "small", "--lanes", "99", "-o", "P"], "lanes must be in [1, 16]"),
    (["generate", "--top", "command_processor", "--preset", "huge", "-o", "P"], "'huge' is not one of"),
    (["synth", "--top", "core", "--max-k", "1000000000", "-o", "P"], "--max-k 1000000000: at most 64"),
    (["synth", "--top", "core", "--preset", "small", "--lanes", "99", "-o", "P"], "lanes must be in [1, 16]"),
    (["synth", "--top", "stream_fifo", "--width", "1000000000", "-o", "P"], "at most 32768"),
    (["regress", "--top", "stream_fifo", "--width", "1000000000", "-o", "P"], "at most 32768"),
    (["regress", "--top", "core", "--preset", "small", "--lanes", "99", "-o", "P"], "lanes must be in [1, 16]"),
    (["regress", "--top", "width_adapter", "--in-width", "3", "--out-width", "7", "-o", "P"], "multiples of one another"),
    # sd: beyond the model's positions, refused before the banner
    (["sd", "--new", "2000", "--no-baselines", "-o", "P"], "the model holds at most max_seq = 1024"),
    (["sd", "--prompt-len", "1024", "--no-baselines", "-o", "P"], "1024 + --new 32 = 1056 positions"),
    # bench-cache: synthesis sizes
    (["bench-cache", "--no-rtl", "--steps", "10", "--synth-entries", "8,128", "-o", "P"],
     "--synth-entries 128: the expert cache has 2 to 64 slots"),
]


def _made(tmp_path, arg):
    if isinstance(arg, tuple):
        name, content = arg
        return _bytes_file(tmp_path, name, content) if isinstance(content, bytes) else _json_file(tmp_path, name, content)
    return arg


@pytest.mark.parametrize("argv, cause", NEW_COMMAND_CASES,
                         ids=[" ".join(a if isinstance(a, str) else a[0] for a in c[0] if a not in ("-o", "P"))
                              for c in NEW_COMMAND_CASES])
def test_new_commands_refuse_bad_input(capsys, tmp_path, argv, cause):
    """Each refusal: exit 2, one line naming the culprit, no traceback, nothing written."""
    start = time.monotonic()
    refused(capsys, [_made(tmp_path, a) for a in _with(argv, tmp_path / "out")], cause)
    assert time.monotonic() - start < 30, f"{argv} took {time.monotonic() - start:.0f} s to refuse"
    assert not (tmp_path / "out").exists(), "refused after the output folder was made"


def test_compile_memory_estimate():
    """`compile` keeps a layer's weights and images in files (docs/scale.md), so its estimate does
    not grow with the experts and stays under 2 GiB for one Mixtral-8x7B layer; a machine with
    less memory free than the estimate refuses in one line (the disk refusal:
    tests/test_compile_memory.py)."""
    from elmoe3d.limits import check_memory, compile_random_bytes
    est = compile_random_bytes(4096, 8, 14336, 0)
    assert est < 2 * 2**30 and est == compile_random_bytes(4096, 16, 14336, 0)
    with pytest.raises(paths.UserError, match=r"compile --random 4096,8,2,14336,0 needs about .* MiB of memory"):
        check_memory("compile --random 4096,8,2,14336,0", est, available=2**28)


def test_compile_takes_the_json_generate_writes(capsys, tmp_path):
    """`compile --config core.json`: generate's extra keys (top, params, ports) are not refused,
    its accelerator configuration is used; a broken one is named."""
    out = tmp_path / "c"
    assert main(["compile", "--config", str(_core_json(tmp_path)), "--tokens", "2", "-o", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["name"] == "small"
    capsys.readouterr()
    bad = _core_json(tmp_path, array={"rows": 8, "cols": 8, "lanes": 0})
    refused(capsys, ["compile", "--config", bad, "-o", tmp_path / "out"], "core.json")
    assert not (tmp_path / "out").exists()


def _trace_npz(tmp_path, name, **change):
    trace = dict(layer=np.array([0, 1]), experts=np.array([[0, 1], [2, 3]]), scores=np.array([[0.5, 0.3], [0.4, 0.2]]),
                 n_experts=np.int64(4), n_layers=np.int64(2))
    trace.update(change)
    np.savez(tmp_path / name, **trace)
    return tmp_path / name


_HEADER = {"format": "elmoe3d-routing-trace", "version": 1, "n_layers": 2, "n_experts": 4, "top_k": 2, "settings": {}}
_RECORD = {"step": 0, "kind": "target", "layer": 0, "seq": [0], "pos": [0], "experts": [[0, 1]],
           "scores": [[0.4, 0.3, 0.2, 0.1]]}


def _trace_jsonl(tmp_path, name, *lines):
    path = tmp_path / name
    path.write_bytes(b"".join(x if isinstance(x, bytes) else (json.dumps(x) + "\n").encode() for x in lines))
    return path


TRACE_CASES = [
    ("truncated.npz", lambda t: _bytes_file(t, "truncated.npz", _trace_npz(t, "whole.npz").read_bytes()[:200]),
     "a truncated or corrupt .npz archive"),
    ("empty.npz", lambda t: _bytes_file(t, "empty.npz", b""), "empty.npz: empty"),
    ("random-bytes.npz", lambda t: _bytes_file(t, "random.npz", bytes(range(256)) * 4), "not an .npz archive"),
    ("nan-scores.npz", lambda t: _trace_npz(t, "nan.npz", scores=np.array([[np.nan, 0.3], [0.4, 0.2]])),
     "scores must be probabilities in [0, 1]"),
    ("fractional-ids.npz", lambda t: _trace_npz(t, "frac.npz", experts=np.array([[0.5, 1.0], [2.0, 3.0]])),
     "experts must hold whole numbers"),
    ("no-records.npz", lambda t: _trace_npz(t, "none.npz", layer=np.zeros(0, int), experts=np.zeros((0, 2), int),
                                            scores=np.zeros((0, 2))), "has no records"),
    ("header-only.jsonl", lambda t: _trace_jsonl(t, "header.jsonl", _HEADER), "has a header and no records"),
    ("fractional-ids.jsonl", lambda t: _trace_jsonl(t, "frac.jsonl", _HEADER, {**_RECORD, "experts": [[0.5, 1]]}),
     "layer and expert ids must be whole numbers"),
    ("nan-scores.jsonl", lambda t: _trace_jsonl(t, "nan.jsonl", _HEADER, json.dumps(_RECORD).replace("0.4", "NaN").encode() + b"\n"),
     "scores must be finite numbers"),
    ("truncated.jsonl", lambda t: _trace_jsonl(t, "trunc.jsonl", _HEADER, json.dumps(_RECORD)[:30].encode()),
     "a record is not valid JSON"),
    ("empty.jsonl", lambda t: _bytes_file(t, "empty.jsonl", b""), "is not a routing trace"),
    ("random-bytes.jsonl", lambda t: _bytes_file(t, "random.jsonl", b"\xff\xfe" + bytes(range(256))), "not a text file"),
]


@pytest.mark.parametrize("case, make, cause", TRACE_CASES, ids=[c[0] for c in TRACE_CASES])
def test_bad_routing_trace(capsys, tmp_path, case, make, cause):
    trace = make(tmp_path)
    line = refused(capsys, ["bench-cache", "--no-rtl", "--no-synth", "--steps", "10", "--trace", trace,
                            "-o", tmp_path / "out"], cause)
    assert trace.name in line
    assert not (tmp_path / "out").exists(), "refused after the output folder was made"


def test_good_routing_traces_are_taken(capsys, tmp_path):
    for trace in (_trace_npz(tmp_path, "good.npz"), _trace_jsonl(tmp_path, "good.jsonl", _HEADER, _RECORD)):
        assert main(["bench-cache", "--no-rtl", "--no-synth", "--steps", "10", "--policies", "lru",
                     "--capacities", "4", "--trace", str(trace), "-o", str(tmp_path / "out")]) == 0
    capsys.readouterr()
