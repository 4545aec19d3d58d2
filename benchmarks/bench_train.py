"""Training and evaluation throughput of the PTB models, against the GEMM roofline and PyTorch.

For each selected config (small, medium, large) and cell (lstm, gru), on random tokens with
batch size 20 and the config's num_steps, hidden size, layers and keep_prob:

* numlstm training: ``train.train_step`` (forward, backward, clip by global norm, SGD), words/s
  = steps * B * T / seconds, median of ``--repeats`` runs of ``--steps`` steps after a warm-up.
* numlstm evaluation at batch 1 x 1 step (the tutorial's test setting): a loop of
  ``model.loss`` calls, and ``fast_eval.evaluate_sequence`` when the module exists.
* FLOPs per trained word, GEMMs only, backward = 2 x forward:
  ``6 * (L * (D + H) * G * H + H * V)`` with G = 4 gates (LSTM) or 3 (GRU), D = H.
* The GEMM roofline: every matrix product of one training step timed on its own at its own
  shape with ``np.matmul(..., out=...)`` in this process (per layer: the input projection,
  T recurrent products forward and T backward, dWx, dWh, dx; the softmax's three), summed:
  T * B / that time is the words/s ceiling if everything but the GEMMs were free. It is
  measured once per repeat, right after that repeat's training run, so that both see the
  same machine load; efficiency = the median over repeats of (training words/s / roofline
  words/s) of the same repeat. Both are means over their run (steps, or GEMM calls).
* ``--compare-torch``: the same model in PyTorch (nn.Embedding -> nn.LSTM/nn.GRU -> nn.Linear,
  dropout as in the config, CrossEntropyLoss(reduction='sum') / B, SGD + clip_grad_norm_),
  trained and evaluated (batch 1 x 1 step under ``torch.no_grad()``) in the same process;
  numlstm and torch runs alternate and the medians are compared (ratio = numlstm / torch).
* ``--hidden-sweep 200,400,...``: training words/s against hidden size for the small
  architecture (2 layers, T = 20), with the roofline; ``--plot PATH.png`` draws it.
* ``--startup``: wall time of a fresh ``python -c "import numlstm; <small model, one train
  step>"``, twice, with an empty Numba cache directory: the first run compiles every kernel,
  the second loads them from the cache.

Prints a Markdown table, the machine (platform, CPU count, NumPy/Numba versions, BLAS) and the
date; ``--json PATH`` also writes everything as JSON. Peak RSS is the process's peak so far:
run one config alone (``--configs medium``) to read it as that config's. Timings are printed,
never asserted; the machine is noisy, so compare ratios measured in one run.

    python benchmarks/bench_train.py --configs small,medium --cells lstm,gru --compare-torch
    python benchmarks/bench_train.py --configs small --steps 2 --eval-steps 50   # smoke test
    python benchmarks/bench_train.py --hidden-sweep 200,400,650,1000,1500 --plot sweep.png
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def _thread_env_from_argv(argv: list[str]) -> None:
    """``--threads N`` must reach BLAS and Numba before NumPy is imported: set it here."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=int, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.threads:
        for var in THREAD_VARS:
            os.environ[var] = str(known.threads)


if __name__ == "__main__":
    _thread_env_from_argv(sys.argv[1:])

import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

import numlstm  # noqa: E402
from numlstm.config import Config, get_config  # noqa: E402
from numlstm.fast.parallel import DataParallel, default_threads  # noqa: E402
from numlstm.train import train_step  # noqa: E402

try:
    from numlstm.fast.fast_eval import evaluate_sequence
except ImportError:  # an older checkout without fast_eval
    evaluate_sequence = None

B = 20  # batch size of every PTB config
N_BATCHES = 8  # distinct random batches cycled through during a timed run

STARTUP_CODE = """
import numpy as np, numlstm
from numlstm.train import train_step
m = numlstm.LanguageModel(10000, 200, 2, seed=0)
ids = np.random.default_rng(0).integers(0, 10000, (20, 21))
train_step(m, numlstm.SGD(m.params, 1.0), ids[:, :-1], ids[:, 1:], m.init_state(20), 5.0, 1.0,
           np.random.default_rng(0))
"""


