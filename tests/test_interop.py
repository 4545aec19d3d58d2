"""numlstm.interop: PyTorch's and TensorFlow 1's cell weights run in numlstm's layers.

PyTorch (when installed) is the oracle for nn.LSTM (with and without proj_size), nn.GRU and
nn.RNN, forward and backward, in float64. TensorFlow is not a dependency: its TF1 cells'
documented equations are written out below in plain NumPy (concat([x, h]) @ kernel + bias,
blocks i, j, f, o, ...) and are the oracle for ``from_tf_*``.
"""

from __future__ import annotations

import numpy as np
import pytest

import numlstm
from numlstm import interop

T, B, D, H, P = 5, 3, 4, 6, 3


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


# --------------------------------------------------------------------------------------------
# PyTorch


@pytest.fixture
def torch():
    return pytest.importorskip(
        "torch", reason="torch is not installed: the PyTorch comparisons need it (optional)"
    )


def _np(t):
    return t.detach().numpy()


def _inputs(torch, seed, h_width, c_width=None):
    rng = _rng(seed)
    x = rng.standard_normal((T, B, D))
    h0 = rng.standard_normal((B, h_width)) * 0.5
    c0 = None if c_width is None else rng.standard_normal((B, c_width)) * 0.5
    G = rng.standard_normal((T, B, h_width))
    tt = {k: None if v is None else torch.tensor(v) for k, v in dict(x=x, h0=h0, c0=c0).items()}
    return x, h0, c0, G, tt


