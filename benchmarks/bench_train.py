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
  trained and evaluated (batch 1 x 1 step under ``torch.no_grad()``) by bench_torch.py. Each
  side runs in processes of its own, alternately (numlstm, torch, numlstm, torch, ...: one
  process per side and repeat), each started from this script's launch environment without
  any thread variable, so that each library runs with its own defaults: PyTorch never sees
  numlstm's OMP_WAIT_POLICY=PASSIVE. Ratio = median numlstm / median torch.
* ``--hidden-sweep 200,400,...``: training words/s against hidden size for the small
  architecture (2 layers, T = 20), with the roofline; ``--plot PATH.png`` draws it.
* ``--variants "plain; tied: tie_embeddings=true; ..."``: a row per variant of each config,
  with those Config fields changed (model options, tying, dropout sites), timed side by side
  in this process; no roofline for the options that change the GEMM shapes.
* ``--startup``: wall time of a fresh ``python -c "import numlstm; <small model, one train
  step>"``, twice, with an empty Numba cache directory: the first run compiles every kernel,
  the second loads them from the cache.

Prints a Markdown table, the machine (platform, CPU count, NumPy/Numba versions, BLAS) and the
date; ``--json PATH`` also writes everything as JSON. Peak RSS is the process's peak so far:
run one config alone (``--configs medium``) to read it as that config's. Timings are printed,
never asserted; the machine is noisy, so compare ratios measured in one run.

    python benchmarks/bench_train.py --configs small,medium --cells lstm,gru --compare-torch
    python benchmarks/bench_train.py --configs test --steps 2 --eval-steps 50 --repeats 1  # smoke
    python benchmarks/bench_train.py --hidden-sweep 200,400,650,1000,1500 --plot sweep.png
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

# The environment this script was started with, before --threads or ``import numlstm`` (which
# sets OMP_WAIT_POLICY) change it: --compare-torch starts both sides from it.
LAUNCH_ENV = dict(os.environ)

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
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import typing  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from pathlib import Path  # noqa: E402

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
N_BATCHES = 8  # distinct random batches cycled through during a timed run (as bench_torch.py)
BENCH_TORCH = Path(__file__).resolve().parent / "bench_torch.py"

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


