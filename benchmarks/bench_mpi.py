"""Training steps over MPI ranks against threads in one process, and the two ways of combining
the embedding's row-sparse gradient. Prints figures; asserts nothing about time.

    python benchmarks/bench_mpi.py --threads 2                    # 1 process, 2 threads
    mpiexec -n 2 python benchmarks/bench_mpi.py --threads 1       # 2 ranks, 1 thread each
    mpiexec -n 2 python benchmarks/bench_mpi.py --combine-only    # embedding: dense vs gather

Per config (--config small medium large): words/s of ``train.train_step`` on real PTB batches
(the tutorial's B and T, dropout as the config says; warm-up steps not timed), then under MPI
the time of one embedding-gradient combine each way (``DistributedStep`` with embedding_mode
"dense": the (V, H) array in the Allreduce, "gather": Allgatherv of the touched rows), with
the bytes each moves. Data: --data-dir or $NUMLSTM_DATA_DIR (the PTB text files).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from numlstm import SGD, DataParallel, LanguageModel  # noqa: E402
from numlstm.config import get_config  # noqa: E402
from numlstm.fast import distributed  # noqa: E402
from numlstm.io import ptb  # noqa: E402
from numlstm.train import train_step  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", nargs="+", default=["small"])
    p.add_argument("--steps", type=int, default=10, help="timed steps per config")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="threads per process/rank")
    p.add_argument("--combine-only", action="store_true")
    p.add_argument("--repeats", type=int, default=20, help="timed combines per mode")
    p.add_argument("--data-dir", default=os.environ.get("NUMLSTM_DATA_DIR"))
    args = p.parse_args()
    dist = distributed.start() if distributed.requested(None) else None
    root = dist is None or dist.is_root
    data = ptb.load_ptb(args.data_dir)
    if root:
        where = f"{dist.size} MPI ranks" if dist else "1 process"
        print(f"{where}, {args.threads} thread(s) each, {os.cpu_count()} cores visible")
    for name in args.config:
        cfg = get_config(name)
        model = LanguageModel(cfg.vocab_size, cfg.hidden_size, cfg.num_layers, seed=0)
        if dist is not None:
            step = distributed.DistributedStep(model, dist, args.threads, check_every=0)
        else:
            step = DataParallel(model, args.threads) if args.threads > 1 else None
        if not args.combine_only:
            _time_steps(name, cfg, model, step, data, args, root, dist)
        if dist is not None and dist.size > 1:
            _time_combine(name, cfg, model, step, data, args, root)
        if step is not None:
            step.close()


def _time_steps(name, cfg, model, step, data, args, root, dist) -> None:
    opt = SGD(model.params, cfg.learning_rate)
    rng = np.random.default_rng(1)
    state = model.init_state(cfg.batch_size)
    batches = ptb.ptb_iterator(data.train, cfg.batch_size, cfg.num_steps)
    times = []
    for i, (x, y) in zip(range(args.warmup + args.steps), batches, strict=False):
        if dist is not None:
            dist.comm.Barrier()
        t0 = time.perf_counter()
        _, state = train_step(model, opt, x, y, state, cfg.max_grad_norm, cfg.keep_prob, rng,
                              step)  # fmt: skip
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    if root:
        med = float(np.median(times))
        print(f"{name}: step median {med * 1e3:.1f} ms (min {min(times) * 1e3:.1f}), "
              f"{cfg.batch_size * cfg.num_steps / med:,.0f} words/s over {len(times)} steps"
              + (f", embedding went {step.last_mode}" if dist else ""))  # fmt: skip


def _time_combine(name, cfg, model, step, data, args, root) -> None:
    """One real batch's gradient, then its embedding combined ``repeats`` times each way."""
    x, y = next(ptb.ptb_iterator(data.train, cfg.batch_size, cfg.num_steps))
    state = model.init_state(cfg.batch_size)
    rng = np.random.default_rng(1)
    V, H = model.params["embedding"].shape
    s = model.dtype.itemsize
    for mode in ("dense", "gather"):
        step.embedding_mode = mode
        step.loss_and_grads(x, y, state, cfg.keep_prob, rng)  # warm-up, and the rows touched
        t_all = []
        for _ in range(args.repeats):
            step.dist.comm.Barrier()
            t0 = time.perf_counter()
            _, grads, _ = step.loss_and_grads(x, y, state, cfg.keep_prob, rng)
            t_all.append(time.perf_counter() - t0)
        rows = len(grads["embedding"].rows)
        if root:
            sent = 2 * V * H * s if mode == "dense" else None
            what = (
                f"{V * H * s / 1e6:.1f} MB allreduced"
                if sent
                else f"<= {cfg.batch_size * cfg.num_steps} rows x {8 + H * s} B gathered"
            )
            print(
                f"{name}: whole step with embedding {mode}: median "
                f"{np.median(t_all) * 1e3:.1f} ms ({what}; {rows} distinct rows after)"
            )
    step.embedding_mode = "auto"


if __name__ == "__main__":
    main()