def _perturb(torch, module, seed):
    """Parameters not at PyTorch's init scale, so that every gate and the biases matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.4)


@pytest.mark.parametrize("proj", [0, P])
def test_torch_lstm_forward_and_backward(torch, proj):
    m = torch.nn.LSTM(D, H, proj_size=proj).double()
    _perturb(torch, m, 1)
    width = proj or H
    x, h0, c0, G, tt = _inputs(torch, 2, width, H)
    out, (hT, cT) = m(tt["x"], (tt["h0"][None], tt["c0"][None]))
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    w = interop.from_torch_lstm(
        sd["weight_ih_l0"], sd["weight_hh_l0"], sd["bias_ih_l0"], sd["bias_hh_l0"],
        sd.get("weight_hr_l0"),
    )  # fmt: skip
    assert (w["W_proj"] is None) == (proj == 0)
    hs, nhT, ncT, cache = numlstm.lstmp_forward(
        x, h0, c0, w["Wx"], w["Wh"], w["b"], W_proj=w["W_proj"]
    )
    np.testing.assert_allclose(hs, _np(out), rtol=0, atol=1e-12)
    np.testing.assert_allclose(nhT, _np(hT)[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ncT, _np(cT)[0], rtol=0, atol=1e-12)

    # Backward: d sum(out * G) w.r.t. every weight, numlstm's mapped back to PyTorch's layout.
    (out * torch.tensor(G)).sum().backward()
    zero = np.zeros((B, width))
    grads = numlstm.lstmp_backward(G, zero, np.zeros((B, H)), cache)
    dWx, dWh, db, dW_proj = grads[3], grads[4], grads[5], grads[7]
    back = interop.to_torch_lstm(dWx, dWh, db, dW_proj)
    named = dict(m.named_parameters())
    for key in ("weight_ih", "weight_hh", "bias_ih") + (("weight_hr",) if proj else ()):
        np.testing.assert_allclose(back[key], _np(named[f"{key}_l0"].grad), rtol=0, atol=1e-10)
    # The two biases enter as a sum: PyTorch gives them the same gradient, numlstm's db.
    np.testing.assert_allclose(db, _np(named["bias_hh_l0"].grad), rtol=0, atol=1e-10)

    # Without projection, the plain lstm_forward takes the same dict.
    if not proj:
        hs2, *_ = numlstm.lstm_forward(x, h0, c0, w["Wx"], w["Wh"], w["b"])
        np.testing.assert_allclose(hs2, _np(out), rtol=0, atol=1e-12)


def test_torch_lstm_round_trip_and_no_bias(torch):
    m = torch.nn.LSTM(D, H, bias=False, proj_size=P).double()
    _perturb(torch, m, 3)
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    w = interop.from_torch_lstm(
        sd["weight_ih_l0"], sd["weight_hh_l0"], weight_hr=sd["weight_hr_l0"]
    )
    assert not w["b"].any()
    back = interop.to_torch_lstm(w["Wx"], w["Wh"], w["b"], w["W_proj"])
    for key in ("weight_ih", "weight_hh", "weight_hr"):
        np.testing.assert_array_equal(back[key], sd[f"{key}_l0"])
    x, h0, c0, _, tt = _inputs(torch, 4, P, H)
    out, _ = m(tt["x"], (tt["h0"][None], tt["c0"][None]))
    hs, *_ = numlstm.lstmp_forward(x, h0, c0, w["Wx"], w["Wh"], w["b"], W_proj=w["W_proj"])
    np.testing.assert_allclose(hs, _np(out), rtol=0, atol=1e-12)


def test_torch_gru_forward_and_backward(torch):
    m = torch.nn.GRU(D, H).double()
    _perturb(torch, m, 5)
    x, h0, _, G, tt = _inputs(torch, 6, H)
    out, hT = m(tt["x"], tt["h0"][None])
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    w = interop.from_torch_gru(
        *(sd[f"{k}_l0"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    )
    hs, nhT, cache = numlstm.gru_forward(
        x, h0, w["Wx"], w["Wh"], w["bx"], w["bh"], reset_after=True
    )
    np.testing.assert_allclose(hs, _np(out), rtol=0, atol=1e-12)
    np.testing.assert_allclose(nhT, _np(hT)[0], rtol=0, atol=1e-12)
    # The other GRU form is a different model: the same weights give other outputs.
    hs_cho, *_ = numlstm.gru_forward(x, h0, w["Wx"], w["Wh"], w["bx"], w["bh"], reset_after=False)
    assert np.abs(hs_cho - _np(out)).max() > 1e-3

    (out * torch.tensor(G)).sum().backward()
    _, _, dWx, dWh, dbx, dbh = numlstm.gru_backward(G, np.zeros((B, H)), cache)
    back = interop.to_torch_gru(dWx, dWh, dbx, dbh)
    for key, p in m.named_parameters():
        np.testing.assert_allclose(back[key.removesuffix("_l0")], _np(p.grad), rtol=0, atol=1e-10)


def test_torch_rnn_forward_and_backward(torch):
    m = torch.nn.RNN(D, H, nonlinearity="tanh").double()
    _perturb(torch, m, 7)
    x, h0, _, G, tt = _inputs(torch, 8, H)
    out, hT = m(tt["x"], tt["h0"][None])
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    w = interop.from_torch_rnn(
        *(sd[f"{k}_l0"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    )
    hs, nhT, cache = numlstm.rnn_forward(x, h0, w["Wx"], w["Wh"], w["b"])
    np.testing.assert_allclose(hs, _np(out), rtol=0, atol=1e-12)
    np.testing.assert_allclose(nhT, _np(hT)[0], rtol=0, atol=1e-12)

    (out * torch.tensor(G)).sum().backward()
    _, _, dWx, dWh, db = numlstm.rnn_backward(G, np.zeros((B, H)), cache)
    grads = {k.removesuffix("_l0"): _np(p.grad) for k, p in m.named_parameters()}
    np.testing.assert_allclose(dWx.T, grads["weight_ih"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(dWh.T, grads["weight_hh"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(db, grads["bias_ih"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(db, grads["bias_hh"], rtol=0, atol=1e-10)


def test_torch_tensors_are_accepted_directly(torch):
    m = torch.nn.GRU(D, H).double()
    w = interop.from_torch_gru(m.weight_ih_l0.detach(), m.weight_hh_l0.detach(),
                               m.bias_ih_l0.detach(), m.bias_hh_l0.detach())  # fmt: skip
    np.testing.assert_array_equal(w["Wx"], _np(m.weight_ih_l0).T)


def test_the_package_never_imports_torch():
    import subprocess
    import sys

    code = "import sys, numlstm, numlstm.interop; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------
# TensorFlow 1, written out from its documented cell equations (tf.nn.rnn_cell, TF 1.15).


def tf1_lstm_cell(
    x, state, kernel, bias, *, forget_bias=1.0, w_i_diag=None, w_f_diag=None, w_o_diag=None,
    cell_clip=None, projection_kernel=None, proj_clip=None,
):  # fmt: skip
    """One step of TF1 LSTMCell (BasicLSTMCell: no peepholes, clip or projection)."""
    c_prev, m_prev = state
    lstm_matrix = np.concatenate([x, m_prev], axis=1) @ kernel + bias
    i, j, f, o = np.split(lstm_matrix, 4, axis=1)
    if w_i_diag is not None:
        c = _sigmoid(f + forget_bias + w_f_diag * c_prev) * c_prev + _sigmoid(
            i + w_i_diag * c_prev
        ) * np.tanh(j)
    else:
        c = _sigmoid(f + forget_bias) * c_prev + _sigmoid(i) * np.tanh(j)
    if cell_clip is not None:
        c = np.clip(c, -cell_clip, cell_clip)
    if w_o_diag is not None:
        m = _sigmoid(o + w_o_diag * c) * np.tanh(c)
    else:
        m = _sigmoid(o) * np.tanh(c)
    if projection_kernel is not None:
        m = m @ projection_kernel
        if proj_clip is not None:
            m = np.clip(m, -proj_clip, proj_clip)
    return m, (c, m)


def tf1_gru_cell(x, h, gate_kernel, gate_bias, candidate_kernel, candidate_bias):
    value = _sigmoid(np.concatenate([x, h], 1) @ gate_kernel + gate_bias)
    r, u = np.split(value, 2, axis=1)
    c = np.tanh(np.concatenate([x, r * h], 1) @ candidate_kernel + candidate_bias)
    return u * h + (1 - u) * c


def tf1_rnn_cell(x, h, kernel, bias):
    return np.tanh(np.concatenate([x, h], 1) @ kernel + bias)


def _unroll(step, x, state):
    outs = []
    for t in range(x.shape[0]):
        out, state = step(x[t], state)
        outs.append(out)
    return np.stack(outs), state


@pytest.mark.parametrize(
    "peep, clip, proj, forget_bias",
    [(False, None, False, 1.0), (True, None, False, 1.0), (True, 0.7, True, 0.5),
     (False, None, True, 0.0)],
)  # fmt: skip
def test_tf_lstm_cell_matches_the_tf1_equations(peep, clip, proj, forget_bias):
    rng = _rng(10)
    width = P if proj else H
    kernel = rng.standard_normal((D + width, 4 * H)) * 0.5
    bias = rng.standard_normal(4 * H) * 0.5
    diag = {k: rng.standard_normal(H) for k in ("w_i_diag", "w_f_diag", "w_o_diag")} if peep else {}
    pk = rng.standard_normal((H, P)) if proj else None
    proj_clip = 0.3 if proj and clip else None
    x = rng.standard_normal((T, B, D))
    c0, h0 = rng.standard_normal((B, H)), rng.standard_normal((B, width)) * 0.5

    def step(x_t, state):
        return tf1_lstm_cell(x_t, state, kernel, bias, forget_bias=forget_bias, **diag,
                             cell_clip=clip, projection_kernel=pk, proj_clip=proj_clip)  # fmt: skip

    want, (cT, hT) = _unroll(step, x, (c0, h0))
    w = interop.from_tf_lstm(kernel, bias, forget_bias, input_size=D, **diag, projection_kernel=pk)
    assert w["forget_bias"] == forget_bias
    hs, nhT, ncT, _ = numlstm.lstmp_forward(
        x, h0, c0, w["Wx"], w["Wh"], w["b"], forget_bias=w["forget_bias"],
        peepholes=w["peepholes"], cell_clip=clip, W_proj=w["W_proj"], proj_clip=proj_clip,
    )  # fmt: skip
    np.testing.assert_allclose(hs, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(nhT, hT, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ncT, cT, rtol=0, atol=1e-12)


def test_tf_lstm_gate_order_matters():
    """Not vacuous: loading TF's i, j, f, o blocks as if they were i, f, g, o is wrong."""
    rng = _rng(11)
    kernel, bias = rng.standard_normal((D + H, 4 * H)), rng.standard_normal(4 * H)
    x, h0, c0 = rng.standard_normal((T, B, D)), np.zeros((B, H)), np.zeros((B, H))
    want, _ = _unroll(lambda x_t, s: tf1_lstm_cell(x_t, s, kernel, bias), x, (c0, h0))
    wrong, *_ = numlstm.lstm_forward(x, h0, c0, kernel[:D].copy(), kernel[D:].copy(), bias, 1.0)
    assert np.abs(wrong - want).max() > 1e-2
    w = interop.from_tf_lstm(kernel, bias, input_size=D)
    right, *_ = numlstm.lstm_forward(x, h0, c0, w["Wx"], w["Wh"], w["b"], w["forget_bias"])
    np.testing.assert_allclose(right, want, rtol=0, atol=1e-12)


