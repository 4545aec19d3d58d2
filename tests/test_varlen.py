"""Variable-length batches (M1-M3, dM1-dM2 of docs/rnn.md §5), the plain RNN (R1-R2,
dR1-dR2), reverse_sequence (V1) and bidirectional layers (V2, dV2).

* float64 central-difference checks (``check_grads``: relative error <= 1e-6) of every cell
  (RNN, LSTM, GRU in both forms) with lengths that include 0 and T and mix them in one batch,
  on both loop paths (the Python loop of BLAS calls and the Numba time loops, B >= 5);
* the state semantics: hs is zero past each end, hT (cT) is the state after step lengths[b]
  (h0, c0 for length 0), checked against each sequence run alone;
* lengths=None is the plain path; all lengths = T equals it; fast vs reference.py in float32
  and float64 on both paths;
* reverse_sequence against a loop, an involution and its own backward; bidirectional layers;
* bad lengths rejected with a TypeError/ValueError naming them before any kernel runs.
"""

from __future__ import annotations

import numpy as np
import pytest

import numlstm
from numlstm import reference as ref

CELLS = ["rnn", "lstm", "gru_after", "gru_before"]
GATES = {"rnn": 1, "lstm": 4, "gru_after": 3, "gru_before": 3}
DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-11, np.float32: 2e-5}  # as tests/test_reference.py


def force_loop_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """As tests/test_reference.py: "blas" the Python loop, "numba" the time loops (B >= 5)."""
    from numlstm.fast import timeloop

    monkeypatch.setattr(timeloop, "use_time_loop", lambda B, H: path == "numba")


def make_params(rng, cell: str, T: int, B: int, D: int, H: int) -> dict[str, np.ndarray]:
    G = GATES[cell]
    p = {"x": rng.standard_normal((T, B, D)), "h0": 0.5 * rng.standard_normal((B, H))}
    if cell == "lstm":
        p["c0"] = 0.5 * rng.standard_normal((B, H))
    p["Wx"] = rng.standard_normal((D, G * H)) / np.sqrt(D)
    p["Wh"] = rng.standard_normal((H, G * H)) / np.sqrt(H)
    if cell.startswith("gru"):
        p["bx"] = 0.1 * rng.standard_normal(G * H)
        p["bh"] = 0.1 * rng.standard_normal(G * H)
    else:
        p["b"] = 0.1 * rng.standard_normal(G * H)
    return p


def forward(mod, cell: str, p: dict, lengths=None, **kw):
    """(hs, finals, cache) of ``mod`` (numlstm or reference); finals (hT,) or (hT, cT)."""
    if lengths is not None:
        kw["lengths"] = lengths
    if cell == "rnn":
        hs, hT, cache = mod.rnn_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"], **kw)
        return hs, (hT,), cache
    if cell == "lstm":
        hs, hT, cT, cache = mod.lstm_forward(
            p["x"], p["h0"], p["c0"], p["Wx"], p["Wh"], p["b"], 0.3, **kw
        )
        return hs, (hT, cT), cache
    hs, hT, cache = mod.gru_forward(
        p["x"], p["h0"], p["Wx"], p["Wh"], p["bx"], p["bh"], reset_after=cell == "gru_after", **kw
    )
    return hs, (hT,), cache


def backward(mod, cell: str, dhs, dfinals, cache) -> dict[str, np.ndarray]:
    if cell == "rnn":
        names = ["x", "h0", "Wx", "Wh", "b"]
        out = mod.rnn_backward(dhs, *dfinals, cache)
    elif cell == "lstm":
        names = ["x", "h0", "c0", "Wx", "Wh", "b"]
        out = mod.lstm_backward(dhs, *dfinals, cache)
    else:
        names = ["x", "h0", "Wx", "Wh", "bx", "bh"]
        out = mod.gru_backward(dhs, *dfinals, cache)
    return dict(zip(names, out, strict=True))


def mixed_lengths(rng, T: int, B: int) -> np.ndarray:
    """Lengths with a 0, a T and random ones in between (for B >= 2)."""
    n = rng.integers(0, T + 1, size=B)
    n[0], n[-1] = 0, T
    return n


