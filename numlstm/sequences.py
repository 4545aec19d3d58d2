"""Variable-length batches and bidirectional layers (docs/rnn.md sections 5-6).

A batch of sequences of different lengths is stored padded to T steps, time-major, with
``lengths[b]`` the number of real steps of column b. Every recurrent layer (``rnn_forward``,
``lstm_forward``, ``gru_forward``) takes ``lengths=`` and follows the masked update M1-M3:
past its end a sequence's state is carried unchanged and its output is zero, so the final
state is the state after step lengths[b].

The layers realise M1-M3 without touching their loops (docs/rnn.md section 5.2): the padded
steps are computed like the real ones and then ignored. The helpers below do the three things
that makes necessary: read the final state at step lengths[b] (M1), zero the outputs past the
end (M2), and, going backward, feed dhT/dcT into step lengths[b] (M3) one group of equal
lengths at a time (``backward_segments``).

``reverse_sequence`` (V1) and ``bidirectional_forward``/``bidirectional_backward`` (V2, dV2)
build a bidirectional layer out of two one-directional ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _checks


def output_mask(lengths: np.ndarray, T: int) -> np.ndarray:
    """(M2) m (T, B) bool: m[t, b] is True while step t+1 is a real step of sequence b."""
    return np.arange(T)[:, None] < lengths[None, :]


def prepare_lengths(lengths: object, T: int, B: int) -> np.ndarray | None:
    """Validated lengths, or None when there are none or every sequence has all T steps.

    With all lengths equal to T, M1-M3 change nothing, so the layers take their plain path:
    full-length batches cost the same with ``lengths=`` as without.
    """
    if lengths is None:
        return None
    lengths = _checks.lengths("lengths", lengths, T, B)
    return None if bool((lengths == T).all()) else lengths


def finish_forward(h: np.ndarray, lengths: np.ndarray, *states: np.ndarray) -> list[np.ndarray]:
    """After an unmasked run over all T steps, with h (and each of ``states``) (T+1, B, H):

    (M1) the final state of column b is the state after step lengths[b], h[lengths[b], b]
    (h0 when the length is 0): returned, one copy per array in (h, *states);
    (M2) outputs past the end are zero: h[t+1, b] = 0 for t >= lengths[b], in place, so that
    hs = h[1:] is the masked output. Nothing reads those entries afterwards (section 5.2).
    """
    cols = np.arange(h.shape[1])
    finals = [a[lengths, cols].copy() for a in (h, *states)]  # (M1)
    h[1:][~output_mask(lengths, h.shape[0] - 1)] = 0  # (M2)
    return finals


def masked_dhs(dhs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(dM2) the gradient on the masked output: dhs[t, b] past the end has no effect."""
    return dhs * output_mask(lengths, dhs.shape[0])[:, :, None]


def backward_segments(lengths: np.ndarray | None, T: int) -> Iterator[tuple[int, int, Any]]:
    """(lo, hi, rows) for the reverse loop under (dM1, M3): first feed dhT/dcT of ``rows`` (the
    sequences of length hi) into the state of step hi, then run steps hi..lo+1 (0-based t =
    hi-1 .. lo). Without lengths: one segment (0, T, every row)."""
    if lengths is None:
        yield 0, T, slice(None)
        return
    ends = sorted({int(n) for n in lengths} | {T}, reverse=True)
    for k, hi in enumerate(ends):
        lo = ends[k + 1] if k + 1 < len(ends) else 0
        yield lo, hi, np.flatnonzero(lengths == hi)


