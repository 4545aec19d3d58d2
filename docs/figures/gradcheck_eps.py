"""Figure: relative error of a central-difference gradient check against the step eps.

An LSTM layer (T=5, B=3, D=4, H=6), scalar loss f = sum(hs * dhs) with fixed random dhs, the
gradient of Wh. float64: numlstm.gradcheck itself. float32: the same central differences (C1)
written out here, because numlstm.gradcheck refuses float32 parameters on purpose.

    python docs/figures/gradcheck_eps.py      # writes docs/img/gradcheck_eps.png (~10 s)
"""

from __future__ import annotations

import numpy as np
from _common import plt, save

import numlstm

T, B, D, H = 5, 3, 4, 6
EPS = np.logspace(-1, -10, 37)
SEEDS = range(5)


def problem(seed: int, dtype):
    rng = np.random.default_rng(seed)
    arrays = {
        "x": rng.normal(size=(T, B, D)),
        "h0": rng.normal(size=(B, H)) * 0.5,
        "c0": rng.normal(size=(B, H)) * 0.5,
        "Wx": rng.normal(size=(D, 4 * H)) * 0.5,
        "Wh": rng.normal(size=(H, 4 * H)) * 0.5,
        "b": rng.normal(size=4 * H) * 0.1,
        "dhs": rng.normal(size=(T, B, H)),  # random upstream weights: every dhs[t] differs
    }
    return {k: np.ascontiguousarray(v, dtype) for k, v in arrays.items()}


def loss_and_grad(p):
    hs, _, _, cache = numlstm.lstm_forward(p["x"], p["h0"], p["c0"], p["Wx"], p["Wh"], p["b"])
    zeros = np.zeros_like(p["h0"])
    dWh = numlstm.lstm_backward(p["dhs"], zeros, zeros, cache)[4]
    return float((hs * p["dhs"]).sum(dtype=hs.dtype)), dWh


def errors_float64(seed: int) -> np.ndarray:
    p = problem(seed, np.float64)
    _, dWh = loss_and_grad(p)

    def f():
        return loss_and_grad(p)[0]

    return np.array([numlstm.gradcheck(f, {"Wh": p["Wh"]}, {"Wh": dWh}, eps=e)["Wh"] for e in EPS])


def errors_float32(seed: int) -> np.ndarray:
    p = problem(seed, np.float32)
    _, dWh = loss_and_grad(p)  # the float32 backward pass is what a float32 check would test
    Wh = p["Wh"].reshape(-1)
    out = []
    for e in EPS:
        num = np.empty(Wh.size)
        for k in range(Wh.size):
            old = Wh[k]
            Wh[k] = old + np.float32(e)
            fp = loss_and_grad(p)[0]
            Wh[k] = old - np.float32(e)
            fm = loss_and_grad(p)[0]
            Wh[k] = old
            num[k] = (fp - fm) / (2 * e)  # (C1)
        out.append(numlstm.relative_error(dWh.reshape(-1), num))  # (C2), atol 1e-4
    return np.array(out)


def main() -> None:
    e64 = np.array([errors_float64(s) for s in SEEDS])
    e32 = np.array([errors_float32(s) for s in SEEDS])
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for errs, label, color in ((e64, "float64 (numlstm.gradcheck)", "C0"),
                               (e32, "float32 (same differences)", "C3")):  # fmt: skip
        med = np.median(errs, axis=0)
        ax.fill_between(EPS, errs.min(axis=0), errs.max(axis=0), color=color, alpha=0.2)
        ax.loglog(EPS, med, "o-", ms=3, color=color, label=label)
    # Slopes of the two error terms, anchored on the float64 median.
    med64 = np.median(e64, axis=0)
    k_trunc = med64[2] / EPS[2] ** 2
    k_round = med64[-1] * EPS[-1]
    ax.loglog(
        EPS[:14],
        k_trunc * EPS[:14] ** 2,
        "k--",
        lw=1,
        label=r"$\propto \varepsilon^2$ (truncation)",
    )
    ax.loglog(
        EPS[18:], k_round / EPS[18:], "k:", lw=1.5, label=r"$\propto 1/\varepsilon$ (rounding)"
    )
    ax.axvline(3e-5, color="C2", lw=1)
    ax.text(
        3e-5, 3e-1, r" $\varepsilon = 3\cdot10^{-5}$" "\n (numlstm default)", color="C2", fontsize=8
    )
    ax.axhline(1e-6, color="grey", lw=0.8)
    ax.text(8e-2, 1.4e-6, "1e-6: correct (optim.md)", color="grey", fontsize=8)
    ax.invert_xaxis()
    ax.set_xlabel(r"finite-difference step $\varepsilon$ (large on the left)")
    ax.set_ylabel(r"worst relative error $\max_j \rho_j$ of $dW_h$ (C2)")
    ax.set_title(f"Gradient check of an LSTM layer's Wh (T={T}, B={B}, D={D}, H={H}); "
                 f"median and range of {len(SEEDS)} seeds", fontsize=9)  # fmt: skip
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(True, which="major", alpha=0.3)
    save(fig, "gradcheck_eps")
    for i, e in enumerate(EPS):
        print(f"eps {e:8.1e}  float64 median {med64[i]:.1e}  float32 median "
              f"{np.median(e32[:, i]):.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