def test_tf_gru_cell_is_reset_before():
    rng = _rng(12)
    gk, gb = rng.standard_normal((D + H, 2 * H)) * 0.5, rng.standard_normal(2 * H)
    ck, cb = rng.standard_normal((D + H, H)) * 0.5, rng.standard_normal(H)
    x, h0 = rng.standard_normal((T, B, D)), rng.standard_normal((B, H))

    def step(x_t, h):
        h = tf1_gru_cell(x_t, h, gk, gb, ck, cb)
        return h, h

    want, hT = _unroll(step, x, h0)
    w = interop.from_tf_gru(gk, gb, ck, cb, input_size=D)
    hs, nhT, _ = numlstm.gru_forward(x, h0, w["Wx"], w["Wh"], w["bx"], w["bh"], reset_after=False)
    np.testing.assert_allclose(hs, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(nhT, hT, rtol=0, atol=1e-12)


def test_tf_basic_rnn_cell():
    rng = _rng(13)
    k, b = rng.standard_normal((D + H, H)) * 0.5, rng.standard_normal(H)
    x, h0 = rng.standard_normal((T, B, D)), rng.standard_normal((B, H))

    def step(x_t, h):
        h = tf1_rnn_cell(x_t, h, k, b)
        return h, h

    want, _ = _unroll(step, x, h0)
    w = interop.from_tf_rnn(k, b, input_size=D)
    hs, *_ = numlstm.rnn_forward(x, h0, w["Wx"], w["Wh"], w["b"])
    np.testing.assert_allclose(hs, want, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Errors name the argument


def _z(*shape):
    return np.zeros(shape)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: interop.from_torch_lstm(_z(4 * H + 1, D), _z(4 * H, H)), "weight_ih"),
        (lambda: interop.from_torch_lstm(_z(4 * H, D), _z(4 * H, H + 1)), "weight_hh"),
        (lambda: interop.from_torch_lstm(_z(4 * H, D), _z(4 * H, H), _z(4 * H), _z(3)), "bias_hh"),
        (lambda: interop.from_torch_lstm(_z(4 * H, D), _z(4 * H, H), _z(4 * H)), "bias_hh"),
        (lambda: interop.from_torch_lstm(_z(4 * H, D), _z(4 * H, P), weight_hr=_z(P, H + 1)),
         "weight_hr"),
        (lambda: interop.from_torch_lstm(_z(4 * H, D), _z(4 * H, H), weight_hr=_z(P, H)),
         "weight_hh"),
        (lambda: interop.from_torch_lstm(_z(4 * H), _z(4 * H, H)), "weight_ih"),
        (lambda: interop.from_torch_gru(_z(3 * H, D), _z(3 * H, H), _z(3 * H), _z(4 * H)),
         "bias_hh"),
        (lambda: interop.from_torch_gru(_z(3 * H, D), _z(4 * H, H)), "weight_hh"),
        (lambda: interop.from_torch_rnn(_z(H, D), _z(H, H + 1)), "weight_hh"),
        (lambda: interop.from_tf_lstm(_z(D + H, 4 * H), _z(4 * H), input_size=D + 1), "kernel"),
        (lambda: interop.from_tf_lstm(_z(D + H, 4 * H), _z(3 * H), input_size=D), "bias"),
        (lambda: interop.from_tf_lstm(_z(D + H, 4 * H + 2), _z(4 * H), input_size=D), "kernel"),
        (lambda: interop.from_tf_lstm(_z(D + H, 4 * H), _z(4 * H), input_size=D,
                                      w_i_diag=_z(H), w_f_diag=_z(H)), "w_o_diag"),
        (lambda: interop.from_tf_lstm(_z(D + H, 4 * H), _z(4 * H), input_size=D, w_i_diag=_z(H),
                                      w_f_diag=_z(H + 1), w_o_diag=_z(H)), "w_f_diag"),
        (lambda: interop.from_tf_lstm(_z(D + H, 4 * H), _z(4 * H), input_size=D,
                                      projection_kernel=_z(H + 1, P)), "projection_kernel"),
        (lambda: interop.from_tf_lstm(_z(D + H, 4 * H), _z(4 * H), input_size=D,
                                      projection_kernel=_z(H, P)), "kernel"),
        (lambda: interop.from_tf_lstm(_z(D + H, 4 * H), _z(4 * H), input_size=0), "input_size"),
        (lambda: interop.from_tf_lstm(_z(D + H, 4 * H), _z(4 * H), float("nan"), input_size=D),
         "forget_bias"),
        (lambda: interop.from_tf_gru(_z(D + H, 2 * H), _z(2 * H), _z(D + H, H + 1), _z(H),
                                     input_size=D), "candidate_kernel"),
        (lambda: interop.from_tf_gru(_z(D + H, 2 * H), _z(2 * H), _z(D + H, H), _z(H),
                                     input_size=D + 1), "gate_kernel"),
        (lambda: interop.from_tf_rnn(_z(D + H, H), _z(H + 1), input_size=D), "bias"),
        (lambda: interop.to_torch_lstm(_z(D, 4 * H), _z(H + 1, 4 * H), _z(4 * H)), "Wh"),
    ],
)  # fmt: skip
def test_bad_shapes_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_types_name_the_argument():
    with pytest.raises(TypeError, match="weight_ih"):
        interop.from_torch_lstm(np.zeros((4 * H, D), np.int64), _z(4 * H, H))
    with pytest.raises(TypeError, match="input_size"):
        interop.from_tf_lstm(_z(D + H, 4 * H), _z(4 * H), input_size=4.0)
    with pytest.raises(TypeError, match="bias"):
        interop.from_torch_rnn(_z(H, D), _z(H, H), _z(H).astype(np.float32), _z(H))