# (T, B, D, H, path): B >= 5 for the Numba loops; T = 1; D != H
GRAD_SHAPES = [
    ((4, 6, 3, 5), "blas"),
    ((4, 6, 3, 5), "numba"),
    ((1, 5, 2, 3), "numba"),
    ((5, 2, 4, 2), "blas"),
    ((3, 1, 2, 3), "blas"),
]
GRAD_IDS = ["T4B6-blas", "T4B6-numba", "T1B5-numba", "T5B2-blas", "T3B1-blas"]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape,path", GRAD_SHAPES, ids=GRAD_IDS)
def test_gradcheck_with_lengths(seed, cell, shape, path, check_grads, monkeypatch):
    force_loop_path(monkeypatch, path)
    T, B, D, H = shape
    rng = np.random.default_rng(seed)
    p = make_params(rng, cell, T, B, D, H)
    lengths = mixed_lengths(rng, T, B) if B > 1 else np.array([rng.integers(0, T + 1)])
    hs, finals, cache = forward(numlstm, cell, p, lengths)
    W = rng.standard_normal(hs.shape)  # loss = <W, hs> + <V, hT> (+ <U, cT>)
    V = [rng.standard_normal(f.shape) for f in finals]

    def loss() -> float:
        hs, finals, _ = forward(numlstm, cell, p, lengths)
        return float((W * hs).sum() + sum((v * f).sum() for v, f in zip(V, finals, strict=True)))

    grads = backward(numlstm, cell, W, V, cache)
    check_grads(f"varlen {cell}", loss, p, grads)
    past_end = np.arange(T)[:, None] >= lengths[None, :]
    assert not grads["x"][past_end].any(), "padding must get zero input gradient (dM1)"


@pytest.mark.parametrize("cell", CELLS)
def test_reference_gradcheck_with_lengths(seed, cell, check_grads):
    """The oracle itself: reference.py's literal M1-M2, dM2-dM1 against central differences."""
    T, B, D, H = 4, 5, 3, 2
    rng = np.random.default_rng(seed)
    p = make_params(rng, cell, T, B, D, H)
    lengths = mixed_lengths(rng, T, B)
    hs, finals, caches = forward(ref, cell, p, lengths)
    W = rng.standard_normal(hs.shape)
    V = [rng.standard_normal(f.shape) for f in finals]

    def loss() -> float:
        hs, finals, _ = forward(ref, cell, p, lengths)
        return float((W * hs).sum() + sum((v * f).sum() for v, f in zip(V, finals, strict=True)))

    check_grads(f"reference varlen {cell}", loss, p, backward(ref, cell, W, V, caches))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("path", ["blas", "numba"])
def test_state_semantics(seed, cell, path, monkeypatch):
    """hs zero past the end; hT (cT) = the state after step lengths[b], = h0 (c0) for 0; the
    real steps equal a run of that sequence alone."""
    force_loop_path(monkeypatch, path)
    T, B, D, H = 5, 6, 3, 4
    rng = np.random.default_rng(seed)
    p = make_params(rng, cell, T, B, D, H)
    lengths = np.array([5, 3, 0, 1, 5, 2])
    hs, finals, _ = forward(numlstm, cell, p, lengths)
    init = [p["h0"]] + ([p["c0"]] if cell == "lstm" else [])
    monkeypatch.undo()  # one sequence alone (B = 1) runs on the BLAS path
    for b, n in enumerate(lengths):
        assert not hs[n:, b].any()
        if n == 0:
            for f, s0 in zip(finals, init, strict=True):
                np.testing.assert_array_equal(f[b], s0[b])
            continue
        one = {k: (v[:n, b : b + 1] if k == "x" else v[b : b + 1] if k in ("h0", "c0") else v)
               for k, v in p.items()}  # fmt: skip
        hs1, finals1, _ = forward(numlstm, cell, one)
        np.testing.assert_allclose(hs[:n, b], hs1[:, 0], rtol=1e-12, atol=1e-13)
        for f, f1 in zip(finals, finals1, strict=True):
            np.testing.assert_allclose(f[b], f1[0], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("path", ["blas", "numba"])
def test_none_and_full_lengths(cell, path, monkeypatch):
    """lengths=None is the call without the keyword, bit for bit; all lengths T equal it."""
    force_loop_path(monkeypatch, path)
    T, B, D, H = 4, 6, 3, 5
    rng = np.random.default_rng(7)
    p = make_params(rng, cell, T, B, D, H)
    dhs = rng.standard_normal((T, B, H))
    dfin = [rng.standard_normal((B, H)) for _ in range(2 if cell == "lstm" else 1)]
    plain = forward(numlstm, cell, p)
    plain_g = backward(numlstm, cell, dhs, dfin, plain[2])
    for lengths in (None, np.full(B, T), [T] * B):
        if lengths is None:
            out = forward(numlstm, cell, p, lengths=None)
        else:
            out = forward(numlstm, cell, p, lengths)
        grads = backward(numlstm, cell, dhs, dfin, out[2])
        exact = lengths is None
        for a, b in zip([out[0], *out[1]], [plain[0], *plain[1]], strict=True):
            (np.testing.assert_array_equal if exact else _close)(a, b)
        for k in grads:
            (np.testing.assert_array_equal if exact else _close)(grads[k], plain_g[k])


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("path", ["blas", "numba"])
def test_dhs_past_the_end_has_no_effect(cell, path, monkeypatch):
    force_loop_path(monkeypatch, path)
    T, B, D, H = 5, 6, 2, 3
    rng = np.random.default_rng(3)
    p = make_params(rng, cell, T, B, D, H)
    lengths = np.array([2, 5, 0, 4, 1, 3])
    dhs = rng.standard_normal((T, B, H))
    dfin = [rng.standard_normal((B, H)) for _ in range(2 if cell == "lstm" else 1)]
    past_end = np.arange(T)[:, None] >= lengths[None, :]
    clean = np.where(past_end[:, :, None], 0.0, dhs)
    g1 = backward(numlstm, cell, dhs, dfin, forward(numlstm, cell, p, lengths)[2])
    g2 = backward(numlstm, cell, clean, dfin, forward(numlstm, cell, p, lengths)[2])
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])
    # length 0: the final-state gradient is the initial-state gradient, untouched (M3)
    np.testing.assert_array_equal(g1["h0"][2], dfin[0][2])


