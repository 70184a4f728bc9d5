"""The numpy MoE language model: KV cache, batching, draft executions, weights files, torch twin."""

import zipfile
from pathlib import Path

import numpy as np
import pytest

from elmoe3d.errors import UserError
from elmoe3d.sim.lm import corpus
from elmoe3d.sim.lm.model import FLOAT, TARGET, Execution, MoELM, bits_per_byte
from elmoe3d.sim.lm.config import TINY, LMConfig, load_weights, random_weights, save_weights

SHIPPED = Path(__file__).resolve().parents[1] / "sim" / "data" / "moe_lm.npz"
DRAFT_SHIPPED = SHIPPED.with_name("draft_lm.npz")
EXECUTIONS = {"float": FLOAT, "int8": TARGET, "draft-experts": Execution(expert_bits="draft", k=1),
              "draft-all": Execution(expert_bits="draft", dense_bits="draft")}
# Float64 paths agree to rounding; INT8 paths see the same activations up to rounding too, so a
# quantization step can only flip on an exact tie (not hit with these seeds).
TOL = 1e-9


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread():
    from elmoe3d.sim.lm.blas_threads import single_threaded
    with single_threaded():
        yield


@pytest.fixture(scope="module")
def tiny():
    return MoELM(TINY, random_weights(TINY, seed=0))


def _prompts(rng, n, lo=1, hi=24):
    return [rng.integers(0, 256, rng.integers(lo, hi)) for _ in range(n)]


