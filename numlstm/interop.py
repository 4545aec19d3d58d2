"""Weights from PyTorch and TensorFlow 1 cells, as the arrays numlstm's layers take.

Pure NumPy: nothing here imports torch or tensorflow. Pass the arrays themselves
(``module.weight_ih_l0.detach().numpy()``, ``tf_session.run(cell.weights)``, or anything
``np.asarray`` accepts). docs/interop.md maps every argument of those libraries' cells to
numlstm and explains each conversion:

- PyTorch stores a weight as (out, in) and computes W x; numlstm stores (in, out) and computes
  x W (P1, G1, R1), so every matrix is transposed. PyTorch's gate orders (LSTM i, f, g, o; GRU
  r, z, n) are numlstm's. Its LSTM has two biases that only ever enter as a sum, its GRU keeps
  both (bx, bh: the reset-after form, G1-G5).
- TensorFlow 1 ``LSTMCell``/``BasicLSTMCell`` hold one kernel ((D + P), 4H) applied to
  concat([x, h]) with the gate blocks ordered i, j, f, o (j the candidate, numlstm's g): the
  kernel's rows split into Wx and Wh and its columns are reordered to i, f, g, o. Its
  ``forget_bias`` (default 1.0) is not in the bias variable: pass it to the forward.
  ``GRUCell`` is the reset-before form (G2c, G4c: ``reset_after=False``).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "from_tf_gru",
    "from_tf_lstm",
    "from_tf_rnn",
    "from_torch_gru",
    "from_torch_lstm",
    "from_torch_rnn",
    "to_torch_gru",
    "to_torch_lstm",
    "to_torch_rnn",
]


def _array(name: str, a: object, ndim: int) -> np.ndarray:
    """``a`` as a float ndarray with ``ndim`` dimensions (a copy is not made unless needed)."""
    try:
        out = np.asarray(a)
    except Exception as exc:  # e.g. a tensor that needs grad or lives on a GPU
        raise TypeError(
            f"{name} must be an array (for a torch tensor: .detach().cpu().numpy()): {exc}"
        ) from exc
    if out.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {out.dtype}")
    if out.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {out.shape}")
    return out


def _expect(name: str, a: np.ndarray, shape: tuple[int, ...], text: str) -> None:
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {text} = {shape}, got {a.shape}")


def _same_dtype(**arrays: np.ndarray | None) -> np.dtype:
    given = {k: v for k, v in arrays.items() if v is not None}
    dtypes = {v.dtype for v in given.values()}
    if len(dtypes) > 1:
        names = ", ".join(f"{k} {v.dtype}" for k, v in given.items())
        raise TypeError(f"the arrays must share one dtype, got {names}")
    return dtypes.pop()


def _gates(name: str, n: int, n_gates: int, axis: str = "rows") -> int:
    """H from a count of n_gates * H rows (or columns); the error names the argument."""
    if n % n_gates or n == 0:
        raise ValueError(f"{name} must have {n_gates}H {axis} (H >= 1), got {n}")
    return n // n_gates


# --------------------------------------------------------------------------------------------
# PyTorch: nn.LSTM, nn.GRU, nn.RNN (one layer, one direction: the "_l{k}" and "_l{k}_reverse"
# entries of a state_dict are converted one at a time).


def from_torch_lstm(
    weight_ih: object,
    weight_hh: object,
    bias_ih: object | None = None,
    bias_hh: object | None = None,
    weight_hr: object | None = None,
) -> dict[str, np.ndarray | None]:
    """One layer of ``torch.nn.LSTM`` as arguments of ``lstm_forward`` / ``lstmp_forward``.

    weight_ih (4H, D), weight_hh (4H, P), bias_ih and bias_hh (4H,) or None (``bias=False``),
    weight_hr (P, H) or None (``proj_size=0``, then P = H). Gate blocks i, f, g, o in both.

    Returns {"Wx": (D, 4H), "Wh": (P, 4H), "b": (4H,), "W_proj": (H, P) or None}:
    Wx = weight_ih.T, Wh = weight_hh.T, b = bias_ih + bias_hh, W_proj = weight_hr.T.
    Run it with forget_bias=0.0 (PyTorch has none). With W_proj, use ``lstmp_forward``.
    """
    w_ih = _array("weight_ih", weight_ih, 2)
    H = _gates("weight_ih", w_ih.shape[0], 4)
    w_hr = None if weight_hr is None else _array("weight_hr", weight_hr, 2)
    P = H if w_hr is None else w_hr.shape[0]
    if w_hr is not None:
        _expect("weight_hr", w_hr, (P, H), "(proj_size, H)")
    w_hh = _array("weight_hh", weight_hh, 2)
    _expect("weight_hh", w_hh, (4 * H, P), "(4H, H)" if w_hr is None else "(4H, proj_size)")
    b = _torch_bias(bias_ih, bias_hh, 4 * H, w_ih.dtype)
    _same_dtype(weight_ih=w_ih, weight_hh=w_hh, weight_hr=w_hr, b=b)
    return {
        "Wx": np.ascontiguousarray(w_ih.T),
        "Wh": np.ascontiguousarray(w_hh.T),
        "b": b,
        "W_proj": None if w_hr is None else np.ascontiguousarray(w_hr.T),
    }


def from_torch_gru(
    weight_ih: object,
    weight_hh: object,
    bias_ih: object | None = None,
    bias_hh: object | None = None,
) -> dict[str, np.ndarray]:
    """One layer of ``torch.nn.GRU`` as arguments of ``gru_forward(..., reset_after=True)``.

    weight_ih (3H, D), weight_hh (3H, H), bias_ih and bias_hh (3H,) or None (``bias=False``:
    zeros). PyTorch's blocks r, z, n are numlstm's, and its n = tanh(W_in x + b_in + r ⊙
    (W_hn h + b_hn)) is the reset-after form G4, so the two biases stay apart.

    Returns {"Wx": (D, 3H), "Wh": (H, 3H), "bx": (3H,), "bh": (3H,)}.
    """
    w_ih = _array("weight_ih", weight_ih, 2)
    H = _gates("weight_ih", w_ih.shape[0], 3)
    w_hh = _array("weight_hh", weight_hh, 2)
    _expect("weight_hh", w_hh, (3 * H, H), "(3H, H)")
    bx = _one_bias("bias_ih", bias_ih, 3 * H, w_ih.dtype)
    bh = _one_bias("bias_hh", bias_hh, 3 * H, w_ih.dtype)
    _same_dtype(weight_ih=w_ih, weight_hh=w_hh, bias_ih=bx, bias_hh=bh)
    return {
        "Wx": np.ascontiguousarray(w_ih.T),
        "Wh": np.ascontiguousarray(w_hh.T),
        "bx": bx,
        "bh": bh,
    }


def from_torch_rnn(
    weight_ih: object,
    weight_hh: object,
    bias_ih: object | None = None,
    bias_hh: object | None = None,
) -> dict[str, np.ndarray]:
    """One layer of ``torch.nn.RNN(nonlinearity="tanh")`` as arguments of ``rnn_forward``.

    weight_ih (H, D), weight_hh (H, H), bias_ih and bias_hh (H,) or None. numlstm's RNN is
    tanh only (R2): a ``nonlinearity="relu"`` module has no counterpart.

    Returns {"Wx": (D, H), "Wh": (H, H), "b": (H,)}, b = bias_ih + bias_hh.
    """
    w_ih = _array("weight_ih", weight_ih, 2)
    H = w_ih.shape[0]
    if H == 0:
        raise ValueError(f"weight_ih must have shape (H, D) with H >= 1, got {w_ih.shape}")
    w_hh = _array("weight_hh", weight_hh, 2)
    _expect("weight_hh", w_hh, (H, H), "(H, H)")
    b = _torch_bias(bias_ih, bias_hh, H, w_ih.dtype)
    _same_dtype(weight_ih=w_ih, weight_hh=w_hh, b=b)
    return {"Wx": np.ascontiguousarray(w_ih.T), "Wh": np.ascontiguousarray(w_hh.T), "b": b}


def _one_bias(name: str, bias: object | None, n: int, dtype: np.dtype) -> np.ndarray:
    if bias is None:
        return np.zeros(n, dtype)
    out = _array(name, bias, 1)
    _expect(name, out, (n,), f"({n},)")
    if out.dtype != dtype:
        raise TypeError(f"{name} has dtype {out.dtype} but the weights are {np.dtype(dtype)}")
    return out.copy()


def _torch_bias(bias_ih: object | None, bias_hh: object | None, n: int, dtype) -> np.ndarray:
    """b = bias_ih + bias_hh: both enter every gate unmultiplied, so only their sum acts."""
    if (bias_ih is None) != (bias_hh is None):
        missing = "bias_hh" if bias_hh is None else "bias_ih"
        raise ValueError(f"{missing} is None but the other bias is given: pass both or neither")
    return _one_bias("bias_ih", bias_ih, n, dtype) + _one_bias("bias_hh", bias_hh, n, dtype)


def to_torch_lstm(
    Wx: object, Wh: object, b: object, W_proj: object | None = None
) -> dict[str, np.ndarray]:
    """The inverse of ``from_torch_lstm``: numlstm's LSTM/LSTMP weights (or their gradients)
    as PyTorch's ``weight_ih``, ``weight_hh``, ``bias_ih`` (= b), ``bias_hh`` (zeros) and,
    with W_proj, ``weight_hr``. Without peepholes, cell_clip, proj_clip and with forget_bias
    folded into b (add it to b's f block), which PyTorch's LSTM lacks."""
    Wx_, Wh_, b_ = _array("Wx", Wx, 2), _array("Wh", Wh, 2), _array("b", b, 1)
    H = _gates("Wx", Wx_.shape[1], 4, "columns")
    Wp = None if W_proj is None else _array("W_proj", W_proj, 2)
    P = H if Wp is None else Wp.shape[1]
    if Wp is not None:
        _expect("W_proj", Wp, (H, P), "(H, P)")
    _expect("Wh", Wh_, (P, 4 * H), "(P, 4H)")
    _expect("b", b_, (4 * H,), "(4H,)")
    out = {
        "weight_ih": np.ascontiguousarray(Wx_.T),
        "weight_hh": np.ascontiguousarray(Wh_.T),
        "bias_ih": b_.copy(),
        "bias_hh": np.zeros_like(b_),
    }
    if Wp is not None:
        out["weight_hr"] = np.ascontiguousarray(Wp.T)
    return out


def to_torch_gru(Wx: object, Wh: object, bx: object, bh: object) -> dict[str, np.ndarray]:
    """The inverse of ``from_torch_gru`` (reset-after weights only)."""
    Wx_, Wh_ = _array("Wx", Wx, 2), _array("Wh", Wh, 2)
    H = _gates("Wx", Wx_.shape[1], 3, "columns")
    _expect("Wh", Wh_, (H, 3 * H), "(H, 3H)")
    return {
        "weight_ih": np.ascontiguousarray(Wx_.T),
        "weight_hh": np.ascontiguousarray(Wh_.T),
        "bias_ih": _one_bias("bx", bx, 3 * H, Wx_.dtype),
        "bias_hh": _one_bias("bh", bh, 3 * H, Wx_.dtype),
    }


def to_torch_rnn(Wx: object, Wh: object, b: object) -> dict[str, np.ndarray]:
    """The inverse of ``from_torch_rnn``: bias_ih = b, bias_hh = zeros."""
    Wx_, Wh_ = _array("Wx", Wx, 2), _array("Wh", Wh, 2)
    H = Wx_.shape[1]
    _expect("Wh", Wh_, (H, H), "(H, H)")
    b_ = _one_bias("b", b, H, Wx_.dtype)
    return {
        "weight_ih": np.ascontiguousarray(Wx_.T),
        "weight_hh": np.ascontiguousarray(Wh_.T),
        "bias_ih": b_,
        "bias_hh": np.zeros_like(b_),
    }


# --------------------------------------------------------------------------------------------
# TensorFlow 1: tf.nn.rnn_cell.LSTMCell / BasicLSTMCell, GRUCell, BasicRNNCell (and
# tf.contrib.rnn's same cells). Their kernels act on concat([x, h], 1) from the left of the
# kernel (x W), so nothing is transposed: the rows split into Wx (the first D) and Wh.


def _split_rows(name: str, kernel: np.ndarray, input_size: int, hidden: int, text: str):
    if isinstance(input_size, bool) or not isinstance(input_size, int | np.integer):
        raise TypeError(f"input_size must be an int, got {input_size!r}")
    if input_size < 1:
        raise ValueError(f"input_size must be >= 1, got {input_size}")
    if kernel.shape[0] != input_size + hidden:
        raise ValueError(
            f"{name} must have input_size + {text} = {input_size} + {hidden} = "
            f"{input_size + hidden} rows (it acts on concat([x, h])), got shape {kernel.shape}"
        )
    return np.ascontiguousarray(kernel[:input_size]), np.ascontiguousarray(kernel[input_size:])


def _ijfo_to_ifgo(a: np.ndarray, H: int) -> np.ndarray:
    """TensorFlow's column blocks i, j, f, o -> numlstm's i, f, g, o (j is the candidate g)."""
    i, j, f, o = (a[..., k * H : (k + 1) * H] for k in range(4))
    return np.ascontiguousarray(np.concatenate([i, f, j, o], axis=-1))


def from_tf_lstm(
    kernel: object,
    bias: object,
    forget_bias: float = 1.0,
    *,
    input_size: int,
    w_i_diag: object | None = None,
    w_f_diag: object | None = None,
    w_o_diag: object | None = None,
    projection_kernel: object | None = None,
) -> dict[str, object]:
    """A TF1 ``LSTMCell`` / ``BasicLSTMCell`` as arguments of ``lstmp_forward`` (P1-P8).

    kernel ((input_size + P), 4H) and bias (4H,): the cell's ``kernel`` and ``bias`` variables,
    gate blocks i, j, f, o. forget_bias: the cell's constructor argument (TensorFlow's default
    1.0; it is not stored in ``bias``). w_i_diag, w_f_diag, w_o_diag (H,): the peepholes of
    ``use_peepholes=True`` (all three or none). projection_kernel (H, P): ``num_proj=P``'s
    ``projection/kernel``; without it P = H.

    Returns {"Wx": (D, 4H), "Wh": (P, 4H), "b": (4H,) reordered to i, f, g, o,
    "peepholes": (3, H) rows [w_i_diag, w_f_diag, w_o_diag] or None, "W_proj": (H, P) or None,
    "forget_bias": float}: pass them all as keywords of ``lstmp_forward`` (forget_bias too:
    numlstm's default is 0.0). cell_clip and proj_clip are constructor arguments, not weights:
    pass the cell's values (TensorFlow's None is numlstm's None).
    """
    k = _array("kernel", kernel, 2)
    H = _gates("kernel", k.shape[1], 4, "columns")
    b = _array("bias", bias, 1)
    _expect("bias", b, (4 * H,), "(4H,)")
    wp = None if projection_kernel is None else _array("projection_kernel", projection_kernel, 2)
    if wp is not None:
        if wp.shape[0] != H or wp.shape[1] == 0:
            raise ValueError(
                f"projection_kernel must have shape (H, num_proj) with H = {H} (kernel has 4H = "
                f"{4 * H} columns), got {wp.shape}"
            )
    P = H if wp is None else wp.shape[1]
    Wx, Wh = _split_rows("kernel", k, input_size, P, "P" if wp is not None else "H")
    diags = {"w_i_diag": w_i_diag, "w_f_diag": w_f_diag, "w_o_diag": w_o_diag}
    given = [name for name, v in diags.items() if v is not None]
    if given and len(given) != 3:
        missing = ", ".join(name for name in diags if name not in given)
        raise ValueError(f"peepholes need w_i_diag, w_f_diag and w_o_diag: {missing} missing")
    peep = None
    if given:
        rows = []
        for name, v in diags.items():
            row = _array(name, v, 1)
            _expect(name, row, (H,), "(H,)")
            rows.append(row)
        peep = np.stack(rows)
    if isinstance(forget_bias, bool) or not isinstance(forget_bias, int | float | np.floating):
        raise TypeError(f"forget_bias must be a number, got {forget_bias!r}")
    if not np.isfinite(forget_bias):
        raise ValueError(f"forget_bias must be finite, got {forget_bias}")
    _same_dtype(kernel=k, bias=b, peepholes=peep, projection_kernel=wp)
    return {
        "Wx": _ijfo_to_ifgo(Wx, H),
        "Wh": _ijfo_to_ifgo(Wh, H),
        "b": _ijfo_to_ifgo(b, H),
        "peepholes": peep,
        "W_proj": None if wp is None else np.ascontiguousarray(wp),
        "forget_bias": float(forget_bias),
    }


def from_tf_gru(
    gate_kernel: object,
    gate_bias: object,
    candidate_kernel: object,
    candidate_bias: object,
    *,
    input_size: int,
) -> dict[str, np.ndarray]:
    """A TF1 ``GRUCell`` as arguments of ``gru_forward(..., reset_after=False)`` (G2c, G4c).

    gate_kernel ((D + H), 2H) and gate_bias (2H,): ``gates/kernel``, ``gates/bias``, blocks
    r, u (u is numlstm's z: h = u ⊙ h_prev + (1 - u) ⊙ c, G5). candidate_kernel ((D + H), H)
    and candidate_bias (H,): ``candidate/kernel``, ``candidate/bias``, acting on
    concat([x, r ⊙ h]): the reset-before form.

    Returns {"Wx": (D, 3H), "Wh": (H, 3H), "bx": (3H,), "bh": zeros (3H,)}: with reset_after
    False every bias enters unmultiplied, so TensorFlow's single bias is bx.
    """
    gk = _array("gate_kernel", gate_kernel, 2)
    H = _gates("gate_kernel", gk.shape[1], 2, "columns")
    gb = _array("gate_bias", gate_bias, 1)
    _expect("gate_bias", gb, (2 * H,), "(2H,)")
    ck = _array("candidate_kernel", candidate_kernel, 2)
    _expect("candidate_kernel", ck, (gk.shape[0], H), "(D + H, H)")
    cb = _array("candidate_bias", candidate_bias, 1)
    _expect("candidate_bias", cb, (H,), "(H,)")
    gx, gh = _split_rows("gate_kernel", gk, input_size, H, "H")
    cx, ch = _split_rows("candidate_kernel", ck, input_size, H, "H")
    dt = _same_dtype(gate_kernel=gk, gate_bias=gb, candidate_kernel=ck, candidate_bias=cb)
    return {
        "Wx": np.ascontiguousarray(np.concatenate([gx, cx], axis=1)),
        "Wh": np.ascontiguousarray(np.concatenate([gh, ch], axis=1)),
        "bx": np.concatenate([gb, cb]),
        "bh": np.zeros(3 * H, dt),
    }


def from_tf_rnn(kernel: object, bias: object, *, input_size: int) -> dict[str, np.ndarray]:
    """A TF1 ``BasicRNNCell`` (activation tanh) as arguments of ``rnn_forward`` (R1-R2).

    kernel ((D + H), H), bias (H,). Returns {"Wx": (D, H), "Wh": (H, H), "b": (H,)}.
    """
    k = _array("kernel", kernel, 2)
    H = k.shape[1]
    if H == 0:
        raise ValueError(f"kernel must have shape (D + H, H) with H >= 1, got {k.shape}")
    b = _array("bias", bias, 1)
    _expect("bias", b, (H,), "(H,)")
    Wx, Wh = _split_rows("kernel", k, input_size, H, "H")
    _same_dtype(kernel=k, bias=b)
    return {"Wx": Wx, "Wh": Wh, "b": b.copy()}