# --------------------------------------------------------------------------------------------
# Machine description
# --------------------------------------------------------------------------------------------


def blas_name() -> str:
    """The BLAS NumPy was built against, from ``np.show_config`` (NumPy >= 1.25)."""
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{info.get('name', '?')} {info.get('version', '')}".strip()
    except Exception:  # older NumPy, or a build without the information
        return "unknown"


def machine_info(threads: int) -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threading_layer": _threading_layer(),
        "blas": blas_name(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return "not initialised"


def peak_rss_mib() -> float:
    """Peak resident set size of this process (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


# --------------------------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------------------------


def timed(f: Callable[[], object]) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def random_batches(cfg: Config, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """N_BATCHES (x, y) pairs of shape (B, T), y = x shifted by one, as ptb_iterator yields."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, cfg.vocab_size, (N_BATCHES, B, cfg.num_steps + 1)).astype(np.int32)
    return [(np.ascontiguousarray(a[:, :-1]), np.ascontiguousarray(a[:, 1:])) for a in ids]


def flops_per_word(cfg: Config, cell: str) -> float:
    """GEMM FLOPs of one trained word: 2 * MACs forward, backward = 2 x forward."""
    G, H, L, V = (4 if cell == "lstm" else 3), cfg.hidden_size, cfg.num_layers, cfg.vocab_size
    forward_macs = L * (H + H) * G * H + H * V
    return 6.0 * forward_macs


FLOPS_FORMULA = "6 * (L * (D + H) * G * H + H * V), G = 4 (LSTM) or 3 (GRU), D = H"


# --------------------------------------------------------------------------------------------
# The GEMM roofline
# --------------------------------------------------------------------------------------------


def step_gemms(cfg: Config, cell: str) -> list[tuple[str, int, int, int, int, bool, bool]]:
    """Every matrix product of one training step as (name, m, k, n, count, A^T, B^T).

    (m, k) @ (k, n); A^T / B^T: the operand is a transposed view, as in the layer code.
    """
    T, H, L, V = cfg.num_steps, cfg.hidden_size, cfg.num_layers, cfg.vocab_size
    D, G, TB = H, (4 if cell == "lstm" else 3), cfg.num_steps * B
    gemms = []
    for layer in range(L):
        gemms += [
            (f"l{layer} input projection x Wx", TB, D, G * H, 1, False, False),
            (f"l{layer} recurrent h Wh", B, H, G * H, T, False, False),
            (f"l{layer} recurrent backward da Wh^T", B, G * H, H, T, False, True),
            (f"l{layer} dWh = h^T dA", H, TB, G * H, 1, True, False),
            (f"l{layer} dWx = x^T dA", D, TB, G * H, 1, True, False),
            (f"l{layer} dx = dA Wx^T", TB, G * H, D, 1, False, True),
        ]
    gemms += [
        ("softmax logits h W", TB, H, V, 1, False, False),
        ("softmax dW = h^T dZ", H, TB, V, 1, True, False),
        ("softmax dh = dZ W^T", TB, V, H, 1, False, True),
    ]
    return gemms


def time_gemm(m: int, k: int, n: int, trans_a: bool, trans_b: bool, min_seconds=0.05) -> float:
    """Seconds per ``np.matmul(a, b, out=c)`` at this shape (float32): the mean over calls
    repeated for at least ``min_seconds``, after one untimed call."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
    a, b = (a.T if trans_a else a), (b.T if trans_b else b)
    c = np.empty((m, n), np.float32)
    np.matmul(a, b, out=c)
    calls, start = 0, time.perf_counter()
    while True:
        np.matmul(a, b, out=c)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def roofline(cfg: Config, cell: str) -> tuple[float, float]:
    """(seconds of GEMMs per training step, words/s if only the GEMMs took time)."""
    seconds = sum(
        count * time_gemm(m, k, n, ta, tb) for _, m, k, n, count, ta, tb in step_gemms(cfg, cell)
    )
    return seconds, cfg.num_steps * B / seconds


# --------------------------------------------------------------------------------------------
# numlstm runners
# --------------------------------------------------------------------------------------------


def numlstm_model(cfg: Config, cell: str, seed: int = 0) -> numlstm.LanguageModel:
    return numlstm.LanguageModel(
        cfg.vocab_size,
        cfg.hidden_size,
        cfg.num_layers,
        cell=cell,
        init_scale=cfg.init_scale,
        seed=seed,
    )


def numlstm_trainer(
    cfg: Config, cell: str, seed: int = 0, threads: int = 1
) -> Callable[[int], None]:
    """run(steps): that many ``train_step`` calls, the state carried across them.

    threads > 1: the steps go through a ``DataParallel`` of that many row blocks, as
    ``train.train`` runs them. It is opened for each run and closed after it, because it sets
    NumPy's BLAS to one thread while open and the roofline is timed with BLAS's own threads.
    """
    model = numlstm_model(cfg, cell, seed)
    opt = numlstm.SGD(model.params, cfg.learning_rate)
    rng = np.random.default_rng(seed)
    batches = random_batches(cfg, seed)
    state = [model.init_state(B)]

    def run(steps: int) -> None:
        s = state[0]
        with contextlib.ExitStack() as stack:
            par = stack.enter_context(DataParallel(model, threads)) if threads > 1 else None
            for i in range(steps):
                x, y = batches[i % N_BATCHES]
                _, s = train_step(model, opt, x, y, s, cfg.max_grad_norm, cfg.keep_prob, rng, par)
        state[0] = s

    return run


def loss_loop(model: numlstm.LanguageModel, ids: np.ndarray) -> float:
    """The tutorial's test loop: one ``model.loss`` call per word, batch 1, num_steps 1."""
    state = model.init_state(1)
    total = 0.0
    for t in range(len(ids) - 1):
        loss, state = model.loss(ids[None, t : t + 1], ids[None, t + 1 : t + 2], state)
        total += loss
    return total


# --------------------------------------------------------------------------------------------
# PyTorch runners (only with --compare-torch)
# --------------------------------------------------------------------------------------------


def import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_model(torch, cfg: Config, cell: str, seed: int = 0):
    """Embedding -> nn.LSTM / nn.GRU (time-major) -> Linear, dropout as in the tutorial:
    on the embedding, between layers (the RNN's own ``dropout``) and on the top output."""
    nn = torch.nn
    V, H, L, p = cfg.vocab_size, cfg.hidden_size, cfg.num_layers, 1.0 - cfg.keep_prob
    torch.manual_seed(seed)

    class TorchLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(V, H)
            rnn = nn.LSTM if cell == "lstm" else nn.GRU
            self.rnn = rnn(H, H, L, dropout=p if L > 1 else 0.0, batch_first=False)
            self.drop = nn.Dropout(p)
            self.fc = nn.Linear(H, V)
            for w in self.parameters():
                nn.init.uniform_(w, -cfg.init_scale, cfg.init_scale)

        def forward(self, x, state):
            out, state = self.rnn(self.drop(self.embedding(x)), state)
            return self.fc(self.drop(out)), state

    return TorchLM()


def _detach(state):
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def torch_trainer(torch, cfg: Config, cell: str, seed: int = 0) -> Callable[[int], None]:
    model = torch_model(torch, cfg, cell, seed)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    batches = [
        (
            torch.from_numpy(np.ascontiguousarray(x.T, np.int64)),
            torch.from_numpy(np.ascontiguousarray(y.T, np.int64)),
        )
        for x, y in random_batches(cfg, seed)
    ]  # time-major (T, B)
    holder = [None]

    def run(steps: int) -> None:
        model.train()
        state = holder[0]
        for i in range(steps):
            x, y = batches[i % N_BATCHES]
            logits, state = model(x, _detach(state))  # truncated BPTT: state without history
            loss = loss_fn(logits.reshape(-1, cfg.vocab_size), y.reshape(-1)) / B
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
        holder[0] = _detach(state)

    return run


def torch_evaluator(torch, cfg: Config, cell: str, seed: int = 0) -> Callable[[np.ndarray], float]:
    model = torch_model(torch, cfg, cell, seed)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")

    def run(ids: np.ndarray) -> float:
        model.eval()
        t_ids = torch.from_numpy(ids.astype(np.int64))
        state, total = None, 0.0
        with torch.no_grad():
            for t in range(len(ids) - 1):
                logits, state = model(t_ids[t : t + 1].view(1, 1), state)
                total += float(loss_fn(logits.view(1, -1), t_ids[t + 1 : t + 2]))
        return total

    return run


# --------------------------------------------------------------------------------------------
# One (config, cell) row
# --------------------------------------------------------------------------------------------


def bench_row(cfg_name: str, cfg: Config, cell: str, args, torch) -> dict:
    words = args.steps * B * cfg.num_steps
    row: dict = {
        "config": cfg_name,
        "cell": cell,
        "hidden": cfg.hidden_size,
        "layers": cfg.num_layers,
        "num_steps": cfg.num_steps,
        "keep_prob": cfg.keep_prob,
    }

    # Training: warm-up (compiles the kernels, sizes the workspaces), then alternate.
    ours = numlstm_trainer(cfg, cell, threads=args.step_threads)
    ours(2)
    theirs = torch_trainer(torch, cfg, cell) if torch is not None else None
    if theirs is not None:
        theirs(2)
    train_wps: dict[str, list[float]] = {"numlstm": [], "torch": []}
    roofs: list[tuple[float, float]] = []
    for _ in range(args.repeats):
        train_wps["numlstm"].append(words / timed(lambda: ours(args.steps)))
        roofs.append(roofline(cfg, cell))  # right after: the same machine load
        if theirs is not None:
            train_wps["torch"].append(words / timed(lambda: theirs(args.steps)))
    row["numlstm_train_wps"] = statistics.median(train_wps["numlstm"])
    row["numlstm_train_wps_runs"] = train_wps["numlstm"]
    if theirs is not None:
        row["torch_train_wps"] = statistics.median(train_wps["torch"])
        row["torch_train_wps_runs"] = train_wps["torch"]
        row["train_ratio"] = row["numlstm_train_wps"] / row["torch_train_wps"]

    # FLOPs and the GEMM roofline.
    row["flops_per_word"] = flops_per_word(cfg, cell)
    row["achieved_gflops"] = row["flops_per_word"] * row["numlstm_train_wps"] / 1e9
    row["gemm_seconds_per_step"] = statistics.median(r[0] for r in roofs)
    row["roofline_wps"] = statistics.median(r[1] for r in roofs)
    row["roofline_wps_runs"] = [r[1] for r in roofs]
    row["efficiency_runs"] = [w / r[1] for w, r in zip(train_wps["numlstm"], roofs, strict=True)]
    row["efficiency"] = statistics.median(row["efficiency_runs"])

    # Evaluation at batch 1 x 1 step.
    n = args.eval_steps
    ids = np.random.default_rng(1).integers(0, cfg.vocab_size, n + 1)
    model = numlstm_model(cfg, cell)
    evaluators: dict[str, Callable[[np.ndarray], object]] = {
        "loss_loop": lambda a: loss_loop(model, a)
    }
    if evaluate_sequence is not None:
        evaluators["fast_eval"] = lambda a: evaluate_sequence(model, a)
        if args.eval_parallel:
            evaluators["fast_eval_parallel"] = lambda a: evaluate_sequence(model, a, parallel=True)
    if torch is not None:
        evaluators["torch"] = torch_evaluator(torch, cfg, cell)
    for f in evaluators.values():
        f(ids[:3])  # warm-up
    eval_wps: dict[str, list[float]] = {k: [] for k in evaluators}
    for _ in range(args.repeats):
        for name, f in evaluators.items():
            eval_wps[name].append(n / timed(lambda: f(ids)))  # noqa: B023 (called at once)
    for name, runs in eval_wps.items():
        row[f"{name}_eval_wps"] = statistics.median(runs)
        row[f"{name}_eval_wps_runs"] = runs
    if torch is not None:
        best = row.get("fast_eval_eval_wps", row["loss_loop_eval_wps"])
        row["eval_ratio"] = best / row["torch_eval_wps"]
    row["peak_rss_mib"] = peak_rss_mib()
    return row


def _fmt(v, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict], with_torch: bool, with_parallel: bool) -> None:
    cols = [
        ("config", "config", "s"),
        ("cell", "cell", "s"),
        ("numlstm train wps", "numlstm_train_wps", ",.0f"),
    ]
    if with_torch:
        cols += [("torch train wps", "torch_train_wps", ",.0f"), ("ratio", "train_ratio", ".2f")]
    cols += [
        ("roofline wps", "roofline_wps", ",.0f"),
        ("efficiency", "efficiency", ".0%"),
        ("GFLOP/s", "achieved_gflops", ".1f"),
        ("numlstm eval wps (loss loop)", "loss_loop_eval_wps", ",.0f"),
        ("fast_eval wps", "fast_eval_eval_wps", ",.0f"),
    ]
    if with_parallel:
        cols.append(("fast_eval parallel wps", "fast_eval_parallel_eval_wps", ",.0f"))
    if with_torch:
        cols += [("torch eval wps", "torch_eval_wps", ",.0f"), ("ratio", "eval_ratio", ".2f")]
    cols.append(("peak RSS MiB (process)", "peak_rss_mib", ",.0f"))
    print("| " + " | ".join(c[0] for c in cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        print("| " + " | ".join(_fmt(r.get(key), spec) for _, key, spec in cols) + " |")


# --------------------------------------------------------------------------------------------
# Hidden-size sweep and startup time
# --------------------------------------------------------------------------------------------


def hidden_sweep(sizes: list[int], cells: list[str], args) -> list[dict]:
    """Training words/s and roofline against H for the small architecture (2 layers, T=20)."""
    out = []
    for cell in cells:
        for H in sizes:
            cfg = get_config("small").replace(hidden_size=H)
            run = numlstm_trainer(cfg, cell, threads=args.step_threads)
            run(2)
            words = args.steps * B * cfg.num_steps
            runs, roofs = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                run(args.steps)
                runs.append(words / (time.perf_counter() - start))
                roofs.append(roofline(cfg, cell)[1])
            wps, roof = statistics.median(runs), statistics.median(roofs)
            efficiency = statistics.median(w / r for w, r in zip(runs, roofs, strict=True))
            out.append(
                {
                    "cell": cell,
                    "hidden": H,
                    "train_wps": wps,
                    "roofline_wps": roof,
                    "efficiency": efficiency,
                }
            )
            print(
                f"  sweep {cell} H={H}: {wps:,.0f} words/s, roofline {roof:,.0f} "
                f"({efficiency:.0%})",
                flush=True,
            )
    return out


def plot_sweep(sweep: list[dict], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for cell in sorted({s["cell"] for s in sweep}):
        pts = [s for s in sweep if s["cell"] == cell]
        hs = [s["hidden"] for s in pts]
        (line,) = ax.plot(hs, [s["train_wps"] for s in pts], "o-", label=f"numlstm {cell}")
        ax.plot(
            hs,
            [s["roofline_wps"] for s in pts],
            "--",
            color=line.get_color(),
            label=f"GEMM roofline {cell}",
        )
    ax.set_xlabel("hidden size H (2 layers, T = 20, B = 20, V = 10000)")
    ax.set_ylabel("training words / s")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title("numlstm training throughput vs hidden size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot written to {path}")


def startup_times(code: str = STARTUP_CODE) -> dict:
    """Wall time of ``python -c code`` twice with a fresh Numba cache dir: cold, then cached."""
    with tempfile.TemporaryDirectory(prefix="numlstm-numba-cache-") as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        times = []
        for _ in range(2):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            times.append(time.perf_counter() - start)
    return {"first_run_s": times[0], "cached_run_s": times[1]}


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default="small,medium", help="comma list: small,medium,large")
    parser.add_argument("--cells", default="lstm,gru", help="comma list: lstm,gru")
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed run")
    parser.add_argument(
        "--eval-steps",
        type=int,
        default=1000,
        help="words per timed evaluation run (batch 1 x 1 step)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="BLAS / Numba / torch threads (default: the libraries' own)",
    )
    parser.add_argument(
        "--step-threads",
        type=int,
        default=None,
        help="row blocks of each numlstm training step run in threads (parallel.py); default: "
        "parallel.default_threads(20), as `numlstm train` chooses; 1: BLAS's own threads",
    )
    parser.add_argument("--compare-torch", action="store_true", help="also time PyTorch")
    parser.add_argument(
        "--eval-parallel", action="store_true", help="also time fast_eval with parallel=True"
    )
    parser.add_argument(
        "--hidden-sweep",
        default="",
        help="comma list of hidden sizes for the sweep, e.g. 200,400,650",
    )
    parser.add_argument("--plot", default="", help="PNG path for the hidden-size sweep")
    parser.add_argument("--startup", action="store_true", help="measure import + first step")
    parser.add_argument("--json", default="", help="write all results to this JSON file")
    args = parser.parse_args(argv)  # --threads was applied at import (see the top of the file)

    configs = [c for c in args.configs.split(",") if c]
    cells = [c for c in args.cells.split(",") if c]
    for c in cells:
        if c not in ("lstm", "gru"):
            parser.error(f"unknown cell {c!r}")
    threads = args.threads or os.cpu_count() or 1
    if args.step_threads is None:
        args.step_threads = default_threads(B)
    torch = None
    if args.compare_torch:
        torch = import_torch()
        if torch is None:
            print("torch not installed: skipping")
        else:
            torch.set_num_threads(threads)

    results: dict = {"args": vars(args), "flops_formula": FLOPS_FORMULA, "rows": []}
    for name in configs:
        cfg = get_config(name)
        for cell in cells:
            print(f"running {name} {cell} ...", flush=True)
            results["rows"].append(bench_row(name, cfg, cell, args, torch))
    if args.hidden_sweep:
        sizes = [int(h) for h in args.hidden_sweep.split(",") if h]
        print("hidden-size sweep (small architecture):", flush=True)
        results["sweep"] = hidden_sweep(sizes, cells, args)
        if args.plot:
            plot_sweep(results["sweep"], args.plot)
    if args.startup:
        print("startup: two fresh processes, the first with an empty Numba cache ...", flush=True)
        results["startup"] = startup_times()

    info = machine_info(threads)
    results["machine"] = info
    if torch is not None:
        info["torch"] = torch.__version__
    print()
    print(
        f"Machine: {info['platform']}, {info['processor']}, {info['cpu_count']} CPUs, "
        f"threads {threads}, numlstm step threads {args.step_threads}; "
        f"Python {info['python']}, NumPy {info['numpy']} "
        f"(BLAS: {info['blas']}), Numba {info['numba']} "
        f"({info['numba_threading_layer']})"
        + (f", torch {info['torch']}" if "torch" in info else "")
        + f"; {info['date']}"
    )
    print(
        f"B = {B}; training: median of {args.repeats} runs x {args.steps} steps; "
        f"evaluation: batch 1 x 1 step, {args.eval_steps} words per run\n"
    )
    if results["rows"]:
        print_table(results["rows"], torch is not None, args.eval_parallel)
        print(f"\nFLOPs per trained word (GEMMs only, backward = 2 x forward): {FLOPS_FORMULA}")
        for r in results["rows"]:
            print(
                f"  {r['config']} {r['cell']}: {r['flops_per_word'] / 1e6:.1f} MFLOP/word; "
                f"GEMMs alone {1e3 * r['gemm_seconds_per_step']:.1f} ms/step"
            )
        print(
            "roofline = T * B / (sum of every GEMM of a step timed alone at its shape), "
            "measured after each training run; efficiency = median over runs of achieved / "
            "roofline of the same run."
        )
        for r in results["rows"]:
            runs = ", ".join(f"{e:.0%}" for e in r["efficiency_runs"])
            print(f"  {r['config']} {r['cell']} efficiency per run: {runs}")
        print("peak RSS is the process's peak so far: run one config alone for its own figure.")
    if "startup" in results:
        s = results["startup"]
        print(
            f"\nstartup (import numlstm + small model + one train step): first run "
            f"{s['first_run_s']:.1f} s (empty Numba cache: compiles), second "
            f"{s['cached_run_s']:.1f} s (kernels loaded from the cache)"
        )
    print("\nTimings are never asserted; the machine is noisy: compare ratios from one run.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