FAST_SHAPES = [((4, 6, 3, 5), "blas"), ((4, 6, 3, 5), "numba"), ((3, 2, 2, 3), "blas")]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape,path", FAST_SHAPES, ids=["blas", "numba", "B2"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_fast_matches_reference(seed, cell, shape, path, dtype, monkeypatch):
    force_loop_path(monkeypatch, path)
    T, B, D, H = shape
    rng = np.random.default_rng(seed)
    p = make_params(rng, cell, T, B, D, H)
    lengths = mixed_lengths(rng, T, B)
    dhs = rng.standard_normal((T, B, H))
    dfin = [rng.standard_normal((B, H)) for _ in range(2 if cell == "lstm" else 1)]
    pf = {k: v.astype(dtype) for k, v in p.items()}
    pr = {k: v.astype(dtype).astype(np.float64) for k, v in p.items()}
    fast = forward(numlstm, cell, pf, lengths)
    want = forward(ref, cell, pr, lengths)
    for a, b in zip([fast[0], *fast[1]], [want[0], *want[1]], strict=True):
        assert a.dtype == dtype
        _assert_rel(a, b, dtype)
    gf = backward(numlstm, cell, dhs.astype(dtype), [d.astype(dtype) for d in dfin], fast[2])
    gr = backward(ref, cell, dhs.astype(dtype).astype(np.float64),
                  [d.astype(dtype).astype(np.float64) for d in dfin], want[2])  # fmt: skip
    for k in gf:
        assert gf[k].dtype == dtype, k
        _assert_rel(gf[k], gr[k], dtype, k)


def _assert_rel(got, want, dtype, what=""):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    scale = np.abs(want).max()
    assert scale > 0
    assert np.abs(got - want).max() / scale <= TOL[dtype], what


# H = 1 only on the BLAS path: use_time_loop(B, 1) is False (matmul_nt needs H >= 2).
H1_SHAPES = [((3, 1, 2, 1), "blas"), ((2, 5, 2, 1), "blas")]
H1_IDS = GRAD_IDS + ["H1-B1-blas", "H1-B5-blas"]


@pytest.mark.parametrize("cell", ["rnn"])
@pytest.mark.parametrize("shape,path", GRAD_SHAPES + H1_SHAPES, ids=H1_IDS)
def test_rnn_gradcheck_without_lengths(seed, cell, shape, path, check_grads, monkeypatch):
    """The plain RNN on its own (R1-R2, dR2-dR1), with a gradient into hT."""
    force_loop_path(monkeypatch, path)
    T, B, D, H = shape
    rng = np.random.default_rng(seed)
    p = make_params(rng, cell, T, B, D, H)
    hs, (hT,), cache = forward(numlstm, cell, p)
    W, V = rng.standard_normal(hs.shape), rng.standard_normal(hT.shape)

    def loss() -> float:
        hs, (hT,), _ = forward(numlstm, cell, p)
        return float((W * hs).sum() + (V * hT).sum())

    check_grads("rnn", loss, p, backward(numlstm, cell, W, [V], cache))


