"""The paper cost model of docs/distributed.md: speed-up of synchronous data parallelism over N
machines for the PTB configs, printed as tables and drawn to docs/img/mpi_speedup.png.

    python benchmarks/mpi_cost_model.py [--gflops 150] [--latency-us 30] [--out PATH]

Per step and machine (N machines, one rank each, the batch's B rows split B/N each):

    compute(N) = FLOPs(step) / N / R                  R: sustained GFLOP/s of one machine
    comm(N)    = 2 (N-1)/N * S_dense / bw  +  (N-1)/N * S_rows / bw  +  c * log2(N) * latency
    speed-up   = compute(1) / (compute(N) + comm(N)),   efficiency = speed-up / N

S_dense: every gradient but the embedding's, in float32 (one ring Allreduce). S_rows: the
embedding's touched rows gathered (at most B * T rows of 8 + 4 H bytes; the Allgatherv that
``choose_embedding_mode`` picks for all three configs). c = 3 collectives per step (the
loss/row-count Allgather, the Allreduce, the Allgatherv). FLOPs: bench_train.flops_per_word
times B * T. R is one number for all row counts, which flatters small blocks of rows (a GEMM
over 1 row runs far below peak): the predictions are upper bounds. N is limited to B: a rank
needs a row.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_train import flops_per_word  # noqa: E402

from numlstm.config import get_config  # noqa: E402

NETWORKS_GBIT = (10, 25, 100)
MACHINES = (2, 4, 8, 16, 20, 32, 64)
COLLECTIVES = 3


def sizes(name: str) -> dict:
    """Parameter counts and bytes moved per step for a config (LSTM, float32)."""
    c = get_config(name)
    V, H, L, B, T = c.vocab_size, c.hidden_size, c.num_layers, c.batch_size, c.num_steps
    dense = L * (2 * H * 4 * H + 4 * H) + H * V + V  # Wx, Wh, b per layer; softmax W, b
    embedding = V * H
    return {"config": name, "params": dense + embedding, "dense": dense, "embedding": embedding,
            "dense_bytes": 4 * dense, "rows_bytes": B * T * (8 + 4 * H),
            "flops": flops_per_word(c, "lstm") * B * T, "B": B, "T": T}  # fmt: skip


def step_time(s: dict, n: int, gbit: float, gflops: float, latency: float,
              batch: int | None = None) -> tuple[float, float]:  # fmt: skip
    """(compute seconds, communication seconds) of one step on n machines; ``batch`` scales
    the step's rows (and so FLOPs and gathered rows) from the tutorial's B."""
    scale = (batch or s["B"]) / s["B"]
    compute = s["flops"] * scale / n / (gflops * 1e9)
    if n == 1:
        return compute, 0.0
    bw = gbit * 1e9 / 8
    comm = (2 * (n - 1) / n * s["dense_bytes"] / bw + (n - 1) / n * s["rows_bytes"] * scale / bw
            + COLLECTIVES * math.ceil(math.log2(n)) * latency)  # fmt: skip
    return compute, comm


def speedup(s: dict, n: int, gbit: float, gflops: float, latency: float,
            batch: int | None = None) -> float:  # fmt: skip
    one = sum(step_time(s, 1, gbit, gflops, latency, batch))
    return one / sum(step_time(s, n, gbit, gflops, latency, batch))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--gflops", type=float, default=150.0,
                   help="sustained GFLOP/s of one machine (150: this 2-core machine, "
                   "docs/performance.md)")  # fmt: skip
    p.add_argument("--latency-us", type=float, default=30.0, help="per message hop, µs")
    p.add_argument("--out", default=str(REPO / "docs" / "img" / "mpi_speedup.png"))
    args = p.parse_args()
    lat = args.latency_us * 1e-6
    configs = [sizes(n) for n in ("small", "medium", "large")]
    print("| config | parameters | dense gradients (float32) | embedding V x H | rows gathered "
          "per step (max) | GFLOP per step | compute per step at "
          f"{args.gflops:g} GFLOP/s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for s in configs:
        print(
            f"| {s['config']} | {s['params']:,} | {s['dense_bytes'] / 1e6:.1f} MB | "
            f"{4 * s['embedding'] / 1e6:.1f} MB | {s['rows_bytes'] / 1e6:.2f} MB | "
            f"{s['flops'] / 1e9:.1f} | {s['flops'] / args.gflops / 1e9 * 1e3:.0f} ms |"
        )
    for batch in (None, 640):
        label = "the tutorial's B = 20" if batch is None else f"B = {batch} (global batch)"
        print(f"\nSpeed-up (efficiency) at {label}:\n")
        print("| config | network | " + " | ".join(f"N={n}" for n in MACHINES) + " |")
        print("|---|---|" + "---|" * len(MACHINES))
        for s in configs:
            for g in NETWORKS_GBIT:
                cells = []
                for n in MACHINES:
                    if n > (batch or s["B"]):
                        cells.append("—")
                        continue
                    x = speedup(s, n, g, args.gflops, lat, batch)
                    cells.append(f"{x:.1f} ({x / n:.0%})")
                print(f"| {s['config']} | {g} Gbit/s | " + " | ".join(cells) + " |")
    _plot(configs, args, lat)


def _plot(configs: list[dict], args, lat: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    styles = {10: ":", 25: "--", 100: "-"}
    colors = {"small": "C0", "medium": "C1", "large": "C2"}
    for ax, batch in zip(axes, (None, 640), strict=True):
        for s in configs:
            ns = [n for n in range(1, 65) if n <= (batch or s["B"])]
            for g in NETWORKS_GBIT:
                ax.plot(ns, [speedup(s, n, g, args.gflops, lat, batch) for n in ns],
                        styles[g], color=colors[s["config"]],
                        label=f"{s['config']}, {g} Gbit/s")  # fmt: skip
        ax.plot([1, 64], [1, 64], color="gray", linewidth=0.8, label="ideal")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlim(1, 64)
        ax.set_xlabel("machines N (one rank each)")
        ax.set_title("tutorial batch B = 20 (N <= 20)" if batch is None
                     else f"global batch B = {batch}")  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("predicted speed-up")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Synchronous data parallelism, ring collectives, {args.gflops:g} GFLOP/s per "
                 f"machine, {args.latency_us:g} µs per hop (upper bound)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