def thread_vars(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` that set threads or OpenMP behaviour (bench_torch.py has the
    same rule): OMP_*, KMP_*, GOMP_*, anything with THREAD in its name, MKL_DYNAMIC."""
    return {
        k: v
        for k, v in sorted(environ.items())
        if k.startswith(("OMP_", "KMP_", "GOMP_")) or "THREAD" in k or k == "MKL_DYNAMIC"
    }


def numlstm_environment() -> dict:
    """What numlstm ran with in this process (call it after the timed runs)."""
    try:
        from numlstm.fast.team import blas_thread_count

        blas_threads = blas_thread_count()
    except ImportError:  # an older checkout
        blas_threads = None
    return {
        "thread_vars": thread_vars(os.environ),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "numba_threading_layer": _threading_layer(),
        "blas": blas_name(),
        "blas_threads": blas_threads,
        "numlstm_file": numlstm.__file__,
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
# --variants: the same config with model or dropout options changed
# --------------------------------------------------------------------------------------------

# Options that change the GEMM shapes step_gemms() and flops_per_word() assume (D = H, softmax
# H x V): rows with them get no roofline.
SHAPE_OPTIONS = ("num_proj", "embedding_size")


def _field_value(name: str, text: str) -> object:
    """``text`` as the type of Config field ``name``; 'none' is None for optional fields."""
    hints = typing.get_type_hints(Config)
    if name not in hints:
        raise ValueError(f"--variants: Config has no field {name!r}")
    hint, text = hints[name], text.strip()
    kinds = typing.get_args(hint) or (hint,)
    if text.lower() == "none" and type(None) in kinds:
        return None
    if bool in kinds:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"--variants: {name} takes true or false, not {text!r}")
        return text.lower() in ("true", "1")
    kind = next(k for k in kinds if k is not type(None))
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"--variants: {name}={text!r} is not a valid {kind.__name__}") from None


def parse_variants(text: str) -> list[tuple[str, dict]]:
    """'plain; tied: tie_embeddings=true; state: state_keep_prob=0.8, variational=sequence'
    -> [(name, {field: value, ...}), ...]; a name alone is the config unchanged."""
    variants = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, body = part.partition(":")
        changes = {}
        for item in filter(None, (i.strip() for i in body.split(","))):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"--variants: {item!r} in {name!r} is not field=value")
            changes[key.strip()] = _field_value(key.strip(), value)
        variants.append((name.strip(), changes))
    names = [n for n, _ in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"--variants: names repeat: {names}")
    return variants


# --------------------------------------------------------------------------------------------
# numlstm runners
# --------------------------------------------------------------------------------------------


def numlstm_model(cfg: Config, cell: str, seed: int = 0) -> numlstm.LanguageModel:
    """The model ``numlstm train`` builds for this config (its model options included)."""
    return numlstm.LanguageModel(
        cfg.vocab_size,
        cfg.hidden_size,
        cfg.num_layers,
        cell=cell,
        init_scale=cfg.init_scale,
        seed=seed,
        **cfg.model_options(),
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
    dropout = cfg.dropout()  # as train.train passes it: keep_prob alone gives the same draws

    def run(steps: int) -> None:
        s = state[0]
        with contextlib.ExitStack() as stack:
            par = stack.enter_context(DataParallel(model, threads)) if threads > 1 else None
            for i in range(steps):
                x, y = batches[i % N_BATCHES]
                _, s = train_step(model, opt, x, y, s, cfg.max_grad_norm, dropout, rng, par)
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
# One (config, cell) row
# --------------------------------------------------------------------------------------------


def bench_row(cfg_name: str, cfg: Config, cell: str, args) -> dict:
    words = args.steps * B * cfg.num_steps
    shape_changed = [k for k in SHAPE_OPTIONS if getattr(cfg, k) is not None]
    row: dict = {
        "variant": getattr(args, "variant_name", ""),
        "config": cfg_name,
        "cell": cell,
        "hidden": cfg.hidden_size,
        "layers": cfg.num_layers,
        "num_steps": cfg.num_steps,
        "keep_prob": cfg.keep_prob,
    }

    # Training: warm-up (compiles the kernels, sizes the workspaces), then the timed runs.
    ours = numlstm_trainer(cfg, cell, threads=args.step_threads)
    ours(2)
    train_wps: list[float] = []
    roofs: list[tuple[float, float]] = []
    for _ in range(args.repeats):
        train_wps.append(words / timed(lambda: ours(args.steps)))
        if not shape_changed:
            roofs.append(roofline(cfg, cell))  # right after: the same machine load
    row["numlstm_train_wps"] = statistics.median(train_wps)
    row["numlstm_train_wps_runs"] = train_wps

    # FLOPs and the GEMM roofline (for the shapes step_gemms() knows).
    if shape_changed:
        row["roofline_skipped"] = f"the GEMM shapes differ with {', '.join(shape_changed)}"
        return _eval_columns(row, cfg, cell, args)
    row["flops_per_word"] = flops_per_word(cfg, cell)
    row["achieved_gflops"] = row["flops_per_word"] * row["numlstm_train_wps"] / 1e9
    row["gemm_seconds_per_step"] = statistics.median(r[0] for r in roofs)
    row["gemm_seconds_per_step_runs"] = [r[0] for r in roofs]
    row["roofline_wps"] = statistics.median(r[1] for r in roofs)
    row["roofline_wps_runs"] = [r[1] for r in roofs]
    row["efficiency_runs"] = [w / r[1] for w, r in zip(train_wps, roofs, strict=True)]
    row["efficiency"] = statistics.median(row["efficiency_runs"])
    return _eval_columns(row, cfg, cell, args)


def _eval_columns(row: dict, cfg: Config, cell: str, args) -> dict:
    """Evaluation at batch 1 x 1 step, and the peak RSS."""
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
    for f in evaluators.values():
        f(ids[:3])  # warm-up
    eval_wps: dict[str, list[float]] = {k: [] for k in evaluators}
    for _ in range(args.repeats):
        for name, f in evaluators.items():
            eval_wps[name].append(n / timed(lambda: f(ids)))  # noqa: B023 (called at once)
    for name, runs in eval_wps.items():
        row[f"{name}_eval_wps"] = statistics.median(runs)
        row[f"{name}_eval_wps_runs"] = runs
    row["peak_rss_mib"] = peak_rss_mib()
    return row


def _label(row: dict) -> str:
    return " ".join(filter(None, (row.get("variant"), row["config"], row["cell"])))


def _fmt(v, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict], with_torch: bool, with_parallel: bool) -> None:
    cols = [("variant", "variant", "s")] if any(r.get("variant") for r in rows) else []
    cols += [
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
# --compare-torch: each side in processes of its own
# --------------------------------------------------------------------------------------------


def side_environment() -> tuple[dict[str, str], dict[str, str]]:
    """(environment both sides start from, the thread variables removed from it).

    The launch environment without its thread variables: numlstm then sets its own default
    (OMP_WAIT_POLICY=PASSIVE, at import) in its process only, and PyTorch runs with its own
    defaults; a variable the user or a harness set would otherwise favour one side."""
    removed = thread_vars(LAUNCH_ENV)
    return {k: v for k, v in LAUNCH_ENV.items() if k not in removed}, removed


def run_side(cmd: list[str], env: dict[str, str], what: str) -> dict:
    """Run one side's process, which writes its result to the --json path at the end of cmd."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{what} failed (exit status {proc.returncode}): {' '.join(cmd)}")
    with open(cmd[-1]) as f:
        return json.load(f)


def merge_rows(rows: list[dict]) -> dict:
    """One row from the one-repeat rows of several numlstm processes: every per-run list joined
    and its median taken again (``x_runs`` -> ``x``); peak RSS is the largest process's."""
    out = dict(rows[0])
    for key in rows[0]:
        if key.endswith("_runs"):
            out[key] = [v for r in rows for v in r[key]]
            out[key.removesuffix("_runs")] = statistics.median(out[key])
    out["achieved_gflops"] = out["flops_per_word"] * out["numlstm_train_wps"] / 1e9
    out["peak_rss_mib"] = max(r["peak_rss_mib"] for r in rows)
    return out


def compare_row(cfg_name: str, cfg: Config, cell: str, args, tmp: str) -> tuple[dict, dict, dict]:
    """(row, numlstm environment, torch environment) of one config and cell: ``--repeats``
    rounds of one numlstm process and one PyTorch process, each timing one run."""
    env, _ = side_environment()
    common = ["--steps", str(args.steps), "--eval-steps", str(args.eval_steps)]
    threads = ["--threads", str(args.threads)] if args.threads else []
    ours = [sys.executable, os.path.abspath(__file__), "--configs", cfg_name, "--cells", cell,
            "--repeats", "1", *common, *threads]  # fmt: skip
    if args.step_threads_given:
        ours += ["--step-threads", str(args.step_threads)]
    if args.eval_parallel:
        ours.append("--eval-parallel")
    theirs = [sys.executable, str(BENCH_TORCH), "--cell", cell, "--vocab", str(cfg.vocab_size),
              "--hidden", str(cfg.hidden_size), "--layers", str(cfg.num_layers),
              "--num-steps", str(cfg.num_steps), "--keep-prob", str(cfg.keep_prob),
              "--init-scale", str(cfg.init_scale), "--lr", str(cfg.learning_rate),
              "--max-grad-norm", str(cfg.max_grad_norm), *common, *threads]  # fmt: skip
    rows, torch_runs = [], []
    for i in range(args.repeats):
        mine = run_side([*ours, "--json", f"{tmp}/numlstm{i}.json"], env, "the numlstm side")
        other = run_side([*theirs, "--json", f"{tmp}/torch{i}.json"], env, "the torch side")
        if other["environment"]["numlstm_imported"]:
            raise SystemExit("the torch side imported numlstm: the comparison is not fair")
        rows.append(mine["rows"][0])
        torch_runs.append(other)
        print(
            f"  round {i + 1}/{args.repeats}: numlstm train {rows[-1]['numlstm_train_wps']:,.0f}"
            f" words/s, eval {_best_eval(rows[-1]):,.0f}; torch train "
            f"{other['torch_train_wps']:,.0f}, eval {other['torch_eval_wps']:,.0f}",
            flush=True,
        )
    row = merge_rows(rows)
    for key in ("torch_train_wps", "torch_eval_wps"):
        row[f"{key}_runs"] = [r[key] for r in torch_runs]
        row[key] = statistics.median(row[f"{key}_runs"])
    row["train_ratio"] = row["numlstm_train_wps"] / row["torch_train_wps"]
    row["eval_ratio"] = _best_eval(row) / row["torch_eval_wps"]
    ours_env = dict(mine["environment"]["numlstm"], machine=mine["machine"], args=mine["args"])
    return row, ours_env, torch_runs[0]["environment"]


def _best_eval(row: dict) -> float:
    """numlstm's batch-1 evaluation words/s that the ratio uses: fast_eval where it exists."""
    return row.get("fast_eval_eval_wps", row["loss_loop_eval_wps"])


def print_environments(ours: dict, theirs: dict, removed: dict[str, str]) -> None:
    def fmt(d: dict[str, str]) -> str:
        return ", ".join(f"{k}={v}" for k, v in d.items()) or "none"

    print(
        f"\nEach side ran in processes of its own, alternately, started without these "
        f"variables of this script's environment: {fmt(removed)}"
    )
    print(
        f"  numlstm side: thread variables {fmt(ours['thread_vars'])}; Numba "
        f"{ours['numba_threads']} threads ({ours['numba_threading_layer']}); NumPy BLAS "
        f"{ours['blas']}, {ours['blas_threads']} threads; numlstm from {ours['numlstm_file']}"
    )
    print(
        f"  torch side (numlstm not imported): thread variables {fmt(theirs['thread_vars'])}; "
        f"torch {theirs['torch']}, torch.get_num_threads() {theirs['torch_num_threads']} "
        f"(inter-op {theirs['torch_interop_threads']}); BLAS {theirs['torch_blas']}, "
        f"torch.backends.mkl.is_available() {theirs['mkl_available']}, mkldnn (oneDNN) "
        f"available {theirs['mkldnn_available']} enabled {theirs['mkldnn_enabled']}, "
        f"OpenMP {theirs['openmp_available']}; NumPy BLAS {theirs['numpy_blas']}"
    )


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
    parser.add_argument(
        "--configs",
        default="small,medium",
        help="comma list: small,medium,large; test (1 x 2 units, T=2) for a quick smoke run",
    )
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
        help="BLAS / Numba / torch threads (default: the libraries' own; with "
        "--compare-torch, the defaults of each side's own process)",
    )
    parser.add_argument(
        "--step-threads",
        type=int,
        default=None,
        help="row blocks of each numlstm training step run in threads (parallel.py); default: "
        "parallel.default_threads(20), as `numlstm train` chooses; 1: BLAS's own threads",
    )
    parser.add_argument(
        "--compare-torch",
        action="store_true",
        help="also time PyTorch (bench_torch.py): each side in processes of its own, "
        "alternately, one per repeat; needs torch in this Python",
    )
    parser.add_argument(
        "--eval-parallel", action="store_true", help="also time fast_eval with parallel=True"
    )
    parser.add_argument(
        "--hidden-sweep",
        default="",
        help="comma list of hidden sizes for the sweep, e.g. 200,400,650",
    )
    parser.add_argument("--plot", default="", help="PNG path for the hidden-size sweep")
    parser.add_argument(
        "--variants",
        default="",
        help="rows of each config with Config fields changed, side by side in this run: "
        "'plain; tied: tie_embeddings=true; state: state_keep_prob=0.8, variational=sequence' "
        "(docs/dropout.md, docs/lstmp.md)",
    )
    parser.add_argument("--startup", action="store_true", help="measure import + first step")
    parser.add_argument("--json", default="", help="write all results to this JSON file")
    args = parser.parse_args(argv)  # --threads was applied at import (see the top of the file)

    configs = [c for c in args.configs.split(",") if c]
    cells = [c for c in args.cells.split(",") if c]
    for c in cells:
        if c not in ("lstm", "gru"):
            parser.error(f"unknown cell {c!r}")
    try:
        variants = parse_variants(args.variants) if args.variants else [("", {})]
    except ValueError as e:
        parser.error(str(e))
    if args.compare_torch and any(changes for _, changes in variants):
        parser.error("--compare-torch times the tutorial's model only: drop --variants")
    threads = args.threads or os.cpu_count() or 1
    args.step_threads_given = args.step_threads is not None
    if args.step_threads is None:
        args.step_threads = default_threads(B)
    # Only asked, not imported: PyTorch runs in bench_torch.py's processes.
    with_torch = args.compare_torch and importlib.util.find_spec("torch") is not None
    if args.compare_torch and not with_torch:
        print("torch not installed: skipping")

    results: dict = {"args": vars(args), "flops_formula": FLOPS_FORMULA, "rows": []}
    envs: tuple[dict, dict] | None = None
    for name, (variant, changes) in ((n, v) for n in configs for v in variants):
        try:
            cfg = get_config(name).replace(**changes).validate()
        except ValueError as e:
            parser.error(f"--variants {variant}: {e}")
        args.variant_name = variant
        for cell in cells:
            print(f"running {name} {variant} {cell} ...".replace("  ", " "), flush=True)
            if with_torch:
                with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
                    row, *sides = compare_row(name, cfg, cell, args, tmp)
                envs = envs or (sides[0], sides[1])
                results["rows"].append(row)
            else:
                results["rows"].append(bench_row(name, cfg, cell, args))
    if args.hidden_sweep:
        sizes = [int(h) for h in args.hidden_sweep.split(",") if h]
        print("hidden-size sweep (small architecture):", flush=True)
        results["sweep"] = hidden_sweep(sizes, cells, args)
        if args.plot:
            plot_sweep(results["sweep"], args.plot)
    if args.startup:
        print("startup: two fresh processes, the first with an empty Numba cache ...", flush=True)
        results["startup"] = startup_times()

    if envs is not None:  # the numlstm process's description: its Numba layer has started
        info = dict(envs[0]["machine"], torch=envs[1]["torch"])
        step_threads = envs[0]["args"]["step_threads"]
        results["environment"] = {
            "numlstm": envs[0],
            "torch": envs[1],
            "removed": side_environment()[1],
        }
    else:
        info = machine_info(threads)
        step_threads = args.step_threads
        results["environment"] = {"numlstm": numlstm_environment()}
    results["machine"] = info
    print()
    print(
        f"Machine: {info['platform']}, {info['processor']}, {info['cpu_count']} CPUs, "
        f"threads {threads}, numlstm step threads {step_threads}; "
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
        print_table(results["rows"], with_torch, args.eval_parallel)
        print(f"\nFLOPs per trained word (GEMMs only, backward = 2 x forward): {FLOPS_FORMULA}")
        roofed = [r for r in results["rows"] if "roofline_skipped" not in r]
        for r in results["rows"]:
            if "roofline_skipped" in r:
                print(f"  {_label(r)}: no roofline "
                      f"({r['roofline_skipped']})")  # fmt: skip
        for r in roofed:
            print(
                f"  {_label(r)}: {r['flops_per_word'] / 1e6:.1f} MFLOP/word; "
                f"GEMMs alone {1e3 * r['gemm_seconds_per_step']:.1f} ms/step"
            )
        print(
            "roofline = T * B / (sum of every GEMM of a step timed alone at its shape), "
            "measured after each training run; efficiency = median over runs of achieved / "
            "roofline of the same run."
        )
        for r in roofed:
            runs = ", ".join(f"{e:.0%}" for e in r["efficiency_runs"])
            print(f"  {_label(r)} efficiency per run: {runs}")
        if with_torch:
            print("peak RSS: the largest of the numlstm processes' peaks.")
            for r in results["rows"]:
                for side in ("numlstm_train", "torch_train", "torch_eval"):
                    runs = ", ".join(f"{w:,.0f}" for w in r[f"{side}_wps_runs"])
                    print(f"  {r['config']} {r['cell']} {side} words/s per round: {runs}")
        else:
            print("peak RSS is the process's peak so far: run one config alone for its own "
                  "figure.")  # fmt: skip
    if envs is not None:
        print_environments(*envs, results["environment"]["removed"])
    elif results["rows"]:
        e = results["environment"]["numlstm"]
        vars_ = ", ".join(f"{k}={v}" for k, v in e["thread_vars"].items()) or "none"
        print(f"numlstm ran with thread variables {vars_}; NumPy BLAS {e['blas_threads']} threads")
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