def test_torch_language_model_into_language_model(torch):
    """docs/interop.md section 3.3's recipe: a PyTorch word LM's logits, reproduced."""
    V, Hm, L, Bm, Tm = 11, 5, 2, 2, 4
    emb, rnn, dec = torch.nn.Embedding(V, Hm), torch.nn.LSTM(Hm, Hm, L), torch.nn.Linear(Hm, V)
    for mod in (emb, rnn, dec):
        mod.double()
        _perturb(torch, mod, 20)
    tokens = _rng(21).integers(0, V, (Bm, Tm))
    with torch.no_grad():
        out, _ = rnn(emb(torch.tensor(tokens.T)))  # time-major (T, B, H)
        want = dec(out).numpy().transpose(1, 0, 2)  # (B, T, V)
    model = numlstm.LanguageModel(V, Hm, L, dtype=np.float64)
    p = model.params
    p["embedding"][...] = _np(emb.weight)
    p["softmax_w"][...] = _np(dec.weight).T
    p["softmax_b"][...] = _np(dec.bias)
    sd = {k: v.numpy() for k, v in rnn.state_dict().items()}
    for k in range(L):
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        w = interop.from_torch_lstm(*(sd[f"{n}_l{k}"] for n in names))
        for name in ("Wx", "Wh", "b"):
            p[f"l{k}.{name}"][...] = w[name]
    scores, _ = model.logits(tokens, model.init_state(Bm))
    np.testing.assert_allclose(scores, want, rtol=0, atol=1e-11)


