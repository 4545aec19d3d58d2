"""What tests/test_mpi.py runs in each MPI rank (``mpirun -n 2 python tests/mpi_worker.py ...``)
and, for the one-process reference, in the test process itself.

    lengths OUT.npz DTYPE THREADS [DROPOUT]
                                       one DistributedStep.loss_and_grads and .loss of a padded
                                       batch (``lengths_batch``), dropout ``dropout_for(DROPOUT)``
                                       (default "float"); rank 0 saves the results
    options OUT.npz DTYPE THREADS MODE the same with a model with every LSTMP option and tied
                                       embeddings (``options_batch``), embedding_mode MODE
    steps OUT.npz DTYPE THREADS MODE   20 training steps of a tiny model (train.train_step with
                                       distributed.DistributedStep); rank 0 saves losses, params
    train OUT_DIR DTYPE [--resume] [--stop-after N] [--fail-after N] [--big]
                                       train.train on the tiny config below; --stop-after N sends
                                       SIGINT to rank 0 alone after N steps (the run must save
                                       a checkpoint on every rank's agreement and stop);
                                       --fail-after N raises an error in rank 1 alone after N
                                       steps; --big trains 40 epochs (time to kill a rank)
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from numlstm import SGD, Dropout, LanguageModel  # noqa: E402
from numlstm import train as train_module  # noqa: E402
from numlstm.config import Config  # noqa: E402
from numlstm.fast import distributed  # noqa: E402
from numlstm.io import ptb  # noqa: E402

PTB_DIR = Path(os.environ.get("NUMLSTM_PTB_DIR", REPO.parent / "shared" / "data" / "ptb"))
STEPS = 20
B, T, H = 6, 5, 8
CONFIG = Config(num_layers=2, num_steps=T, hidden_size=H, max_epoch=1, max_max_epoch=2,
                keep_prob=0.5, batch_size=B, max_grad_norm=0.25, vocab_size=10000)  # fmt: skip


def data() -> ptb.PTBData:
    d = ptb.load_ptb(PTB_DIR)
    return ptb.PTBData(d.train[:2400], d.valid[:600], d.test[:120], d.word_to_id, d.id_to_word)


def run_steps(d: ptb.PTBData, dtype: str, threads: int = 1, mode: str = "auto",
              dist: distributed.Distributed | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """20 steps with dropout and clipping; the losses and the final parameters."""
    model = LanguageModel(CONFIG.vocab_size, H, CONFIG.num_layers, dtype=dtype, seed=3)
    opt = SGD(model.params, 1.0)
    rng = np.random.default_rng(4)
    step = None
    if dist is not None:
        step = distributed.DistributedStep(model, dist, threads, embedding_mode=mode,
                                           check_every=5)  # fmt: skip
    state = model.init_state(B)
    losses = []
    for i, (x, y) in enumerate(ptb.ptb_iterator(d.train, B, T)):
        if i == STEPS:
            break
        loss, state = train_module.train_step(model, opt, x, y, state, CONFIG.max_grad_norm,
                                              CONFIG.keep_prob, rng, step)  # fmt: skip
        losses.append(loss)
    out = {f"param.{k}": a.copy() for k, a in model.params.items()}
    out["losses"] = np.array(losses)
    if dist is not None:  # the final state, all rows, to compare with one process
        state = dist.gather_state(state, B)
        out["modes"] = np.array([step.last_mode])
    if state is not None:
        for i, layer in enumerate(state):
            for j, a in enumerate(layer):
                out[f"state.{i}.{j}"] = a
    return out


def lengths_batch(dtype: str):
    """A model and a padded (B, T) batch: (model, x, y, lengths), lengths with 0 and T."""
    model = LanguageModel(50, H, 2, dtype=dtype, seed=3)
    rng = np.random.default_rng(5)
    x, y = rng.integers(0, 50, (B, T)), rng.integers(0, 50, (B, T))
    return model, x, y, np.array([0, T, 2, 3, T, 1])


# Every model option at once (tests/test_model_lstmp.py): the tied embedding's gradient has
# a term from every rank's softmax (dT1), and its row-sparse form lists all V rows.
OPTIONS = {"peepholes": True, "cell_clip": 0.05, "proj_size": 4, "proj_clip": 0.02,
           "tie_embeddings": True, "embedding_size": 4}  # fmt: skip


def options_batch(dtype: str):
    """As ``lengths_batch``, with a model with every option of ``OPTIONS``."""
    _, x, y, lengths = lengths_batch(dtype)
    return LanguageModel(50, H, 2, dtype=dtype, seed=3, **OPTIONS), x, y, lengths


def dropout_for(name: str) -> float | Dropout:
    """The dropout of a "lengths" run: "float" the tutorial's keep_prob 0.5; otherwise every
    DropoutWrapper site with masks of that variational mode ("fresh", "sequence", "batch")."""
    if name == "float":
        return 0.5
    return Dropout(0.8, 0.7, 0.6, 0.7, None if name == "fresh" else name)


def run_lengths(dtype: str, threads: int, dist: distributed.Distributed, mode: str = "auto",
                batch=None, dropout: str = "float") -> dict:  # fmt: skip
    model, x, y, lengths = (batch or lengths_batch)(dtype)
    with distributed.DistributedStep(model, dist, threads, embedding_mode=mode) as step:
        keep, rng = dropout_for(dropout), np.random.default_rng(6)
        loss, grads, state = step.loss_and_grads(x, y, model.init_state(B), keep, rng,
                                                 lengths=lengths)  # fmt: skip
        out = {f"grad.{k}": (g.to_dense() if hasattr(g, "to_dense") else g).copy()
               for k, g in grads.items()}  # fmt: skip
        out["loss"] = np.array(loss)
        full = dist.gather_state(state, B)  # all rows on the root, None elsewhere
        if full is not None:
            out["state"] = full[0][1]  # layer 0's c
        out["eval"] = np.array(step.loss(x, y, model.init_state(B), lengths=lengths)[0])
    return out


def main(argv: list[str]) -> int:
    command, target, dtype = argv[0], Path(argv[1]), argv[2]
    if command == "lengths":
        dist = distributed.start()
        dropout = argv[4] if len(argv) > 4 else "float"
        result = run_lengths(dtype, int(argv[3]), dist, dropout=dropout)
        if dist.is_root:
            np.savez(target, **result)
        return 0
    if command == "options":
        dist = distributed.start()
        result = run_lengths(dtype, int(argv[3]), dist, argv[4], options_batch)
        if dist.is_root:
            np.savez(target, **result)
        return 0
    if command == "steps":
        dist = distributed.start()
        result = run_steps(data(), dtype, int(argv[3]), argv[4], dist)
        if dist.is_root:
            np.savez(target, **result)
        return 0

    def option(name: str) -> int | None:
        return int(argv[argv.index(name) + 1]) if name in argv else None

    stop_after, fail_after = option("--stop-after"), option("--fail-after")
    real_step, calls = train_module.train_step, [0]

    def step_then_signal(*args, **kwargs):
        result = real_step(*args, **kwargs)
        calls[0] += 1
        if calls[0] == stop_after and distributed.launcher_rank() == 0:
            os.kill(os.getpid(), signal.SIGINT)  # rank 0 alone sees it
        if calls[0] == fail_after and distributed.launcher_rank() == 1:
            raise RuntimeError("rank 1 failed on purpose")
        return result

    train_module.train_step = step_then_signal
    config = CONFIG.replace(max_max_epoch=40) if "--big" in argv else CONFIG
    try:
        summary = train_module.train(config, data(), target, seed=1, resume="--resume" in argv,
                                     progress="none", log=lambda s: None, threads=1,
                                     checkpoint_every=None, dtype=dtype,
                                     mpi=True if "--mpi" in argv else None)  # fmt: skip
    except train_module.Interrupted:
        print("interrupted", flush=True)
        return 3
    print(json.dumps({"test": summary["test_perplexity"],
                      "history": summary["history"]}), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
