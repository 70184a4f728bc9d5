"""The model card's held-out figures are the whole held-out text's, and reproducible.

The card (``sim/data/MODEL_CARD.md``) is written by ``python -m elmoe3d.sim.lm.model_card`` from
per-window figures it stores in ``sim/data/heldout_bits.json`` (minutes of compute). These tests
check, in seconds, that (1) the windows tile the whole held-out text and the scored ones are
every ``every``-th of them, (2) every figure and standard error in the card's table is the
summary of the stored windows, and (3) a sample of stored windows recomputes to the same bits
with the shipped model.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from elmoe3d.sim.lm import corpus
from elmoe3d.sim.lm import model_card
from elmoe3d.sim.lm.model import MoELM

DATA = Path(__file__).resolve().parents[1] / "sim" / "data"
CARD = DATA / "MODEL_CARD.md"


@pytest.fixture(scope="module")
def stored():
    if not model_card.BITS_JSON.is_file():
        pytest.fail(f"{model_card.BITS_JSON} is missing: run python -m elmoe3d.sim.lm.model_card")
    return json.loads(model_card.BITS_JSON.read_text())


@pytest.fixture(scope="module")
def held(stored):
    names = corpus.stdlib_files()
    held_files = corpus.split_files(names)[1]
    if set(held_files) != set(stored["heldout_files"]):
        pytest.skip("this Python's standard library differs from the one the card was measured on")
    return corpus.load_bytes(held_files)


def _card_table():
    """``{row name: (bits, standard error)}`` from the card's held-out table."""
    rows = {}
    section = CARD.read_text().split("## Held-out bits per byte", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        m = re.fullmatch(r"\| (.+?) \| (\d+\.\d{3}) \| (\d+\.\d{3}) \| ([+-]\d+\.\d{4}) ± (\d+\.\d{4}) \|", line)
        if m:
            rows[m.group(1)] = tuple(float(m.group(i)) for i in range(2, 6))
    return rows


def test_windows_tile_the_whole_heldout_text(stored, held):
    """The tiling covers the held-out text; the scored windows are every ``every``-th of it."""
    windows = corpus.heldout_tiling(held, stored["length"])
    assert stored["n_windows"] == len(windows) and stored["held_bytes"] == len(held)
    covered = len(windows) * (stored["length"] - 1)
    assert len(held) - 1 - covered < stored["length"] - 1          # all but a short tail
    scored = len(windows[::stored["every"]])
    assert all(len(v) == scored for v in stored["rows"].values())
    assert scored * (stored["length"] - 1) >= 100_000              # a sample with a small standard error


def test_card_figures_are_the_summaries_of_the_stored_windows(stored):
    table = _card_table()
    assert set(table) == set(stored["rows"]) == {name for name, _, _ in model_card.card_rows()}
    ref = np.array(stored["rows"][model_card.REFERENCE])
    for name, bits in stored["rows"].items():
        mean, se = model_card.summarize(bits, stored["block"])
        diff, dse = model_card.summarize(np.array(bits) - ref, stored["block"])
        assert table[name] == (round(mean, 3), round(se, 3), round(diff, 4), round(dse, 4)), name
    text = CARD.read_text()
    assert f"{stored['n_windows']:,} consecutive windows" in text
    scored = len(range(0, stored["n_windows"], stored["every"]))
    assert (f"{scored * (stored['length'] - 1):,} predictions" in text if stored["every"] > 1
            else "All of them are scored." in text)


def test_summarize_counts_block_correlation():
    """Correlated neighbours widen the standard error; independent windows give the usual one."""
    rng = np.random.default_rng(0)
    iid = rng.standard_normal(1600)
    mean, se = model_card.summarize(iid, block=16)
    assert abs(se - 1 / 40) < 0.008
    blocky = np.repeat(rng.standard_normal(100), 16)              # 16 equal neighbours
    assert model_card.summarize(blocky, block=16)[1] > 3 * blocky.std() / 40


@pytest.mark.parametrize("row", ["target, INT8 (full)", "draft: INT8 experts MSB+aug, k_d = 1",
                                 "separate draft model, INT8", "byte unigram (add-one, training files)"])
def test_stored_windows_recompute(stored, held, row):
    rows = {name: (which, ex) for name, which, ex in model_card.card_rows()}
    which, ex = rows[row]
    windows = corpus.heldout_tiling(held, stored["length"])[::stored["every"]]
    n = len(windows)
    sample = [0, n // 3, 2 * n // 3, n - 1]
    if which == "unigram":
        train = corpus.load_bytes(corpus.split_files(corpus.stdlib_files())[0])
        got = model_card.unigram_window_bits(train, windows[sample])
    else:
        model = MoELM.load(DATA / ("moe_lm.npz" if which == "target" else "draft_lm.npz"))
        got = model_card.window_bits(model, windows[sample], ex)
    want = np.array(stored["rows"][row])[sample]
    assert np.allclose(got, want, atol=1e-6), (row, got, want)