def test_rnn_matches_reference_without_lengths(seed, monkeypatch):
    for path, B in [("blas", 1), ("blas", 6), ("numba", 6)]:
        force_loop_path(monkeypatch, path)
        rng = np.random.default_rng(seed)
        p = make_params(rng, "rnn", 4, B, 3, 5)
        fast, want = forward(numlstm, "rnn", p), forward(ref, "rnn", p)
        _assert_rel(fast[0], want[0], np.float64)
        np.testing.assert_array_equal(fast[1][0], fast[0][-1])
        dhs, dhT = rng.standard_normal(fast[0].shape), rng.standard_normal(fast[1][0].shape)
        gf = backward(numlstm, "rnn", dhs, [dhT], fast[2])
        gr = backward(ref, "rnn", dhs, [dhT], want[2])
        for k in gf:
            _assert_rel(gf[k], gr[k], np.float64, k)


# --------------------------------------------------------------------------------------------
# reverse_sequence (V1, dV1)
# --------------------------------------------------------------------------------------------


def test_reverse_sequence_small_example():
    x = np.arange(12).reshape(4, 3)
    got = numlstm.reverse_sequence(x, np.array([4, 2, 0]))
    np.testing.assert_array_equal(got, [[9, 4, 2], [6, 1, 5], [3, 7, 8], [0, 10, 11]])


@pytest.mark.parametrize("shape", [(5, 4), (5, 4, 3), (1, 3, 2, 2), (6, 1, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.bool_])
def test_reverse_sequence_loop_involution_and_backward(seed, shape, dtype):
    rng = np.random.default_rng(seed)
    T, B = shape[:2]
    x = (10 * rng.standard_normal(shape)).astype(dtype)
    lengths = rng.integers(0, T + 1, size=B)
    y = numlstm.reverse_sequence(x, lengths)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, ref.reverse_sequence(x, lengths))
    np.testing.assert_array_equal(numlstm.reverse_sequence(y, lengths), x)  # an involution
    # (dV1) its own backward: <V1(x), g> = <x, V1(g)> for every x, g
    if dtype in (np.float32, np.float64):
        g = rng.standard_normal(shape)
        lhs = float((numlstm.reverse_sequence(x, lengths) * g).sum())
        rhs = float((x * numlstm.reverse_sequence(g, lengths)).sum())
        assert abs(lhs - rhs) <= 1e-4 * (1 + abs(lhs))


def test_reverse_sequence_full_lengths_is_a_flip():
    x = np.random.default_rng(0).standard_normal((5, 3, 2))
    np.testing.assert_array_equal(numlstm.reverse_sequence(x, np.full(3, 5)), x[::-1])


# --------------------------------------------------------------------------------------------
# Bidirectional layers (V2, dV2)
# --------------------------------------------------------------------------------------------


def _bi_params(rng, cell, T, B, D, H):
    pf, pb = make_params(rng, cell, T, B, D, H), make_params(rng, cell, T, B, D, H)
    x = pf.pop("x")
    pb.pop("x")
    return x, pf, pb


def _bi_options(cell):
    if cell == "lstm":
        return {"forget_bias": 0.3}
    if cell.startswith("gru"):
        return {"reset_after": cell == "gru_after"}
    return {}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("path,B,with_lengths", [("blas", 3, True), ("numba", 5, True),
                                                 ("blas", 2, False)])  # fmt: skip
def test_bidirectional_gradcheck(seed, cell, path, B, with_lengths, check_grads, monkeypatch):
    force_loop_path(monkeypatch, path)
    T, D, H = 4, 3, 2
    rng = np.random.default_rng(seed)
    x, pf, pb = _bi_params(rng, cell, T, B, D, H)
    lengths = mixed_lengths(rng, T, B) if with_lengths else None
    name = cell.split("_")[0]
    opts = _bi_options(cell)
    hs, _, _, cache = numlstm.bidirectional_forward(
        name, x, list(pf.values()), list(pb.values()), lengths, **opts
    )
    assert hs.shape == (T, B, 2 * H)
    W = rng.standard_normal(hs.shape)
    params = (
        {"x": x} | {f"fw.{k}": v for k, v in pf.items()} | {f"bw.{k}": v for k, v in pb.items()}
    )

    def loss() -> float:
        hs, _, _, _ = numlstm.bidirectional_forward(
            name, x, list(pf.values()), list(pb.values()), lengths, **opts
        )
        return float((W * hs).sum())

    dx, gf, gb = numlstm.bidirectional_backward(W, cache)
    grads = {"x": dx} | {f"fw.{k}": g for k, g in zip(pf, gf, strict=True)}
    grads |= {f"bw.{k}": g for k, g in zip(pb, gb, strict=True)}
    check_grads(f"bidirectional {cell}", loss, params, grads)
    # against reference.py, and the composition written out as in docs/rnn.md §6
    want = ref.bidirectional_forward(name, x, list(pf.values()), list(pb.values()), lengths, **opts)
    _assert_rel(hs, want[0], np.float64)
    rdx, rgf, rgb = ref.bidirectional_backward(W, want[3])
    _assert_rel(dx, rdx, np.float64)
    for a, b in zip(gf + gb, rgf + rgb, strict=True):
        _assert_rel(a, b, np.float64)
    n = np.full(B, T) if lengths is None else lengths
    fw = forward(numlstm, cell, {"x": x, **pf}, lengths)[0]
    bw = forward(numlstm, cell, {"x": numlstm.reverse_sequence(x, n), **pb}, lengths)[0]
    by_hand = np.concatenate([fw, numlstm.reverse_sequence(bw, n)], axis=2)
    np.testing.assert_array_equal(hs, by_hand)


