"""Forward + backward throughput of one recurrent layer: numlstm against plain NumPy.

For each shape (PTB small: T=20, B=20, D=H=200; PTB medium: T=35, B=20, D=H=650) and cell
(LSTM, GRU), float32, this times one forward pass plus one full backward pass through time of

(a) numlstm, called the way ``LanguageModel`` calls it: ``lstm_forward_unchecked`` /
    ``lstm_backward_unchecked`` (``gru_*`` for the GRU) with a reused ``Workspace``: one GEMM
    for the input projection, one per step for the recurrence, fused Numba gate kernels;
(b) the same layer written in plain NumPy, the way a course assignment (cs231n) does it:
    per-step matmuls, ``1 / (1 + np.exp(-x))``, ``np.tanh``, a fresh array for every
    intermediate, and the backward pass step by step. No Numba.

Both see the same inputs; their results are compared once (max abs difference printed) so
that the speed-up is between two implementations of the same computation.

Output: one row per (shape, cell, implementation) with ms per forward+backward call and
words/s (T * B / seconds), and the speed-up of numlstm over NumPy. Median of ``--repeats``
timed runs after a warm-up; the two implementations alternate within each repeat so that
both see the same machine state. Timings are printed, never asserted.

    python benchmarks/bench_layers.py                        # both shapes, both cells
    python benchmarks/bench_layers.py --shapes small --cells lstm --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from numlstm.fast.workspace import Workspace
from numlstm.gru import gru_backward_unchecked, gru_forward_unchecked
from numlstm.lstm import lstm_backward_unchecked, lstm_forward_unchecked

SHAPES = {"small": (20, 20, 200, 200), "medium": (35, 20, 650, 650)}  # T, B, D, H
DTYPE = np.float32


# --------------------------------------------------------------------------------------------
# (b) Plain NumPy layers, written the straightforward way
# --------------------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def numpy_lstm_forward(x, h0, c0, Wx, Wh, b):
    """x (T, B, D) -> hs (T, B, H) and a per-step cache; gates ordered i, f, g, o."""
    T = x.shape[0]
    H = h0.shape[1]
    h, c = h0, c0
    hs, cache = [], []
    for t in range(T):
        a = x[t] @ Wx + h @ Wh + b
        i = _sigmoid(a[:, :H])
        f = _sigmoid(a[:, H : 2 * H])
        g = np.tanh(a[:, 2 * H : 3 * H])
        o = _sigmoid(a[:, 3 * H :])
        c_next = f * c + i * g
        tc = np.tanh(c_next)
        h_next = o * tc
        cache.append((x[t], h, c, i, f, g, o, tc))
        h, c = h_next, c_next
        hs.append(h)
    return np.stack(hs), cache


def numpy_lstm_backward(dhs, cache, Wx, Wh):
    """Backward through time; returns dx (T, B, D), dWx, dWh, db."""
    T = len(cache)
    dWx, dWh = np.zeros_like(Wx), np.zeros_like(Wh)
    db = np.zeros(Wx.shape[1], Wx.dtype)
    dx = []
    dh_next = np.zeros_like(dhs[0])
    dc_next = np.zeros_like(dhs[0])
    for t in reversed(range(T)):
        x_t, h_prev, c_prev, i, f, g, o, tc = cache[t]
        dh = dhs[t] + dh_next
        do = dh * tc
        dc = dc_next + dh * o * (1 - tc**2)
        di, df, dg = dc * g, dc * c_prev, dc * i
        da = np.concatenate(
            [di * i * (1 - i), df * f * (1 - f), dg * (1 - g**2), do * o * (1 - o)], axis=1
        )
        dx.append(da @ Wx.T)
        dWx += x_t.T @ da
        dWh += h_prev.T @ da
        db += da.sum(axis=0)
        dh_next = da @ Wh.T
        dc_next = dc * f
    return np.stack(dx[::-1]), dWx, dWh, db


def numpy_gru_forward(x, h0, Wx, Wh, bx, bh):
    """Reset-after (cuDNN) GRU: x (T, B, D) -> hs (T, B, H) and a per-step cache."""
    T = x.shape[0]
    H = h0.shape[1]
    h = h0
    hs, cache = [], []
    for t in range(T):
        ax = x[t] @ Wx + bx
        ah = h @ Wh + bh
        r = _sigmoid(ax[:, :H] + ah[:, :H])
        z = _sigmoid(ax[:, H : 2 * H] + ah[:, H : 2 * H])
        n = np.tanh(ax[:, 2 * H :] + r * ah[:, 2 * H :])
        h_next = (1 - z) * n + z * h
        cache.append((x[t], h, r, z, n, ah[:, 2 * H :]))
        h = h_next
        hs.append(h)
    return np.stack(hs), cache


def numpy_gru_backward(dhs, cache, Wx, Wh):
    """Backward through time of ``numpy_gru_forward``; returns dx, dWx, dWh, dbx, dbh."""
    T = len(cache)
    dWx, dWh = np.zeros_like(Wx), np.zeros_like(Wh)
    dbx = np.zeros(Wx.shape[1], Wx.dtype)
    dbh = np.zeros(Wh.shape[1], Wh.dtype)
    dx = []
    dh_next = np.zeros_like(dhs[0])
    for t in reversed(range(T)):
        x_t, h_prev, r, z, n, ahn = cache[t]
        dh = dhs[t] + dh_next
        dz = dh * (h_prev - n)
        dn = dh * (1 - z)
        dan = dn * (1 - n**2)
        dar = dan * ahn * r * (1 - r)
        daz = dz * z * (1 - z)
        dax = np.concatenate([dar, daz, dan], axis=1)
        dah = np.concatenate([dar, daz, dan * r], axis=1)
        dx.append(dax @ Wx.T)
        dWx += x_t.T @ dax
        dWh += h_prev.T @ dah
        dbx += dax.sum(axis=0)
        dbh += dah.sum(axis=0)
        dh_next = dah @ Wh.T + dh * z
    return np.stack(dx[::-1]), dWx, dWh, dbx, dbh


# --------------------------------------------------------------------------------------------
# One forward + backward call of each implementation
# --------------------------------------------------------------------------------------------


def make_calls(cell: str, T: int, B: int, D: int, H: int, seed: int = 0):
    """Two zero-argument callables (numlstm, numpy) returning (dx, dWx) of one fwd+bwd."""
    rng = np.random.default_rng(seed)
    G = 4 if cell == "lstm" else 3

    def u(*shape: int, scale: float = 0.1) -> np.ndarray:
        return rng.uniform(-scale, scale, shape).astype(DTYPE)

    x, dhs = u(T, B, D, scale=1.0), u(T, B, H, scale=1.0)
    h0, c0 = u(B, H, scale=0.5), u(B, H, scale=0.5)
    Wx, Wh, b, bh = u(D, G * H), u(H, G * H), u(G * H), u(G * H)
    zeros = np.zeros((B, H), DTYPE)
    ws = Workspace()

    if cell == "lstm":

        def ours():
            _, _, _, cache = lstm_forward_unchecked(x, h0, c0, Wx, Wh, b, 0.0, ws, "l0")
            dx, _, _, dWx, _, _ = lstm_backward_unchecked(dhs, zeros, zeros, cache, ws, "l0")
            return dx, dWx

        def plain():
            _, cache = numpy_lstm_forward(x, h0, c0, Wx, Wh, b)
            dx, dWx, _, _ = numpy_lstm_backward(dhs, cache, Wx, Wh)
            return dx, dWx

    else:

        def ours():
            _, _, cache = gru_forward_unchecked(x, h0, Wx, Wh, b, bh, True, ws, "l0")
            dx, _, dWx, _, _, _ = gru_backward_unchecked(dhs, zeros, cache, ws, "l0")
            return dx, dWx

        def plain():
            _, cache = numpy_gru_forward(x, h0, Wx, Wh, b, bh)
            dx, dWx, _, _, _ = numpy_gru_backward(dhs, cache, Wx, Wh)
            return dx, dWx

    return ours, plain


def time_call(f: Callable[[], object], min_seconds: float = 0.2) -> float:
    """Seconds per call of f, averaged over enough calls to last about min_seconds."""
    n, elapsed = 0, 0.0
    start = time.perf_counter()
    while elapsed < min_seconds or n < 1:
        f()
        n += 1
        elapsed = time.perf_counter() - start
    return elapsed / n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="small,medium", help="comma list of small, medium")
    parser.add_argument("--cells", default="lstm,gru", help="comma list of lstm, gru")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (median)")
    parser.add_argument(
        "--min-time", type=float, default=0.2, help="seconds of calls averaged in one timed run"
    )
    args = parser.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    cells = [c for c in args.cells.split(",") if c]
    for s in shapes:
        if s not in SHAPES:
            parser.error(f"unknown shape {s!r}; choose from {sorted(SHAPES)}")
    for c in cells:
        if c not in ("lstm", "gru"):
            parser.error(f"unknown cell {c!r}; choose lstm or gru")

    print(
        f"float32, forward + backward of one layer; median of {args.repeats} runs "
        f"(each >= {args.min_time:g} s of calls) after a warm-up\n"
    )
    checks: list[str] = []
    print("| shape  | T  | B  | D=H | cell | implementation | ms / call | words/s | speed-up |")
    print("|--------|----|----|-----|------|----------------|-----------|---------|----------|")
    for shape in shapes:
        T, B, D, H = SHAPES[shape]
        for cell in cells:
            ours, plain = make_calls(cell, T, B, D, H)
            a, b = ours(), plain()  # warm-up (compiles the kernels), and a correctness check
            diff = max(float(np.abs(a[0] - b[0]).max()), float(np.abs(a[1] - b[1]).max()))
            times: dict[str, list[float]] = {"numlstm": [], "numpy": []}
            for _ in range(args.repeats):
                times["numlstm"].append(time_call(ours, args.min_time))
                times["numpy"].append(time_call(plain, args.min_time))
            med = {k: statistics.median(v) for k, v in times.items()}
            for impl in ("numlstm", "numpy"):
                speedup = f"{med['numpy'] / med['numlstm']:.2f}x" if impl == "numlstm" else ""
                ms, wps = 1e3 * med[impl], T * B / med[impl]
                print(
                    f"| {shape:6s} | {T:2d} | {B:2d} | {H:3d} | {cell:4s} | {impl:14s} "
                    f"| {ms:9.2f} | {wps:7,.0f} | {speedup:8s} |"
                )
            checks.append(f"{shape} {cell}: {diff:.1e}")
    print(
        "\nSame computation: max abs difference of dx and dWx, numlstm vs numpy: "
        + "; ".join(checks)
    )
    print(
        "words/s = T * B / (seconds per forward + backward call). The machine is noisy: "
        "compare the ratios measured in one run, not absolute numbers across runs."
    )


if __name__ == "__main__":
    main()
