"""Tests for numlstm.generate: sampling rules, generation, words <-> ids, saved models, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from numlstm import LanguageModel
from numlstm.generate import (
    _nucleus,
    decode,
    encode,
    generate,
    generate_main,
    load_model,
    sample_next,
    save_model,
)
from numlstm.io.checkpoint import CheckpointError, save_checkpoint

WORDS = ["<unk>", "<eos>", "the", "company", "said", "it", "will", "buy", "a", "stake", "in", "n"]
W2I = {w: i for i, w in enumerate(WORDS)}


def tiny_model(cell: str = "lstm", dtype=np.float32, seed: int = 0) -> LanguageModel:
    # init_scale 1: a random model with peaked, context-dependent predictions
    return LanguageModel(len(WORDS), 8, 2, cell=cell, init_scale=1.0, dtype=dtype, seed=seed)


def softmax(z: np.ndarray, T: float = 1.0) -> np.ndarray:
    e = np.exp((z - z.max()) / T)
    return e / e.sum()


# ----------------------------------------------------------------------------------------------
# sample_next
# ----------------------------------------------------------------------------------------------


def test_zero_and_tiny_temperature_are_greedy():
    rng = np.random.default_rng(0)
    for _ in range(300):
        z = rng.standard_normal(50) * 3
        assert sample_next(z, rng, temperature=0) == np.argmax(z)
        assert sample_next(z, rng, temperature=1e-9) == np.argmax(z)
        assert sample_next(z.astype(np.float32), rng, temperature=0, top_k=3) == np.argmax(z)


def test_greedy_ties_go_to_lower_id():
    assert sample_next(np.array([1.0, 3.0, 3.0]), np.random.default_rng(0), temperature=0) == 1


@pytest.mark.parametrize("T", [1.0, 5.0])  # T = 5 pushes mass into the tail
def test_top_k_never_leaves_the_top_k(T):
    rng = np.random.default_rng(1)
    for _ in range(40):
        z = rng.standard_normal(30)
        for k in (1, 2, 5):
            allowed = set(np.argsort(-z)[:k].tolist())
            seen = {sample_next(z, rng, temperature=T, top_k=k) for _ in range(100)}
            assert seen <= allowed
    assert {sample_next(z, rng, top_k=5) for _ in range(500)} == allowed  # all k can occur


def test_top_k_ties_are_deterministic():
    z = np.array([0.0, 1.0, 1.0, 1.0, 0.0])
    rng = np.random.default_rng(0)
    assert {sample_next(z, rng, top_k=2) for _ in range(300)} == {1, 2}


def nucleus_reference(z: np.ndarray, T: float, top_p: float) -> set[int]:
    p = softmax(z, T)
    order = np.argsort(-p, kind="stable")
    n = int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1
    return set(order[:n].tolist())


@pytest.mark.parametrize("T", [0.7, 3.0])
def test_top_p_never_leaves_the_nucleus(T):
    rng = np.random.default_rng(2)
    for _ in range(40):
        z = rng.standard_normal(40) * 2
        for top_p in (0.05, 0.5, 0.9):
            allowed = nucleus_reference(z, T, top_p)
            seen = {sample_next(z, rng, temperature=T, top_p=top_p) for _ in range(100)}
            assert seen <= allowed
    z = np.array([5.0, 0.0, 0.0])
    assert {sample_next(z, rng, top_p=1e-6) for _ in range(50)} == {0}  # at least one id
    assert {sample_next(np.zeros(4), rng, top_p=1.0) for _ in range(200)} == {0, 1, 2, 3}


def test_nucleus_widening_matches_a_full_sort():
    rng = np.random.default_rng(3)
    for scale in (0.01, 1.0, 4.0):  # flat (nucleus of thousands) to peaked (a handful)
        p = softmax(rng.standard_normal(5000) * scale)
        for top_p in (0.3, 0.9, 0.999):
            order = np.argsort(-p, kind="stable")
            n = int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1
            np.testing.assert_array_equal(_nucleus(p, top_p), order[:n])


def test_top_k_then_top_p():
    z = np.log(np.array([0.4, 0.3, 0.2, 0.1]))
    rng = np.random.default_rng(4)
    # top-2 renormalised: 4/7, 3/7 -> a nucleus of 0.5 holds only id 0
    assert {sample_next(z, rng, top_k=2, top_p=0.5) for _ in range(200)} == {0}
    assert {sample_next(z, rng, top_k=3, top_p=0.95) for _ in range(500)} == {0, 1, 2}


@pytest.mark.parametrize(("T", "top_k"), [(1.0, None), (0.7, None), (2.0, None), (1.0, 3)])
def test_frequencies_match_softmax(T, top_k):
    z = np.array([1.0, 0.5, 0.0, -0.5, -1.0, 2.0])
    expected = softmax(z, T)
    if top_k is not None:
        expected[np.argsort(-expected)[top_k:]] = 0
        expected /= expected.sum()
    rng = np.random.default_rng(5)
    n = 30_000
    counts = np.bincount(
        [sample_next(z, rng, temperature=T, top_k=top_k) for _ in range(n)], minlength=z.size
    )
    keep = expected > 0
    assert counts[~keep].sum() == 0
    chi2 = (((counts - n * expected) ** 2)[keep] / (n * expected[keep])).sum()
    assert chi2 < 25, (chi2, counts / n, expected)  # df <= 5: p(chi2 > 25) < 2e-4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": -1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
def test_bad_sampling_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_next(np.zeros(3), np.random.default_rng(0), **kwargs)


@pytest.mark.parametrize(
    "z",
    [
        np.zeros((2, 3)),
        np.array([]),
        np.array([0.0, np.nan]),
        np.array([0.0, np.inf]),
        np.full(3, -np.inf),
    ],
)
def test_bad_logits(z):
    with pytest.raises(ValueError, match="logits"):
        sample_next(z, np.random.default_rng(0))


# ----------------------------------------------------------------------------------------------
# generate
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_generate_is_deterministic_per_seed(cell):
    m, prime = tiny_model(cell), [2, 3, 4]
    a = generate(m, prime, 40, seed=7)
    assert a == generate(m, prime, 40, seed=7)
    assert a != generate(m, prime, 40, seed=8)
    assert len(a) == 40 and all(0 <= i < len(WORDS) for i in a)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("kwargs", [{}, {"temperature": 0.5, "top_k": 4}, {"top_p": 0.8}])
def test_fast_path_matches_model_logits(cell, kwargs):
    """The one-token stepper must give what model.logits gives, step by step."""
    m, prime = tiny_model(cell), [2, 3, 4]
    rng = np.random.default_rng(11)
    logits, state = m.logits(np.array([prime]), m.init_state(1))
    expected = []
    for _ in range(30):
        expected.append(sample_next(logits[0, -1], rng, **kwargs))
        logits, state = m.logits(np.array([[expected[-1]]]), state)
    assert generate(m, prime, 30, seed=11, **kwargs) == expected


def test_stop_id_is_included_and_ends_generation():
    m, prime = tiny_model(), [2]
    free = generate(m, prime, 60, seed=3)
    stop = free[5]
    first = free.index(stop)
    assert generate(m, prime, 60, seed=3, stop_id=stop) == free[: first + 1]


def test_generate_arguments():
    m = tiny_model()
    assert generate(m, [2], 0, seed=0) == []
    with pytest.raises(ValueError, match="at least one"):
        generate(m, [], 5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(m, [2, 99], 5)
    with pytest.raises(ValueError, match="stop_id"):
        generate(m, [2], 5, stop_id=len(WORDS))
    with pytest.raises(ValueError, match="num_words"):
        generate(m, [2], -1)


# ----------------------------------------------------------------------------------------------
# encode / decode
# ----------------------------------------------------------------------------------------------


def test_encode_known_words():
    assert encode("the company  said\n", W2I) == [2, 3, 4]


def test_encode_unknown_word_warns_and_maps_to_unk():
    with pytest.warns(UserWarning, match="'zebra'"):
        assert encode("the zebra said", W2I) == [2, 0, 4]


def test_encode_unknown_word_error():
    with pytest.raises(ValueError, match="'zebra'"):
        encode("the zebra said", W2I, on_unknown="error")
    with pytest.raises(ValueError, match="no '<unk>' token"):
        encode("zebra", {"the": 0})


def test_decode_eos_is_a_newline():
    assert decode([2, 3, 1, 5, 6], WORDS) == "the company\nit will"
    assert decode(np.array([2, 1]), WORDS) == "the\n"
    with pytest.raises(ValueError, match="outside"):
        decode([-1], WORDS)


# ----------------------------------------------------------------------------------------------
# save_model / load_model
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "dtype"), [("lstm", np.float32), ("gru", np.float64), ("rnn", np.float32)]
)
def test_save_load_round_trip(tmp_path, cell, dtype):
    m = tiny_model(cell, dtype)
    path = save_model(tmp_path / "m.npz", m, WORDS, extra_meta={"valid_ppl": 123.4})
    m2, vocab, meta = load_model(path)
    assert vocab == WORDS and meta["valid_ppl"] == 123.4 and m2.config() == m.config()
    assert m2.params.keys() == m.params.keys()
    for k in m.params:
        np.testing.assert_array_equal(m2.params[k], m.params[k])
        assert m2.params[k].dtype == dtype
    kw = {"temperature": 0.9, "top_k": 5, "seed": 42}
    assert generate(m2, [2, 3], 50, **kw) == generate(m, [2, 3], 50, **kw)


def test_save_model_rejects_bad_input(tmp_path):
    m = tiny_model()
    with pytest.raises(ValueError, match="vocab_size"):
        save_model(tmp_path / "m.npz", m, WORDS[:-1])
    with pytest.raises(ValueError, match="reserved"):
        save_model(tmp_path / "m.npz", m, WORDS, extra_meta={"vocab": []})


def test_load_model_corrupt_files(tmp_path):
    path = save_model(tmp_path / "m.npz", tiny_model(), WORDS)
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "cut.npz")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "flip.npz")
    with pytest.raises(CheckpointError, match="no such"):
        load_model(tmp_path / "missing.npz")


def test_load_model_incompatible_contents(tmp_path):
    m = tiny_model()
    save_checkpoint(tmp_path / "plain.npz", {"a": np.zeros(3)}, {"step": 1})
    with pytest.raises(CheckpointError, match="not a saved language model"):
        load_model(tmp_path / "plain.npz")
    meta = {"kind": "numlstm-language-model", "model": m.config(), "vocab": WORDS}
    params = dict(m.params, softmax_b=np.zeros(3, np.float32))
    save_checkpoint(tmp_path / "shape.npz", params, meta)
    with pytest.raises(CheckpointError, match="'softmax_b'"):
        load_model(tmp_path / "shape.npz")
    params = {k: v for k, v in m.params.items() if k != "embedding"}
    save_checkpoint(tmp_path / "missing.npz", params, meta)
    with pytest.raises(CheckpointError, match="embedding"):
        load_model(tmp_path / "missing.npz")


# ----------------------------------------------------------------------------------------------
# generate_main (python -m numlstm generate)
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def ckpt(tmp_path):
    return str(save_model(tmp_path / "m.npz", tiny_model(), WORDS))


def test_cli_prints_prime_and_continuation(ckpt, capsys):
    argv = [
        "--checkpoint",
        ckpt,
        "--prime",
        "the company said",
        "--words",
        "12",
        "--temperature",
        "0.8",
        "--top-k",
        "5",
        "--top-p",
        "0.9",
        "--seed",
        "3",
    ]
    assert generate_main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("the company said")
    assert len(out.split()) > 3
    assert generate_main(argv) == 0
    assert capsys.readouterr().out == out  # same seed, same text


def test_cli_stop_at_eos(ckpt, capsys):
    argv = ["--checkpoint", ckpt, "--prime", "the", "--words", "500", "--seed", "0"]
    assert generate_main(argv) == 0
    free = capsys.readouterr().out
    assert "\n" in free.rstrip("\n")  # <eos> is generated and printed as a newline...
    assert generate_main([*argv, "--stop-at-eos"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == free[: free.index("\n")]  # ...and stops it


def test_cli_unknown_prime_word(ckpt, capsys):
    assert generate_main(["--checkpoint", ckpt, "--prime", "the zebra", "--seed", "0"]) == 0
    captured = capsys.readouterr()
    assert "'zebra'" in captured.err and captured.out.startswith("the <unk>")
    assert generate_main(["--checkpoint", ckpt, "--prime", "the zebra", "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("numlstm generate: error:") and "'zebra'" in err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--checkpoint", "{missing}", "--prime", "the"], "no such checkpoint"),
        (["--checkpoint", "{ckpt}", "--prime", "the", "--top-p", "2"], "top_p"),
        (["--checkpoint", "{ckpt}", "--prime", "   "], "at least one"),
        (["--prime", "the"], "--checkpoint"),
    ],
)
def test_cli_errors_exit_2(ckpt, tmp_path, capsys, argv, match):
    argv = [a.format(ckpt=ckpt, missing=tmp_path / "nope.npz") for a in argv]
    assert generate_main(argv) == 2
    captured = capsys.readouterr()
    assert match in captured.err and captured.out == ""


def test_cli_help(capsys):
    assert generate_main(["--help"]) == 0
    assert "numlstm generate" in capsys.readouterr().out
