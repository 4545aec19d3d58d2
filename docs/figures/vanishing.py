"""Figure: the norm of dL/dh_t against the distance from the loss, for the LSTM, the GRU and the
plain RNN at initialisation and after training on PTB, and the LSTM forget gate's bias.

L = sum(u * h_T) with u a random unit vector per row: the loss sits on the last of T = 100
steps only. Inputs: B = 8 windows of 100 words from the start of ptb.valid.txt through the
embedding (and through layer 0 for layer 1). Backward one step at a time with
numlstm.reference in float64. Trained models: the Medium LSTM run's checkpoint (copied once),
and the GRU and the plain RNN trained by ``python -m numlstm train --config small --cell gru
--max_max_epoch 1 --out /tmp/learn-gru`` and the same with ``--cell rnn --out /tmp/learn-rnn``
(NUMLSTM_MEDIUM_RUN, NUMLSTM_GRU_RUN, NUMLSTM_RNN_RUN choose other run folders).

    python docs/figures/vanishing.py      # writes docs/img/vanishing.png (about 50 s)
"""

from __future__ import annotations

import numpy as np
from _common import plt, save
from _models import (
    check_against_reference,
    fresh,
    grad_norms,
    params64,
    ptb,
    run_layers,
    trained,
    windows,
)

T, B = 100, 8


def unit_rows(H: int, seed: int = 1) -> np.ndarray:
    u = np.random.default_rng(seed).normal(size=(B, H))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def curves(model, ids, num_layers=None) -> list[np.ndarray]:
    """Per layer: geometric mean over the B rows of ||dL/dh_t||, distance 0..T."""
    layers = run_layers(model, params64(model), ids, num_layers)
    u = unit_rows(model.hidden_size)
    return [np.exp(np.log(grad_norms(model.cell, lay["caches"], u) + 1e-300).mean(axis=1))
            for lay in layers]  # fmt: skip


def rnn_saturation(model, ids) -> list[str]:
    """Per layer of a plain RNN: mean tanh derivative 1 - h^2 over the windows, the fraction of
    |h| > 0.9, and W_h's spectral radius (the two factors of dR2's step Jacobian)."""
    p = params64(model)
    lines = []
    for layer, lay in enumerate(run_layers(model, p, ids)):
        h = lay["hs"]
        radius = np.abs(np.linalg.eigvals(p[f"l{layer}.Wh"])).max()
        lines.append(f"layer {layer}: mean 1-h^2 {np.mean(1 - h * h):.3f}, "
                     f"|h| > 0.9 {np.mean(np.abs(h) > 0.9):.1%}, "
                     f"spectral radius of Wh {radius:.3f}")  # fmt: skip
    return lines


def at(curve: np.ndarray) -> str:
    return ", ".join(f"d={d}: {curve[d]:.1e}" for d in (1, 10, 25, 50, 100))


def main() -> None:
    check_against_reference()
    data = ptb()
    ids = windows(data.valid, T, B)
    dist = np.arange(T + 1)
    lstm_t, lstm_desc = trained("lstm")
    gru_t, gru_desc = trained("gru")
    rnn_t, rnn_desc = trained("rnn")
    results = {
        "LSTM 2x650, initialisation": (curves(fresh("lstm"), ids), "C0", ":"),
        "LSTM 2x650, trained": (curves(lstm_t, ids), "C0", "-"),
        "GRU 2x200, initialisation": (curves(fresh("gru"), ids), "C1", ":"),
        "GRU 2x200, trained": (curves(gru_t, ids), "C1", "-"),
        "RNN 2x200, initialisation": (curves(fresh("rnn"), ids), "C2", ":"),
        "RNN 2x200, trained": (curves(rnn_t, ids), "C2", "-"),
    }
    biases = {fb: curves(fresh("lstm", forget_bias=fb), ids, 1)[0] for fb in (0.0, 1.0, 2.0)}

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for label, (per_layer, color, ls) in results.items():
        ax1.semilogy(dist, per_layer[0], ls, color=color, lw=2, label=f"{label}, layer 0")
        ax1.semilogy(dist, per_layer[1], ls, color=color, lw=0.9, label=f"{label}, layer 1")
    ax1.set_xlabel(r"distance from the loss $T - t$ (steps)")
    ax1.set_ylabel(r"$\Vert \partial L / \partial h_t \Vert$ (geometric mean of 8 rows)")
    ax1.set_title("Loss on the last of 100 steps: LSTM, GRU and plain RNN", fontsize=10)
    ax1.legend(fontsize=7)
    ax1.grid(True, alpha=0.3)
    for (fb, curve), color in zip(biases.items(), ("C0", "C4", "C5"), strict=True):
        ax2.semilogy(
            dist, curve, ":", color=color, lw=2, label=f"initialisation, forget_bias {fb:g}"
        )
    ax2.semilogy(dist, results["LSTM 2x650, trained"][0][0], "-", color="C0", lw=2,
                 label="trained (forget_bias 0)")  # fmt: skip
    ax2.set_xlabel(r"distance from the loss $T - t$ (steps)")
    ax2.set_title("LSTM 2x650, layer 0: the forget gate's bias", fontsize=10)
    ax2.legend(fontsize=8)
    ax2.grid(True, alpha=0.3)
    ax1.set_ylim(1e-24, 10)
    save(fig, "vanishing")
    print(lstm_desc)
    print(gru_desc)
    print(rnn_desc)
    for label, (per_layer, _, _) in results.items():
        for layer, c in enumerate(per_layer):
            print(
                f"{label}, layer {layer}: "
                + ", ".join(f"d={d}: {c[d]:.1e}" for d in (1, 10, 25, 50, 100))
            )
    for fb, c in biases.items():
        print(f"LSTM init forget_bias {fb:g}, layer 0: " + at(c))
    for label, model in (("initialisation", fresh("rnn")), ("trained", rnn_t)):
        for line in rnn_saturation(model, ids):
            print(f"RNN 2x200, {label}, {line}")


if __name__ == "__main__":
    main()
