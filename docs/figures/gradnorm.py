"""Figure: the global gradient norm (O1) before clipping, step by step, over the first steps
of training the Small config on PTB, against the clipping threshold max_grad_norm = 5 (O2).

``python -m numlstm train`` records the norm (grad_norm.csv, see --run below); to compare the
LSTM with the GRU at the start, this script trains both for itself: the first STEPS batches of
epoch 1 (20 rows x 20 steps each, state carried across batches) of the Small LSTM (learning
rate 1.0) and the Small GRU (0.5, as in docs/results.md), from the same initialisation as
``python -m numlstm train --config small`` (seed 0), no dropout, with the update of
numlstm.train.train_step written out so that the norm can be recorded.

    python docs/figures/gradnorm.py     # writes docs/img/gradnorm.png (~2 min)

With ``--run DIR`` it draws a whole run instead, from the ``grad_norm.csv`` that
``python -m numlstm train`` writes into its run folder (every step's norm before clipping,
numlstm/io/grad_norm_log.py) and the folder's ``summary.json`` (threshold, epochs, learning
rates, resumes): the norm per step on a log axis, its running median, the threshold, the epoch
boundaries and the start of the learning-rate decay; below, the median norm and the fraction of
steps clipped per epoch. It prints the per-epoch numbers. A run still training can be drawn.

    python docs/figures/gradnorm.py --run /tmp/gnorm-small   # writes docs/img/gradnorm_run.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _common import plt, save
from _models import ptb

import numlstm
from numlstm.io.grad_norm_log import GRAD_NORM_CSV, read_rows, running_median
from numlstm.io.ptb import ptb_iterator

STEPS = 300
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


def first_steps() -> None:
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


def whole_run(run: Path, name: str) -> None:
    """The figure of a run folder's grad_norm.csv, and its per-epoch numbers printed."""
    if not (run / GRAD_NORM_CSV).exists():
        raise SystemExit(f"--run: no {GRAD_NORM_CSV} in {run} (a run trained before numlstm "
                         "recorded the norms, or not a run folder)")  # fmt: skip
    rows = read_rows(run / GRAD_NORM_CSV)
    if not rows:
        raise SystemExit(f"--run: {run / GRAD_NORM_CSV} has no rows yet")
    summary = json.loads((run / "summary.json").read_text())
    info, config = summary["grad_norm"], summary["config"]
    tau, per_epoch = info["max_grad_norm"], info["steps_per_epoch"]
    epoch = np.array([r[0] for r in rows])
    norms = np.array([r[2] for r in rows])
    x = epoch - 1 + np.array([r[1] for r in rows]) / per_epoch  # in epochs
    lrs = {h["epoch"]: h["lr"] for h in summary["history"]}
    decay = config["max_epoch"]  # (O4): the lr is halved from epoch max_epoch + 1 on
    window = max(1, per_epoch // 10) | 1

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1.4]})  # fmt: skip
    ax1.semilogy(x, norms, color="C0", lw=0.25, alpha=0.5, label="norm per step")
    ax1.semilogy(x, running_median(norms, window), color="C1", lw=1.5,
                 label=f"running median ({window} steps, a tenth of an epoch)")  # fmt: skip
    ax1.axhline(tau, color="k", ls="--", lw=1, label=f"max_grad_norm = {tau:g} (above: clipped)")
    epochs = sorted(set(epoch.tolist()))
    for e in range(1, epochs[-1]):
        ax1.axvline(e, color="gray", lw=0.5, alpha=0.5)
    for ax in (ax1, ax2):
        if decay < epochs[-1]:
            ax.axvline(decay, color="C3", lw=1.2, label="lr decay starts" if ax is ax1 else None)
    resumes = [s["start"]["epoch"] + s["start"]["step"] / per_epoch
               for s in summary["segments"][1:]]  # fmt: skip
    for k, r in enumerate(resumes):
        ax1.axvline(r, color="gray", ls=":", lw=1, label="resumed" if k == 0 else None)
    cell = summary.get("cell", "lstm").upper()
    ax1.set_title(f"{cell} {config['num_layers']}x{config['hidden_size']} on PTB: global "
                  f"gradient norm before clipping, every step of epochs {epochs[0]}-{epochs[-1]} "
                  f"({len(rows):,} steps)", fontsize=10)  # fmt: skip
    ax1.set_ylabel(r"$\Vert g \Vert$ before clipping (O1)")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8, loc="upper right")

    print(f"{run / GRAD_NORM_CSV}: {len(rows)} steps, epochs {epochs[0]}-{epochs[-1]}, "
          f"threshold {tau:g}, {per_epoch} steps per full epoch")  # fmt: skip
    print("epoch  lr      steps  median  mean    p90     max      clipped")
    medians, clipped = [], []
    for e in epochs:
        n = norms[epoch == e]
        medians.append(np.median(n))
        clipped.append(np.mean(n > tau))
        lr = f"{lrs[e]:<7.4g}" if e in lrs else "(runs) "
        print(f"{e:>5}  {lr} {n.size:>5}  {np.median(n):6.3f}  {n.mean():6.3f}  "
              f"{np.percentile(n, 90):6.3f}  {n.max():7.2f}  {clipped[-1]:7.2%}")  # fmt: skip
    centres = np.array(epochs) - 0.5
    ax2.bar(centres, clipped, width=0.8, color="C2", alpha=0.6, label="fraction clipped")
    ax2.set_ylabel("fraction of steps clipped", color="C2")
    ax2.set_ylim(0, max(0.05, 1.15 * max(clipped)))
    ax2b = ax2.twinx()
    ax2b.plot(centres, medians, "o-", color="C1", label="median norm")
    ax2b.set_ylabel("median norm", color="C1")
    ax2.set_xlabel("epoch (x = 2.5: halfway through epoch 3)")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8, loc="upper left")
    ax2b.legend(fontsize=8, loc="upper right")
    save(fig, name)


def main() -> None:
    global STEPS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("steps", nargs="?", type=int, default=STEPS,
                   help="first-steps figure: how many steps (default 300)")  # fmt: skip
    p.add_argument("--run", type=Path, help="draw this run folder's grad_norm.csv instead")
    p.add_argument("--name", default="gradnorm_run",
                   help="--run: the figure's name in docs/img (default gradnorm_run)")  # fmt: skip
    args = p.parse_args()
    if args.run is not None:
        whole_run(args.run, args.name)
    else:
        STEPS = args.steps
        first_steps()


if __name__ == "__main__":
    main()