def test_torch_bidirectional_packed_lstm(torch):
    """interop.md 2.1-2.2: `_reverse` entries are params_bw, a packed batch is lengths=."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    m = torch.nn.LSTM(D, H, bidirectional=True).double()
    _perturb(torch, m, 30)
    x, _, _, _, tt = _inputs(torch, 31, H, H)
    lengths = np.array([3, T, 1])  # unsorted: enforce_sorted=False
    packed = pack_padded_sequence(tt["x"], torch.tensor(lengths), enforce_sorted=False)
    out, (hn, cn) = m(packed)
    out, _ = pad_packed_sequence(out, total_length=T)
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    zero = np.zeros((B, H))
    fw = interop.from_torch_lstm(*(sd[f"{n}_l0"] for n in names))
    bw = interop.from_torch_lstm(*(sd[f"{n}_l0_reverse"] for n in names))
    hs, final_fw, final_bw, _ = numlstm.bidirectional_forward(
        "lstm", x, (zero, zero, fw["Wx"], fw["Wh"], fw["b"]),
        (zero, zero, bw["Wx"], bw["Wh"], bw["b"]), lengths,
    )  # fmt: skip
    np.testing.assert_allclose(hs, _np(out), rtol=0, atol=1e-12)
    for k, (hT, cT) in enumerate((final_fw, final_bw)):
        np.testing.assert_allclose(hT, _np(hn)[k], rtol=0, atol=1e-12)
        np.testing.assert_allclose(cT, _np(cn)[k], rtol=0, atol=1e-12)