def reverse_sequence(x: np.ndarray, lengths: object) -> np.ndarray:
    """(V1) Reverse the first lengths[b] steps of each column b of a time-major x; the padding
    stays where it is. x (T, B) or (T, B, ...) of any dtype; lengths (B,) integers in [0, T].

    y[t, b] = x[lengths[b] - 1 - t, b] for t < lengths[b], else x[t, b]. The map is its own
    inverse, and, being a permutation of the steps, its own backward (dV1).
    Like ``tf.reverse_sequence(x, lengths, seq_axis=0, batch_axis=1)``.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"x must be time-major (T, B) or (T, B, ...), got shape {x.shape}")
    T, B = x.shape[:2]
    lengths = _checks.lengths("lengths", lengths, T, B)
    t = np.arange(T)[:, None]
    src = np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # (V1)
    return x[src, np.arange(B)[None, :]]


# --------------------------------------------------------------------------------------------
# Bidirectional layer (V2, dV2)
# --------------------------------------------------------------------------------------------

_CELLS = ("rnn", "lstm", "gru")


@dataclass
class BidirectionalCache:
    """What ``bidirectional_backward`` needs: the cell, lengths (None: all T), both caches."""

    cell: str
    lengths: np.ndarray | None
    cache_fw: Any
    cache_bw: Any
    hidden_size: int


def _layer(cell: str):
    from .gru import gru_backward, gru_forward
    from .lstm import lstm_backward, lstm_forward
    from .rnn import rnn_backward, rnn_forward

    return {
        "rnn": (rnn_forward, rnn_backward),
        "lstm": (lstm_forward, lstm_backward),
        "gru": (gru_forward, gru_backward),
    }[cell]


def bidirectional_forward(
    cell: str,
    x: np.ndarray,
    params_fw: Sequence[np.ndarray],
    params_bw: Sequence[np.ndarray],
    lengths: object = None,
    **options: Any,
) -> tuple[np.ndarray, tuple, tuple, BidirectionalCache]:
    """A bidirectional layer (V2): ``cell`` ("rnn", "lstm" or "gru") run forward over x and,
    with its own weights, over ``reverse_sequence(x, lengths)``; the second output is reversed
    back and the two are concatenated on the feature axis, forward first.

    params_fw, params_bw: the layer's arguments after x, in its order:
    rnn (h0, Wx, Wh, b); lstm (h0, c0, Wx, Wh, b); gru (h0, Wx, Wh, bx, bh).
    options: forget_bias= (lstm) or reset_after= (gru), the same for both directions.

    Returns hs (T, B, 2H); the final states of each direction, (hT,) or (hT, cT) (the backward
    direction's is its state after reading x_1, last); the cache for ``bidirectional_backward``.
    """
    if cell not in _CELLS:
        raise ValueError(f"cell must be one of {_CELLS}, got {cell!r}")
    x = _checks.float_array("x", x, 3)
    T, B = x.shape[:2]
    lengths = None if lengths is None else _checks.lengths("lengths", lengths, T, B)
    rev_len = np.full(B, T, np.int64) if lengths is None else lengths
    forward, _ = _layer(cell)
    *out_fw, cache_fw = forward(x, *params_fw, **options, lengths=lengths)
    x_rev = reverse_sequence(x, rev_len)  # (V2) the backward direction reads x reversed
    *out_bw, cache_bw = forward(x_rev, *params_bw, **options, lengths=lengths)
    hs_fw, hs_bw = out_fw[0], reverse_sequence(out_bw[0], rev_len)  # (V2) reversed back
    hs = np.concatenate([hs_fw, hs_bw], axis=2)  # (V2) forward first
    H = hs_fw.shape[2]
    cache = BidirectionalCache(cell, lengths, cache_fw, cache_bw, H)
    return hs, tuple(out_fw[1:]), tuple(out_bw[1:]), cache


def bidirectional_backward(
    dhs: np.ndarray, cache: BidirectionalCache
) -> tuple[np.ndarray, tuple, tuple]:
    """(dV2) Backward of ``bidirectional_forward``, with no gradient on the final states.

    dhs (T, B, 2H) -> dx (T, B, D), grads_fw, grads_bw: each the layer's backward outputs after
    dx: rnn (dh0, dWx, dWh, db); lstm (dh0, dc0, dWx, dWh, db); gru (dh0, dWx, dWh, dbx, dbh).
    """
    if not isinstance(cache, BidirectionalCache):
        raise TypeError(
            "cache must be the BidirectionalCache from bidirectional_forward, "
            f"got {type(cache).__name__}"
        )
    dhs = _checks.float_array("dhs", dhs, 3)
    H = cache.hidden_size
    T, B = dhs.shape[:2]
    _checks.expect_shape("dhs", dhs, (T, B, 2 * H), "(T, B, 2H)")
    rev_len = np.full(B, T, np.int64) if cache.lengths is None else cache.lengths
    _, backward = _layer(cache.cell)
    zeros = np.zeros((B, H), dhs.dtype)  # no gradient on the final states
    finals = (zeros, zeros) if cache.cell == "lstm" else (zeros,)
    # (dV2) split the concatenation; the backward half goes through V1 again (dV1 = V1)
    dhs_fw = np.ascontiguousarray(dhs[:, :, :H])
    dhs_bw = reverse_sequence(np.ascontiguousarray(dhs[:, :, H:]), rev_len)
    dx_fw, *grads_fw = backward(dhs_fw, *finals, cache.cache_fw)
    dx_bw, *grads_bw = backward(dhs_bw, *finals, cache.cache_bw)
    dx = dx_fw + reverse_sequence(dx_bw, rev_len)  # (dV2) x feeds both directions
    return dx, tuple(grads_fw), tuple(grads_bw)
