"""Figure: the global gradient norm (O1) before clipping, step by step, over the first steps
of training the Small config on PTB, against the clipping threshold max_grad_norm = 5 (O2).

Training does not log the norm, so this script trains for itself: the first STEPS batches of
epoch 1 (20 rows x 20 steps each, state carried across batches) of the Small LSTM (learning
rate 1.0) and the Small GRU (0.5, as in docs/results.md), from the same initialisation as
``python -m numlstm train --config small`` (seed 0), no dropout, with the update of
numlstm.train.train_step written out so that the norm can be recorded.

    python docs/figures/gradnorm.py     # writes docs/img/gradnorm.png (~2 min)
"""

from __future__ import annotations

import sys

import numpy as np
from _common import plt, save
from _models import ptb

import numlstm
from numlstm.io.ptb import ptb_iterator

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 300
MAX_NORM = 5.0
B, T = 20, 20


def run(data, cell: str, lr: float) -> tuple[np.ndarray, np.ndarray]:
    model = numlstm.LanguageModel(10000, 200, 2, cell=cell, init_scale=0.1, seed=0)
    opt = numlstm.SGD(model.params, lr=lr)
    state = model.init_state(B)
    norms, losses = [], []
    for step, (x, y) in enumerate(ptb_iterator(data.train, B, T)):
        if step == STEPS:
            break
        loss, grads, state = model.loss_and_grads(x, y, state, sparse_embedding=True)
        norm = numlstm.global_norm(grads)  # (O1)
        opt.step(grads, grad_scale=numlstm.clip_factor(norm, MAX_NORM), norm=norm)  # (O2), (O3)
        norms.append(norm)
        losses.append(loss / T)
    return np.array(norms), np.array(losses)


def main() -> None:
    data = ptb()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    for cell, lr, color in (("lstm", 1.0, "C0"), ("gru", 0.5, "C1")):
        norms, losses = run(data, cell, lr)
        steps = np.arange(1, len(norms) + 1)
        clipped = norms > MAX_NORM
        ax1.semilogy(steps, norms, color=color, lw=0.9, label=f"{cell.upper()} 2x200, lr {lr:g}")
        ax2.plot(steps, np.exp(losses), color=color, lw=0.9, label=f"{cell.upper()}")
        print(f"{cell}: {len(norms)} steps; norm first {norms[0]:.2f}, max {norms.max():.2f} "
              f"(step {norms.argmax() + 1}), median {np.median(norms):.2f}, median of the last "
              f"100 {np.median(norms[-100:]):.2f}; clipped {clipped.sum()} of {len(norms)} steps "
              f"({clipped[:50].sum()} of the first 50, {clipped[-100:].sum()} of the last 100); "
              f"batch perplexity at the end {np.exp(losses[-20:].mean()):.0f}")  # fmt: skip
    ax1.axhline(MAX_NORM, color="k", ls="--", lw=1, label="max_grad_norm = 5 (above: clipped)")
    ax1.set_ylabel(r"global norm $\Vert g \Vert$ before clipping (O1)")
    ax1.set_title(f"Small config on PTB, the first {STEPS} training steps of epoch 1 "
                  f"({STEPS * B * T:,} words)", fontsize=10)  # fmt: skip
    ax1.legend(fontsize=8)
    ax1.grid(True, alpha=0.3)
    ax2.set_yscale("log")
    ax2.set_ylabel("perplexity of the batch")
    ax2.set_xlabel("training step (batch)")
    ax2.legend(fontsize=8)
    ax2.grid(True, alpha=0.3)
    save(fig, "gradnorm")


if __name__ == "__main__":
    main()