@pytest.mark.parametrize("name", EXECUTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_kv_cache_decoding_equals_full_recomputation(tiny, name, seed):
    execution = EXECUTIONS[name]
    seq = np.random.default_rng(seed).integers(0, 256, 20)
    full = tiny.logits([seq], execution)[0]
    cache = tiny.new_cache(1)
    steps = [tiny.forward([seq[i:i + 1]], cache, execution).logits[0][0] for i in range(len(seq))]
    np.testing.assert_allclose(np.array(steps), full, rtol=0, atol=TOL,
                               err_msg=f"execution {name}, seed {seed}: step-by-step != full pass")


@pytest.mark.parametrize("chunks", [[5, 7, 8], [1, 19], [10, 1, 1, 8]], ids=str)
def test_chunked_prefill_equals_one_pass(tiny, chunks):
    seq = np.random.default_rng(7).integers(0, 256, sum(chunks))
    full = tiny.logits([seq], TARGET)[0]
    cache, out, start = tiny.new_cache(1), [], 0
    for n in chunks:
        out.append(tiny.forward([seq[start:start + n]], cache, TARGET).logits[0])
        start += n
    np.testing.assert_allclose(np.concatenate(out), full, atol=TOL, err_msg=f"chunks {chunks}")


@pytest.mark.parametrize("batch", [1, 4, 16])
@pytest.mark.parametrize("name", ["float", "int8", "draft-all"])
def test_batched_forward_equals_per_sequence(tiny, batch, name):
    execution = EXECUTIONS[name]
    rng = np.random.default_rng(batch)
    prompts = _prompts(rng, batch)
    together = tiny.logits(prompts, execution)
    for b, p in enumerate(prompts):
        alone = tiny.logits([p], execution)[0]
        np.testing.assert_allclose(together[b], alone, atol=TOL,
                                   err_msg=f"{name}: sequence {b} of {batch} (length {len(p)})")


def test_batched_decode_with_ragged_steps(tiny):
    """Sequences append different numbers of tokens per pass (some none) and still match."""
    rng = np.random.default_rng(5)
    seqs = [rng.integers(0, 256, 15) for _ in range(3)]
    plan = [[3, 0, 5], [4, 6, 0], [8, 9, 10]]   # per pass: new tokens of each sequence
    cache, got = tiny.new_cache(3), [[] for _ in seqs]
    pos = [0, 0, 0]
    for counts in plan:
        feed = [s[p:p + n] for s, p, n in zip(seqs, pos, counts)]
        for b, lg in enumerate(tiny.forward(feed, cache, TARGET).logits):
            got[b].extend(lg)
        pos = [p + n for p, n in zip(pos, counts)]
    for b, s in enumerate(seqs):
        np.testing.assert_allclose(np.array(got[b]), tiny.logits([s], TARGET)[0], atol=TOL,
                                   err_msg=f"sequence {b}")


def test_truncate_rolls_back(tiny):
    seq = np.random.default_rng(2).integers(0, 256, 12)
    cache = tiny.new_cache(1)
    tiny.forward([seq[:8]], cache)
    tiny.forward([np.array([1, 2, 3])], cache)       # a rejected draft
    cache.truncate(0, 8)
    got = tiny.forward([seq[8:]], cache).logits[0]
    np.testing.assert_allclose(got, tiny.logits([seq])[0][8:], atol=TOL)


def test_draft_executions_differ_but_track_the_target(tiny):
    seq = np.random.default_rng(3).integers(0, 256, 30)
    ref = tiny.logits([seq], TARGET)[0]
    for name in ("draft-experts", "draft-all"):
        got = tiny.logits([seq], EXECUTIONS[name])[0]
        err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        assert 0 < err < 0.6, f"{name}: relative logit error {err:.3f}"


def test_cached_choice_uses_only_allowed_experts(tiny):
    seq = np.random.default_rng(4).integers(0, 256, 10)
    allowed = [np.array([True, False, True, False]), np.array([False, False, False, True])]
    res = tiny.forward([seq], tiny.new_cache(1), Execution(k=2), allowed)
    assert set(np.unique(res.routing[0].chosen)) <= {0, 2}
    assert res.routing[1].chosen.shape == (10, 1) and set(np.unique(res.routing[1].chosen)) == {3}
    none = [np.zeros(4, bool)] * 2
    res = tiny.forward([seq], tiny.new_cache(1), Execution(k=2), none)
    assert all(r.chosen.shape == (10, 0) for r in res.routing)


# -- bad inputs ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"top_k": 9, "n_experts": 8}, "top_k = 9 exceeds"),
    ({"d_model": 30, "n_heads": 4}, "heads of even width"),
    ({"n_layers": 0}, "n_layers must be a positive integer"),
    ({"vocab": 512}, "vocab must be 256"),
    ({"d_ffn": 200000}, "overflow"),
])
def test_bad_config_is_refused(kwargs, match):
    with pytest.raises(UserError, match=match):
        LMConfig(**kwargs)


@pytest.mark.parametrize("call, match", [
    (lambda m: m.forward([[1, 2]], m.new_cache(2)), "tokens for 1 sequences"),
    (lambda m: m.forward([[], []], m.new_cache(2)), "at least one token"),
    (lambda m: m.forward([[1, 256]], m.new_cache(1)), "integers in"),
    (lambda m: m.forward([[-1]], m.new_cache(1)), "integers in"),
    (lambda m: m.new_cache(17), "1 to 16"),
    (lambda m: m.new_cache(0), "1 to 16"),
    (lambda m: m.forward([np.zeros(300, int)], m.new_cache(1)), "max_seq"),
    (lambda m: m.forward([[1]], m.new_cache(1), Execution(k=3)), "exceeds the model's top_k"),
    (lambda m: Execution(int8=False, expert_bits="draft"), "need the INT8 path"),
    (lambda m: Execution(expert_bits="half"), "unknown expert bits"),
    (lambda m: m.forward([[1]], m.new_cache(1), TARGET, [np.ones(3, bool)] * 2), r"shape \(4,\)"),
], ids=["batch-mismatch", "no-tokens", "token-256", "token-neg", "batch-17", "batch-0", "too-long",
        "k-too-big", "float-draft", "bad-bits", "bad-mask"])
def test_bad_forward_inputs_are_refused(tiny, call, match):
    with pytest.raises(UserError, match=match):
        call(tiny)