# --------------------------------------------------------------------------------------------
# Bad lengths: rejected, naming the argument, before any kernel runs
# --------------------------------------------------------------------------------------------

BAD_LENGTHS = [
    (np.array([1.0, 2.0, 3.0, 1.0, 2.0, 3.0]), TypeError, "integers"),
    (np.array([True, False, True, True, True, True]), TypeError, "integers"),
    (np.array(["1", "2", "3", "1", "2", "3"]), TypeError, "integers"),
    ([1.5, 2, 3, 1, 2, 3], TypeError, "integers"),
    ("123456", TypeError, "lengths"),
    (np.array([1, 2, 3]), ValueError, "shape"),
    (np.ones((6, 1), np.int64), ValueError, "shape"),
    (np.array(3), ValueError, "shape"),
    (np.array([1, 2, -1, 1, 2, 3]), ValueError, r"lengths\[2\] = -1"),
    (np.array([1, 2, 3, 1, 5, 3]), ValueError, r"lengths\[4\] = 5"),
]
BAD_IDS = ["float", "bool", "str", "float-list", "string", "short", "2d", "0d", "neg", "gtT"]


@pytest.mark.usefixtures("no_kernels")
@pytest.mark.parametrize("bad,err,match", BAD_LENGTHS, ids=BAD_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_bad_lengths_rejected_before_kernels(cell, bad, err, match):
    rng = np.random.default_rng(0)
    p = make_params(rng, cell, 4, 6, 3, 2)
    with pytest.raises(err, match=match):
        forward(numlstm, cell, p, bad)
    x, pf, pb = _bi_params(rng, cell, 4, 6, 3, 2)
    with pytest.raises(err, match=match):
        numlstm.bidirectional_forward(
            cell.split("_")[0], x, list(pf.values()), list(pb.values()), bad, **_bi_options(cell)
        )


@pytest.mark.parametrize("bad,err,match", BAD_LENGTHS, ids=BAD_IDS)
def test_bad_lengths_rejected_by_reverse_sequence(bad, err, match):
    with pytest.raises(err, match=match):
        numlstm.reverse_sequence(np.zeros((4, 6, 2)), bad)


@pytest.mark.usefixtures("no_kernels")
def test_other_bad_input_named():
    with pytest.raises(ValueError, match="x must be time-major"):
        numlstm.reverse_sequence(np.zeros(4), np.array([1]))
    with pytest.raises(TypeError, match="x must be a numpy array"):
        numlstm.reverse_sequence([[1, 2]], np.array([1, 1]))
    rng = np.random.default_rng(0)
    x, pf, pb = _bi_params(rng, "rnn", 3, 5, 2, 2)
    with pytest.raises(ValueError, match="cell must be one of"):
        numlstm.bidirectional_forward("elman", x, list(pf.values()), list(pb.values()))
    p = make_params(rng, "rnn", 3, 5, 2, 2)
    with pytest.raises(ValueError, match=r"Wh must have shape \(H, H\)"):
        numlstm.rnn_forward(p["x"], p["h0"], p["Wx"], np.zeros((2, 3)), p["b"])
    with pytest.raises(TypeError, match="RNNCache"):
        numlstm.rnn_backward(np.zeros((3, 5, 2)), np.zeros((5, 2)), object())
    with pytest.raises(TypeError, match="BidirectionalCache"):
        numlstm.bidirectional_backward(np.zeros((3, 5, 4)), object())
