"""How each way of running a step degrades when another program shares the cores.

A user's machine is rarely idle. OpenBLAS's worker threads spin while they wait for work, so a
product split between two threads stalls whenever another process holds one of the cores; the
issue that asked for this measured the PTB example at a third of its speed that way. This
script times the same work three ways, on a quiet machine and with a competing process (one
busy loop, ``--hogs`` of them) running beside it:

* ``blas-all``: the step in this thread, BLAS on all its threads (NumPy's default);
* ``blas-1``: the step in this thread, BLAS on one thread;
* ``blocks``: ``numlstm.DataParallel`` with ``default_threads(B)`` row blocks (what
  ``numlstm train`` and the examples run): one thread and one BLAS thread per block.

Workloads: a PTB Small training step (SGD, clip), the Shakespeare example's step (Adam, its
shapes) and batch-1 generation (``numlstm.generate.generate``) with the Small and Large
models' hidden sizes (no row blocks there, so only the two BLAS settings). Random token ids;
only speed is measured. Prints a Markdown table of the median over ``--repeats`` runs, the
variants alternating within each repeat; never asserts.

    python benchmarks/bench_busy.py                        # quiet, then with one busy process
    python benchmarks/bench_busy.py --steps 1 --words 3 --repeats 1 --workloads ptb-small  # smoke
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

import numlstm
from numlstm.fast.team import (
    blas_thread_count,
    blas_threads,
    blas_threads_controllable,
    usable_cores,
)
from numlstm.generate import generate

# (vocab, hidden, layers, batch, steps, optimiser): PTB Small; examples/shakespeare.py's
# defaults (its vocabulary at min count 3 is about 9,000 words).
WORKLOADS = {
    "ptb-small": (10_000, 200, 2, 20, 20, "sgd"),
    "shakespeare": (9_000, 128, 1, 32, 50, "adam"),
}
HOG = "while True: pass"


def trainer(workload: str, variant: str) -> tuple[Callable[[int], float], Callable[[], None]]:
    """(run(n) -> seconds for n steps, close) for one workload and variant."""
    V, H, L, B, T, optimiser = WORKLOADS[workload]
    rng = np.random.default_rng(0)
    model = numlstm.LanguageModel(V, H, L, seed=0)
    opt = numlstm.SGD(model.params, lr=0.1) if optimiser == "sgd" else numlstm.Adam(model.params)
    ids = rng.integers(0, V, (B, T + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    parallel = (
        numlstm.DataParallel(model, numlstm.default_threads(B)) if variant == "blocks" else None
    )
    blas = contextlib_blas(blas_setting(variant))
    step_fn = parallel.loss_and_grads if parallel is not None else model.loss_and_grads

    def run(n: int) -> float:
        state = model.init_state(B)
        with blas:
            start = time.perf_counter()
            for _ in range(n):
                loss, grads, state = step_fn(x, y, state)
                numlstm.clip_by_global_norm(grads, 5.0)
                opt.step(grads)
            return time.perf_counter() - start

    return run, (parallel.close if parallel is not None else (lambda: None))


def blas_setting(variant: str) -> int | None:
    """BLAS threads for a variant. Set explicitly every time: an open DataParallel (the
    "blocks" runner) holds the whole process's BLAS at one thread."""
    return {"blas-all": usable_cores(), "blas-1": 1}.get(variant)


class contextlib_blas:  # noqa: N801 - reads as a with-statement helper
    """``with`` BLAS on n threads (None: leave it as it is); reusable, unlike blas_threads."""

    def __init__(self, n: int | None) -> None:
        self.n, self._cm = n, None

    def __enter__(self) -> None:
        if self.n is not None:
            self._cm = blas_threads(self.n)
            self._cm.__enter__()

    def __exit__(self, *exc) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)
            self._cm = None


GENERATE = {"generate-small": 200, "generate-large": 1500}  # hidden size; V = 10,000, 2 layers


def generator(workload: str, variant: str) -> tuple[Callable[[int], float], Callable[[], None]]:
    V, H, L = 10_000, GENERATE[workload], 2
    model = numlstm.LanguageModel(V, H, L, seed=0)
    blas = contextlib_blas(blas_setting(variant))

    def run(n: int) -> float:
        with blas:
            start = time.perf_counter()
            generate(model, [1, 2, 3], n, seed=0)
            return time.perf_counter() - start

    return run, lambda: None


def measure(args: argparse.Namespace, hogs: int) -> dict[tuple[str, str], float]:
    """Median units/s per (workload, variant), with ``hogs`` busy processes running."""
    procs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hogs)]
    try:
        rows: dict[tuple[str, str], list[float]] = {}
        cases = [(w, v) for w in WORKLOADS for v in ("blas-all", "blas-1", "blocks")]
        cases += [(g, v) for g in GENERATE for v in ("blas-all", "blas-1")]
        cases = [(w, v) for w, v in cases if w in args.workloads]
        runners = {}
        for w, v in cases:
            runners[w, v] = generator(w, v) if w in GENERATE else trainer(w, v)
            runners[w, v][0](min(50, args.words) if w in GENERATE else 2)  # compile, warm up
        for _ in range(args.repeats):
            for w, v in cases:  # variants alternate within each repeat
                n = args.words if w in GENERATE else args.steps
                per = 1 if w in GENERATE else WORKLOADS[w][3] * WORKLOADS[w][4]
                rows.setdefault((w, v), []).append(n * per / runners[w, v][0](n))
        for _, close in runners.values():
            close()
        return {k: statistics.median(v) for k, v in rows.items()}
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed run")
    parser.add_argument("--words", type=int, default=300, help="generated words per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median)")
    parser.add_argument("--hogs", type=int, default=1, help="busy processes in the busy runs")
    everything = [*WORKLOADS, *GENERATE]
    parser.add_argument("--workloads", default=",".join(everything),
                        help=f"comma list of {', '.join(everything)}")  # fmt: skip
    args = parser.parse_args(argv)
    args.workloads = args.workloads.split(",")
    unknown = set(args.workloads) - set(everything)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {everything}")
    if not blas_threads_controllable():
        sys.exit("NumPy's BLAS is not an OpenBLAS numlstm can control; nothing to compare")
    print(f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.processor() or platform.machine()}"
          f", {usable_cores()} cores, BLAS threads {blas_thread_count()}, "
          f"default_threads(20) = {numlstm.default_threads(20)}")  # fmt: skip
    quiet = measure(args, 0)
    busy = measure(args, args.hogs)
    print(f"\n| workload | variant | quiet (words/s) | with {args.hogs} busy process(es) "
          "| busy / quiet |")  # fmt: skip
    print("|---|---|---|---|---|")
    for (w, v), q in quiet.items():
        b = busy[w, v]
        print(f"| {w} | {v} | {q:,.0f} | {b:,.0f} | {b / q:.2f} |")


if __name__ == "__main__":
    main()
