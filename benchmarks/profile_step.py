"""Where the time of one training step goes: a per-phase profile of the PTB LSTM models.

The step is rebuilt here from the same internal functions ``LanguageModel.loss_and_grads``,
``clip_by_global_norm``/``clip_factor`` and ``SGD.step`` use (the layer loops of
``lstm_forward_unchecked`` / ``lstm_backward_unchecked`` written out), with
``time.perf_counter`` around each phase:

    embedding lookup, dropout forward / backward,
    LSTM forward: GEMMs (input projection, T recurrent products) vs gate kernels vs the rest,
    softmax: GEMMs (logits, [dW; db], dh) vs the fused softmax/cross-entropy kernel vs the row
    scalings of its factored gradient (dS2f),
    LSTM backward: kernels vs GEMMs (T recurrent products, dWh, dWx, dx) vs the rest,
    embedding gradient (row-sparse), global norm, SGD update,
    Python overhead = total - sum of the phases.

Before timing, one step with keep_prob = 1 is checked against ``model.loss`` (same loss);
the real ``train.train_step`` is timed alternately with the profiled step, so that the cost
of the timers themselves is visible (the profiled total includes them).

    python benchmarks/profile_step.py                       # small and medium, 10 steps each
    python benchmarks/profile_step.py --configs small --steps 2      # smoke test

Timings are printed, never asserted; the machine is noisy.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from numlstm import kernels
from numlstm.config import Config, get_config
from numlstm.fast.sparse import IndexedRows
from numlstm.fast.workspace import Workspace
from numlstm.layers import dropout_backward, dropout_forward
from numlstm.model import LanguageModel
from numlstm.optim import SGD, clip_factor, global_norm
from numlstm.train import train_step

B = 20
PHASES = [
    "embedding lookup",
    "dropout forward",
    "lstm fwd GEMMs",
    "lstm fwd gate kernels",
    "lstm fwd other (copies)",
    "softmax GEMMs (logits, [dW; db], dh)",
    "softmax/xent kernel",
    "softmax row scalings (hq, dh)",
    "dropout backward",
    "lstm bwd gate kernels",
    "lstm bwd GEMMs",
    "lstm bwd other (db sum, copies)",
    "embedding rows grad (sparse)",
    "global norm",
    "SGD update",
]


class Clock:
    """Accumulates seconds per phase: ``t = clock.lap("phase", t)`` after each phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def lap(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[phase] += now - since
        return now


def lstm_forward_profiled(x, h0, c0, Wx, Wh, b, forget_bias, ws, tag, clock):
    """``lstm_forward_unchecked`` with timers. Returns (hs, hT, cT, cache pieces)."""
    T, Bn, D = x.shape
    H = h0.shape[1]
    dt = x.dtype
    t = time.perf_counter()
    ax = ws.empty(tag + ".ax", (T, Bn, 4 * H), dt)
    gates = ws.empty(tag + ".gates", (T, Bn, 4 * H), dt)
    h = ws.empty(tag + ".h", (T + 1, Bn, H), dt)
    c = ws.empty(tag + ".c", (T + 1, Bn, H), dt)
    tc = ws.empty(tag + ".tc", (T, Bn, H), dt)
    ah = ws.empty(tag + ".ah", (Bn, 4 * H), dt)
    t = clock.lap("lstm fwd other (copies)", t)
    np.matmul(x.reshape(T * Bn, D), Wx, out=ax.reshape(T * Bn, 4 * H))  # (L1)
    t = clock.lap("lstm fwd GEMMs", t)
    forget_bias = dt.type(forget_bias)
    h[0] = h0
    c[0] = c0
    t = clock.lap("lstm fwd other (copies)", t)
    for s in range(T):
        np.matmul(h[s], Wh, out=ah)  # (L2)
        t = clock.lap("lstm fwd GEMMs", t)
        kernels.lstm_cell_forward(
            ax[s], ah, b, c[s], forget_bias, gates[s], c[s + 1], tc[s], h[s + 1]
        )
        t = clock.lap("lstm fwd gate kernels", t)
    hT, cT = h[T].copy(), c[T].copy()
    clock.lap("lstm fwd other (copies)", t)
    return h[1:], hT, cT, (x, Wx, Wh, gates, h, c, tc)


def lstm_backward_profiled(dhs, cache, ws, tag, clock):
    """``lstm_backward_unchecked`` with timers (zero gradient on the final state)."""
    x, Wx, Wh, gates, h, c, tc = cache
    T, Bn, D = x.shape
    H = Wh.shape[0]
    dt = x.dtype
    t = time.perf_counter()
    da = ws.empty(tag + ".da", (T, Bn, 4 * H), dt)
    dh = ws.empty(tag + ".dh", (Bn, H), dt)
    dc = ws.empty(tag + ".dc", (Bn, H), dt)
    dh[...] = 0
    dc[...] = 0
    WhT = Wh.T
    t = clock.lap("lstm bwd other (db sum, copies)", t)
    for s in range(T - 1, -1, -1):
        kernels.lstm_cell_backward(dhs[s], dh, dc, gates[s], c[s], tc[s], da[s])
        t = clock.lap("lstm bwd gate kernels", t)
        if s > 0:  # dh0 is not needed (truncated BPTT): no GEMM at s = 0
            np.matmul(da[s], WhT, out=dh)  # (dL2)
        t = clock.lap("lstm bwd GEMMs", t)
    dA = da.reshape(T * Bn, 4 * H)
    dWh = np.matmul(h[:T].reshape(T * Bn, H).T, dA, out=ws.empty(tag + ".dWh", Wh.shape, dt))
    dWx = np.matmul(x.reshape(T * Bn, D).T, dA, out=ws.empty(tag + ".dWx", Wx.shape, dt))
    dx = ws.empty(tag + ".dx", (T, Bn, D), dt)
    np.matmul(dA, Wx.T, out=dx.reshape(T * Bn, D))  # (dL1)
    t = clock.lap("lstm bwd GEMMs", t)
    db = np.sum(dA, axis=0, out=ws.empty(tag + ".db", (4 * H,), dt))
    clock.lap("lstm bwd other (db sum, copies)", t)
    return dx, dWx, dWh, db


def profiled_step(model: LanguageModel, opt: SGD, x, y, state, cfg: Config, rng, ws, clock):
    """One training step (loss_and_grads + clip + SGD) with every phase timed."""
    p, H, L = model.params, model.hidden_size, model.num_layers
    Bn, T = x.shape
    keep = cfg.keep_prob
    t = time.perf_counter()
    ids = np.ascontiguousarray(x.T)
    inp = np.take(p["embedding"], ids, axis=0)  # (E1)
    t = clock.lap("embedding lookup", t)
    masks = []
    inp, m = dropout_forward(inp, keep, rng)  # (D1)
    masks.append(m)
    t = clock.lap("dropout forward", t)
    caches, new_state = [], []
    for layer in range(L):
        h0, c0 = state[layer]
        hs, hT, cT, cache = lstm_forward_profiled(
            inp,
            h0,
            c0,
            p[f"l{layer}.Wx"],
            p[f"l{layer}.Wh"],
            p[f"l{layer}.b"],
            model.forget_bias,
            ws,
            f"l{layer}",
            clock,
        )
        caches.append(cache)
        new_state.append((hT, cT))
        t = time.perf_counter()
        inp, m = dropout_forward(hs, keep, rng)
        masks.append(m)
        t = clock.lap("dropout forward", t)
    top = inp.reshape(T * Bn, H)
    targets = np.ascontiguousarray(y.T).reshape(-1)
    W, V = p["softmax_w"], model.vocab_size
    dt, N = top.dtype, T * Bn
    gemms, scalings = "softmax GEMMs (logits, [dW; db], dh)", "softmax row scalings (hq, dh)"
    z = np.matmul(top, W, out=ws.empty("softmax.z", (N, V), dt))  # (S1)
    t = clock.lap(gemms, t)
    losses = ws.empty("softmax.losses", (N,), np.dtype(np.float64))
    q = ws.empty("softmax.q", (N,), dt)
    kernels.softmax_xent_rows(z, p["softmax_b"], targets, dt.type(1.0 / Bn), losses, q)
    loss = float(losses.sum()) / Bn
    t = clock.lap("softmax/xent kernel", t)
    hq = ws.empty("softmax.hq", (N, H + 1), dt)
    np.multiply(top, q[:, None], out=hq[:, :H])  # (dS2f)
    hq[:, H] = q
    t = clock.lap(scalings, t)
    dWb = np.matmul(hq.T, z, out=ws.empty("softmax.dWb", (H + 1, V), dt))  # (dS1)
    dh = np.matmul(z, W.T, out=ws.empty("softmax.dh", top.shape, dt))
    t = clock.lap(gemms, t)
    dh *= q[:, None]  # (dS2f)
    t = clock.lap(scalings, t)
    grads = {"softmax_w": dWb[:H], "softmax_b": dWb[H]}
    d = dh.reshape(T, Bn, H)
    for layer in range(L - 1, -1, -1):
        d = np.ascontiguousarray(dropout_backward(d, masks[layer + 1]))  # dD1
        t = clock.lap("dropout backward", t)
        d, dWx, dWh, dbl = lstm_backward_profiled(d, caches[layer], ws, f"l{layer}", clock)
        grads[f"l{layer}.Wx"], grads[f"l{layer}.Wh"], grads[f"l{layer}.b"] = dWx, dWh, dbl
        t = time.perf_counter()
    d = dropout_backward(d, masks[0])
    t = clock.lap("dropout backward", t)
    slot = ws.scratch("embedding.slot", (V,), np.dtype(np.int64), -1)
    rows = ws.empty("embedding.rows", (N,), np.dtype(np.int64))
    values = ws.empty("embedding.values", (N, H), dt)
    U = kernels.embedding_rows_grad(ids.reshape(-1), d.reshape(N, H), slot, rows, values)  # dE1
    grads["embedding"] = IndexedRows(rows[:U], values[:U], p["embedding"].shape)
    t = clock.lap("embedding rows grad (sparse)", t)
    grads = {k: grads[k] for k in p}
    norm = global_norm(grads)  # (O1)
    t = clock.lap("global norm", t)
    opt.step(grads, grad_scale=clip_factor(norm, cfg.max_grad_norm))  # (O2, O3)
    clock.lap("SGD update", t)
    return loss, new_state


def profile_config(name: str, steps: int, warmup: int, seed: int = 0) -> None:
    cfg = get_config(name)
    rng_ids = np.random.default_rng(seed)
    batches = [
        (np.ascontiguousarray(a[:, :-1]), np.ascontiguousarray(a[:, 1:]))
        for a in rng_ids.integers(0, cfg.vocab_size, (4, B, cfg.num_steps + 1)).astype(np.int32)
    ]

    def new_model() -> LanguageModel:
        return LanguageModel(
            cfg.vocab_size, cfg.hidden_size, cfg.num_layers, init_scale=cfg.init_scale, seed=seed
        )

    # Mirror check: without dropout, the profiled step's loss is model.loss's.
    model = new_model()
    x, y = batches[0]
    want, _ = model.loss(x, y, model.init_state(B))
    got, _ = profiled_step(
        model,
        SGD(model.params, cfg.learning_rate),
        x,
        y,
        model.init_state(B),
        cfg.replace(keep_prob=1.0),
        np.random.default_rng(seed),
        Workspace(),
        Clock(),
    )
    check = abs(got - want) / abs(want)

    ours, real = new_model(), new_model()
    ours_opt, real_opt = SGD(ours.params, cfg.learning_rate), SGD(real.params, cfg.learning_rate)
    ours_rng, real_rng = np.random.default_rng(seed), np.random.default_rng(seed)
    ours_state, real_state = ours.init_state(B), real.init_state(B)
    ws = Workspace()
    clock = Clock()
    profiled_total = real_total = 0.0
    for i in range(warmup + steps):
        x, y = batches[i % len(batches)]
        timing = i >= warmup
        c = clock if timing else Clock()
        start = time.perf_counter()
        _, ours_state = profiled_step(ours, ours_opt, x, y, ours_state, cfg, ours_rng, ws, c)
        mid = time.perf_counter()
        _, real_state = train_step(
            real, real_opt, x, y, real_state, cfg.max_grad_norm, cfg.keep_prob, real_rng
        )
        end = time.perf_counter()
        if timing:
            profiled_total += mid - start
            real_total += end - mid

    total_ms = 1e3 * profiled_total / steps
    print(
        f"\n## {name}: H={cfg.hidden_size}, layers={cfg.num_layers}, T={cfg.num_steps}, "
        f"B={B}, keep_prob={cfg.keep_prob} (LSTM, float32), mean of {steps} steps"
    )
    print(f"mirror check: profiled loss vs model.loss, relative difference {check:.1e}\n")
    print("| phase | ms / step | % |")
    print("|---|---:|---:|")
    accounted = 0.0
    for phase in PHASES:
        ms = 1e3 * clock.seconds.get(phase, 0.0) / steps
        accounted += ms
        print(f"| {phase} | {ms:.2f} | {100 * ms / total_ms:.1f} |")
    other = total_ms - accounted
    print(f"| Python overhead (total - phases) | {other:.2f} | {100 * other / total_ms:.1f} |")
    print(f"| **total (profiled step)** | **{total_ms:.2f}** | 100 |")
    gemm = sum(clock.seconds.get(k, 0.0) for k in PHASES if "GEMMs" in k) * 1e3 / steps
    print(
        f"\nGEMMs {gemm:.2f} ms ({100 * gemm / total_ms:.0f}%), everything else "
        f"{total_ms - gemm:.2f} ms. train.train_step on the same batches, untimed phases: "
        f"{1e3 * real_total / steps:.2f} ms/step ({B * cfg.num_steps * steps / real_total:,.0f} "
        "words/s); the difference to the profiled total is the timers' own cost and noise."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="small,medium", help="comma list: small,medium,large")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    args = parser.parse_args(argv)
    for name in (c for c in args.configs.split(",") if c):
        profile_config(name, args.steps, args.warmup)
    print("\nTimings are never asserted; the machine is noisy: compare shares, not absolutes.")


if __name__ == "__main__":
    main()