def test_weights_roundtrip_and_corrupt_files(tmp_path):
    w = random_weights(TINY, seed=1)
    good = tmp_path / "m.npz"
    save_weights(good, TINY, w, {"steps": 3})
    cfg, loaded, meta = load_weights(good)
    assert cfg == TINY and meta == {"steps": 3}
    np.testing.assert_array_equal(loaded["lm_head"], w["lm_head"].astype(np.float16))

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    missing_key = tmp_path / "missing.npz"
    save_weights(missing_key, TINY, w)
    with zipfile.ZipFile(missing_key) as z:
        kept = {n: z.read(n) for n in z.namelist() if n != "lm_head.npy"}
    with zipfile.ZipFile(missing_key, "w") as z:
        for n, data in kept.items():
            z.writestr(n, data)
    cases = [(tmp_path / "absent.npz", "does not exist"), (garbage, "corrupt"),
             (truncated, "corrupt"), (missing_key, "lacks array 'lm_head'")]
    for path, match in cases:
        with pytest.raises(UserError, match=match):
            MoELM.load(path)


def test_wrong_shape_is_refused():
    w = random_weights(TINY)
    w["layers.0.wq"] = w["layers.0.wq"][:, :-1]
    with pytest.raises(UserError, match="layers.0.wq has shape"):
        MoELM(TINY, w)


# -- the shipped model -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped():
    if not SHIPPED.is_file():
        pytest.fail(f"the shipped model {SHIPPED} is missing")
    return MoELM.load(SHIPPED)


def test_shipped_model_beats_unigram_and_int8_tracks_float(shipped):
    """Held-out bits/byte on 8 windows of 128 bytes (the model card has the full figures)."""
    names = corpus.stdlib_files()
    train, held = corpus.split_files(names)
    if set(held) != set(shipped.meta["heldout_files"]):
        pytest.skip("this Python's standard library differs from the training one")
    data = corpus.load_bytes(held)
    windows = corpus.heldout_windows(data, 8, 129)
    unigram = shipped.meta["unigram_bits_per_byte"]
    f = bits_per_byte(shipped, windows, FLOAT)
    q = bits_per_byte(shipped, windows, TARGET)
    d = bits_per_byte(shipped, windows, Execution(expert_bits="draft"))
    assert f < 0.75 * unigram, f"float {f:.3f} vs unigram {unigram:.3f} bits/byte"
    assert abs(q - f) < 0.05, f"INT8 {q:.3f} vs float {f:.3f} bits/byte"
    assert f < d < unigram, f"draft {d:.3f}, float {f:.3f}, unigram {unigram:.3f} bits/byte"


def test_shipped_weights_fit_the_budget():
    total = sum(p.stat().st_size for p in SHIPPED.parent.glob("*.npz"))
    assert total <= 10 * 2**20, f"shipped weights take {total} bytes"


# -- the torch twin --------------------------------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("which", ["tiny", "shipped", "draft"])
def test_numpy_forward_matches_torch(which, tmp_path):
    """Float64 torch and float64 numpy agree to 1e-9 on the logits (measured ~1e-15)."""
    torch = pytest.importorskip("torch")
    from elmoe3d.sim.lm.train import load_torch_model
    if which == "tiny":
        path = tmp_path / "tiny.npz"
        save_weights(path, TINY, random_weights(TINY, seed=2))
    else:
        path = SHIPPED if which == "shipped" else DRAFT_SHIPPED
        if not path.is_file():
            pytest.fail(f"{path} is missing")
    model, twin = MoELM.load(path), load_torch_model(path)
    tokens = np.random.default_rng(0).integers(0, 256, (3, 48))
    with torch.no_grad():
        ref = twin(torch.as_tensor(tokens))[0].numpy()
    got = np.stack(model.logits(list(tokens), FLOAT))
    err = np.abs(got - ref).max()
    assert err < TOL, f"{which}: max |numpy - torch| = {err:.2e}"
