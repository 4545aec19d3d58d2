"""Figure: train and valid perplexity per epoch of the PTB runs of docs/results.md: Small LSTM,
Small GRU and the Medium LSTM.

The finished runs' numbers are parsed from the per-epoch tables of docs/results.md (Small LSTM
run 8, Small GRU run 3); the Medium run's from its log.csv (copied once; NUMLSTM_MEDIUM_RUN
chooses another run folder).

    python docs/figures/curves.py     # writes docs/img/curves.png (a few seconds)
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

import numpy as np
from _common import MEDIUM_RUN, ROOT, plt, save


def results_table(marker: str) -> np.ndarray:
    """The first per-epoch table of docs/results.md after the line starting with ``marker``:
    rows of (epoch, learning rate, train perplexity, valid perplexity)."""
    lines = (ROOT / "docs" / "results.md").read_text().splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith(marker))
    rows = []
    for line in lines[start + 1 :]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| epoch") or line.startswith("|---"):
            continue
        if line.startswith("|"):
            rows.append([float(c.replace(",", "")) for c in cells[:4]])
        elif rows:
            break
    return np.array(rows)


def medium_log() -> tuple[np.ndarray, Path]:
    src = MEDIUM_RUN / "log.csv"
    copy = Path(tempfile.mkdtemp(prefix="numlstm-fig-")) / "log.csv"
    shutil.copyfile(src, copy)
    with copy.open() as f:
        rows = [[float(r["epoch"]), float(r["lr"]), float(r["train_perplexity"]),
                 float(r["valid_perplexity"])] for r in csv.DictReader(f)]  # fmt: skip
    shutil.rmtree(copy.parent)
    return np.array(rows), src


def main() -> None:
    runs = {
        "Small LSTM (results.md run 8)": (results_table("Run 8, per epoch:"), "C0"),
        "Small GRU, lr 0.5 (results.md run 3)": (results_table("**Run 3**"), "C1"),
    }
    medium, src = medium_log()
    done = len(medium) == 39
    runs["Medium LSTM" + ("" if done else f", in progress ({len(medium)} of 39 epochs)")] = (
        medium,
        "C2",
    )
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, (r, color) in runs.items():
        ax.plot(r[:, 0], r[:, 2], "--o", ms=3, color=color, lw=1, label=f"{label}: train")
        ax.plot(r[:, 0], r[:, 3], "-o", ms=4, color=color, lw=2, label=f"{label}: valid")
        print(f"{label}: " + "; ".join(f"epoch {e:.0f} lr {lr:g} train {tr:.2f} valid {va:.2f}"
                                       for e, lr, tr, va in r))  # fmt: skip
    ax.set_yscale("log")
    ax.set_yticks([40, 60, 80, 100, 120, 150, 200, 300])
    ax.set_yticklabels(["40", "60", "80", "100", "120", "150", "200", "300"])
    ax.yaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_ylim(35, 400)
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_title(f"PTB: finished runs from docs/results.md; Medium from {src}", fontsize=9)
    ax.axvspan(4.5, 13.5, color="grey", alpha=0.08)
    ax.text(4.6, 290, "Small: learning rate halved every epoch from epoch 5 (O4)", fontsize=8)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, which="both", alpha=0.3)
    save(fig, "curves")


if __name__ == "__main__":
    main()
