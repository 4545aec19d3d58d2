"""Figure: the norm of dL/dh_t against the distance from the loss, for the LSTM and the GRU at
initialisation and after training on PTB, and the LSTM forget gate's bias.

L = sum(u * h_T) with u a random unit vector per row: the loss sits on the last of T = 100
steps only. Inputs: B = 8 windows of 100 words from the start of ptb.valid.txt through the
embedding (and through layer 0 for layer 1). Backward one step at a time with
numlstm.reference in float64. Trained models: the Medium LSTM run's checkpoint (copied once)
and the GRU trained by ``python -m numlstm train --config small --cell gru --max_max_epoch 1
--out /tmp/learn-gru`` (NUMLSTM_MEDIUM_RUN, NUMLSTM_GRU_RUN choose other run folders).

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

import numlstm

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


def rnn_curve(ids, data_embedding_dim: int = 200):
    """The plain recurrent layer, if the package has one (numlstm.rnn_forward/rnn_backward):
    dL/dh_t from the layer API by running the suffix x[t:] from h_t (O(T^2) steps)."""
    if not hasattr(numlstm, "rnn_forward"):
        print("numlstm.rnn_forward is absent: no plain-RNN curve")
        return None
    try:
        return _rnn_curve(ids, data_embedding_dim)
    except (TypeError, ValueError, IndexError) as e:  # another signature than assumed below
        print(f"numlstm.rnn_forward/rnn_backward not usable as assumed ({e}): no plain-RNN curve")
        return None


def _rnn_curve(ids, data_embedding_dim):
    """rnn_forward(x, h0, Wx, Wh, b) -> (hs, hT, cache); rnn_backward(dhs, dhT, cache) ->
    (dx, dh0, dWx, dWh, db), as numlstm's other layers."""
    H = data_embedding_dim
    rng = np.random.default_rng(0)
    emb = rng.uniform(-0.1, 0.1, (10000, H))
    Wx, Wh = rng.uniform(-0.1, 0.1, (H, H)), rng.uniform(-0.1, 0.1, (H, H))
    b = np.zeros(H)
    x = emb[ids]
    u = unit_rows(H)
    h0 = np.zeros((B, H))
    hs = numlstm.rnn_forward(x, h0, Wx, Wh, b)[0]
    states = [h0] + [np.asarray(hs[t]) for t in range(T)]
    norms = []
    for t in range(T, -1, -1):  # h_t, distance T - t
        if t == T:
            norms.append(np.linalg.norm(u, axis=1))
            continue
        out = numlstm.rnn_forward(x[t:], states[t], Wx, Wh, b)
        dhs = np.zeros((T - t, B, H))
        dhs[-1] = u
        dh0 = numlstm.rnn_backward(dhs, np.zeros((B, H)), out[-1])[1]
        norms.append(np.linalg.norm(dh0, axis=1))
    return np.exp(np.log(np.array(norms) + 1e-300).mean(axis=1))


def at(curve: np.ndarray) -> str:
    return ", ".join(f"d={d}: {curve[d]:.1e}" for d in (1, 10, 25, 50, 100))


def main() -> None:
    check_against_reference()
    data = ptb()
    ids = windows(data.valid, T, B)
    dist = np.arange(T + 1)
    lstm_t, lstm_desc = trained("lstm")
    gru_t, gru_desc = trained("gru")
    results = {
        "LSTM 2x650, initialisation": (curves(fresh("lstm"), ids), "C0", ":"),
        "LSTM 2x650, trained": (curves(lstm_t, ids), "C0", "-"),
        "GRU 2x200, initialisation": (curves(fresh("gru"), ids), "C1", ":"),
        "GRU 2x200, trained": (curves(gru_t, ids), "C1", "-"),
    }
    biases = {fb: curves(fresh("lstm", forget_bias=fb), ids, 1)[0] for fb in (0.0, 1.0, 2.0)}
    rnn = rnn_curve(ids)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for label, (per_layer, color, ls) in results.items():
        ax1.semilogy(dist, per_layer[0], ls, color=color, lw=2, label=f"{label}, layer 0")
        ax1.semilogy(dist, per_layer[1], ls, color=color, lw=0.9, label=f"{label}, layer 1")
    if rnn is not None:
        ax1.semilogy(dist, rnn, "--", color="C2", label="plain RNN 200, initialisation")
    ax1.set_xlabel(r"distance from the loss $T - t$ (steps)")
    ax1.set_ylabel(r"$\Vert \partial L / \partial h_t \Vert$ (geometric mean of 8 rows)")
    ax1.set_title("Loss on the last of 100 steps: LSTM and GRU", fontsize=10)
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
    for label, (per_layer, _, _) in results.items():
        for layer, c in enumerate(per_layer):
            print(
                f"{label}, layer {layer}: "
                + ", ".join(f"d={d}: {c[d]:.1e}" for d in (1, 10, 25, 50, 100))
            )
    for fb, c in biases.items():
        print(f"LSTM init forget_bias {fb:g}, layer 0: " + at(c))
    if rnn is not None:
        print("plain RNN: " + at(rnn))


if __name__ == "__main__":
    main()
