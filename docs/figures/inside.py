"""Figures: gate activations and state of the trained LSTM and GRU over real PTB text, and
which units saturate.

The gates come from the layers' caches: LSTMCache.gates (T, B, 4H) holds i, f, g, o after
their nonlinearities (L3, L4) and LSTMCache.c the cell states c_0..c_T (L5); GRUCache.gates
(T, B, 3H) holds r, z, n (G3, G4) and GRUCache.h the states h_0..h_T (G5). Models: the Medium
LSTM run's checkpoint (copied once) and the one-epoch GRU of docs/figures/vanishing.py.

    python docs/figures/inside.py    # writes docs/img/inside_lstm.png, inside_gru.png and
                                     # inside_saturation.png (~1 min)
"""

from __future__ import annotations

import numpy as np
from _common import plt, save
from _models import fresh, ptb, trained

import numlstm

UNITS = 64  # units 0..63 of the layer
LAYER = 0  # the layer that reads the words
LOW, HIGH = 0.05, 0.95


def layer_caches(model, ids: np.ndarray) -> list:
    """Run every layer over ids (T, B) from a zero state with the fast layer API (no dropout);
    return each layer's cache."""
    p = model.params
    x = p["embedding"][ids]  # (E1)
    B, H = ids.shape[1], model.hidden_size
    caches = []
    for layer in range(model.num_layers):
        h0 = np.zeros((B, H), model.dtype)
        if model.cell == "lstm":
            hs, _, _, cache = numlstm.lstm_forward(x, h0, h0, p[f"l{layer}.Wx"],
                                                   p[f"l{layer}.Wh"], p[f"l{layer}.b"],
                                                   model.forget_bias)  # fmt: skip
        else:
            hs, _, cache = numlstm.gru_forward(x, h0, p[f"l{layer}.Wx"], p[f"l{layer}.Wh"],
                                               p[f"l{layer}.bx"], p[f"l{layer}.bh"])  # fmt: skip
        caches.append(cache)
        x = np.array(hs)
    return caches


def gates(cell: str, cache, H: int) -> dict[str, np.ndarray]:
    """name -> (T, B, H) gate values from a cache."""
    g = cache.gates
    if cell == "lstm":
        return {"i": g[..., :H], "f": g[..., H : 2 * H], "o": g[..., 3 * H :]}
    return {"r": g[..., :H], "z": g[..., H : 2 * H]}


def heat(model, desc: str, ids: np.ndarray, words: list[str], name: str) -> None:
    H = model.hidden_size
    cache = layer_caches(model, ids[:, None])[LAYER]
    panels = gates(model.cell, cache, H)
    if model.cell == "lstm":
        panels["c (cell state)"] = cache.c[1:, :, :]
    else:
        panels["h (state)"] = cache.h[1:, :, :]
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, 3.1 * len(panels)), sharex=True)
    for ax, (label, v) in zip(axes, panels.items(), strict=True):
        m = v[:, 0, :UNITS].T  # (units, words)
        if label.startswith(("c", "h")):
            lim = float(np.percentile(np.abs(m), 99))
            im = ax.imshow(m, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                           interpolation="nearest")  # fmt: skip
        else:
            im = ax.imshow(m, aspect="auto", cmap="viridis", vmin=0, vmax=1,
                           interpolation="nearest")  # fmt: skip
        ax.set_ylabel(f"{label}\nunit")
        fig.colorbar(im, ax=ax, pad=0.01)
    axes[-1].set_xticks(range(len(words)))
    axes[-1].set_xticklabels(words, rotation=90, fontsize=8)
    axes[0].set_title(f"{desc}\nlayer {LAYER}, units 0-{UNITS - 1}, the first words of "
                      "ptb.valid.txt from a zero state", fontsize=9)  # fmt: skip
    save(fig, name)


def saturation(model, ids: np.ndarray) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]:
    """(layer, gate) -> per-unit fractions of values > HIGH and < LOW over all steps and rows."""
    out = {}
    for layer, cache in enumerate(layer_caches(model, ids)):
        for g, v in gates(model.cell, cache, model.hidden_size).items():
            out[layer, g] = ((v > HIGH).mean(axis=(0, 1)), (v < LOW).mean(axis=(0, 1)))
    return out


def main() -> None:
    data = ptb()
    end = [k for k, w in enumerate(data.valid) if data.id_to_word[w] == "<eos>"][1] + 1
    ids = np.asarray(data.valid[:end])  # the first two sentences
    words = [data.id_to_word[w] for w in ids]
    lstm, lstm_desc = trained("lstm")
    gru, gru_desc = trained("gru")
    heat(lstm, lstm_desc, ids, words, "inside_lstm")
    heat(gru, gru_desc, ids, words, "inside_gru")

    # Saturation over 10 rows x 200 words of ptb.valid (2,000 words), zero initial state.
    text = np.asarray(data.valid[:2000]).reshape(10, 200).T  # (T, B)
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex=True)
    bins = np.linspace(0, 1, 41)
    for col, (model, title) in enumerate(((lstm, "LSTM 2x650 (Medium run)"),
                                          (gru, "GRU 2x200 (one epoch)"))):  # fmt: skip
        sat = saturation(model, text)
        gate_means = {(layer, g): float(v.mean()) for layer, cache in
                      enumerate(layer_caches(model, text))
                      for g, v in gates(model.cell, cache, model.hidden_size).items()}  # fmt: skip
        init = saturation(fresh(model.cell), text)
        for (layer, g), (high, low) in sat.items():
            frac = high + low
            ax = axes[layer, col]
            ax.hist(frac, bins=bins, histtype="step", lw=1.6, label=f"{g}")
            most = frac > 0.5
            print(f"{title} layer {layer} gate {g}: mean value {gate_means[layer, g]:.3f}, "
                  f"mean saturated fraction {frac.mean():.3f}, units > 50% saturated: "
                  f"{most.sum()} of {frac.size} ({(high[most] > low[most]).sum()} of them mostly "
                  f"> {HIGH}), at initialisation: {sum(init[layer, g]).mean():.4f}")  # fmt: skip
        for layer in range(2):
            axes[layer, col].set_title(f"{title}, layer {layer}", fontsize=9)
            axes[layer, col].set_yscale("log")
            axes[layer, col].legend(fontsize=8)
            axes[layer, col].set_ylabel("units")
    for ax in axes[1]:
        ax.set_xlabel(f"fraction of the 2,000 steps with the gate < {LOW} or > {HIGH}")
    save(fig, "inside_saturation")


if __name__ == "__main__":
    main()
