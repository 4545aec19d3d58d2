"""Training and evaluation on Penn Treebank, as in the TensorFlow PTB tutorial.

    for epoch in range(max_max_epoch):
        lr = learning_rate * lr_decay ** max(epoch + 1 - max_epoch, 0)      (O4)
        state = zeros                                  # reset at each epoch start
        for x, y in ptb_iterator(train, batch_size, num_steps):
            loss, grads, state = model.loss_and_grads(x, y, state, keep_prob)
            p -= lr * clip(grads, max_grad_norm)                            (O1-O3)
        valid perplexity with the same batch_size and num_steps
    test perplexity with batch_size 1 and num_steps 1

Perplexity = exp(sum of batch losses / sum of num_steps) = exp(mean cross-entropy per word).
After every epoch (and on Ctrl-C) a checkpoint is written atomically; ``resume=True`` continues
from it with the same schedule, the same data position, the same carried state and the same
dropout random stream, so an interrupted run ends where an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Config
from .fast.fast_eval import evaluate_sequence
from .fast.parallel import DataParallel, default_threads
from .io import ptb
from .io.checkpoint import load_checkpoint
from .io.saving import load_model, save_model
from .model import LanguageModel, State
from .optim import SGD, clip_factor, global_norm

CHECKPOINT = "checkpoint.npz"


@dataclass
class EpochResult:
    perplexity: float
    words_per_second: float
    seconds: float


# --------------------------------------------------------------------------------------------
# One training step, one epoch, one evaluation
# --------------------------------------------------------------------------------------------


def train_step(
    model: LanguageModel, opt: SGD, x: np.ndarray, y: np.ndarray, state: State,
    max_grad_norm: float, keep_prob: float, rng: np.random.Generator,
    parallel: DataParallel | None = None,
) -> tuple[float, State]:  # fmt: skip
    """Forward, backward, clip by global norm (O1, O2) and SGD update (O3) of one batch.

    The embedding's gradient stays row-sparse (``IndexedRows``): the norm and the update touch
    only the rows of the batch's words, with the same result as the dense gradient.
    ``parallel`` (a ``DataParallel`` of this model) computes the loss and gradients on row
    blocks of the batch in threads; the numbers are the same up to rounding.
    """
    if parallel is not None:  # the same loss and gradients, on row blocks in threads
        loss, grads, state = parallel.loss_and_grads(x, y, state, keep_prob, rng)
    else:
        loss, grads, state = model.loss_and_grads(
            x, y, state, keep_prob, rng, sparse_embedding=True
        )
    norm = global_norm(grads)  # (O1)
    opt.step(grads, grad_scale=clip_factor(norm, max_grad_norm))  # (O2) folded into (O3)
    return loss, state


def evaluate(
    model: LanguageModel, data: np.ndarray, batch_size: int = 1, num_steps: int = 1,
    progress: Callable[[int, int, float], None] | None = None,
    parallel: DataParallel | None = None,
) -> EpochResult:  # fmt: skip
    """Perplexity of ``model`` on a token id sequence, without dropout.

    The tutorial scores the test set with batch_size 1 and num_steps 1: every word is
    predicted from the full history, one step at a time. ``parallel`` (a ``DataParallel`` of
    this model) splits each batch's rows between its threads.
    """
    if batch_size == 1 and num_steps == 1 and progress is None:
        # The same sums, word by word, in one Numba call over the whole sequence (fast_eval.py).
        data = np.asarray(data)
        n = ptb.epoch_size(len(data), 1, 1)  # N - 1 predictions, as the loop below
        start = time.perf_counter()
        total, _ = evaluate_sequence(model, data)
        seconds = time.perf_counter() - start
        return EpochResult(math.exp(total / n), n / seconds, seconds)
    n_batches = ptb.epoch_size(len(data), batch_size, num_steps)
    state = model.init_state(batch_size)
    costs, iters, start = 0.0, 0, time.perf_counter()
    for step, (x, y) in enumerate(ptb.ptb_iterator(data, batch_size, num_steps)):
        loss, state = (parallel or model).loss(x, y, state)
        costs += loss
        iters += num_steps
        if progress is not None:
            progress(step, n_batches, math.exp(costs / iters))
    seconds = time.perf_counter() - start
    return EpochResult(math.exp(costs / iters), iters * batch_size / seconds, seconds)


# --------------------------------------------------------------------------------------------
# Progress display
# --------------------------------------------------------------------------------------------


class Progress:
    """The tutorial's ten lines per epoch, or a tqdm bar when asked for and installed."""

    def __init__(self, mode: str = "lines", stream=sys.stdout) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() and _has_tqdm() else "lines"
        if mode == "bar" and not _has_tqdm():
            print("tqdm is not installed; showing progress lines instead", file=stream)
            mode = "lines"
        self.mode, self.stream, self._bar = mode, stream, None

    def start(self, total: int, desc: str) -> None:
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)

    def update(self, step: int, total: int, perplexity: float, wps: float) -> None:
        if self.mode == "bar" and self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(ppl=f"{perplexity:.1f}", wps=f"{wps:,.0f}", refresh=False)
        elif self.mode == "lines" and total >= 10 and step % (total // 10) == 10:
            print(f"{step / total:.3f} perplexity: {perplexity:.3f} speed: {wps:.0f} wps",
                  file=self.stream, flush=True)  # fmt: skip

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _has_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _state_arrays(state: State) -> dict[str, np.ndarray]:
    names = ("h", "c")
    return {f"state.l{i}.{names[j]}": a for i, s in enumerate(state) for j, a in enumerate(s)}


def _state_from_arrays(arrays: dict[str, np.ndarray], model: LanguageModel) -> State:
    names = ("h", "c") if model.cell == "lstm" else ("h",)
    return [tuple(arrays[f"state.l{i}.{k}"] for k in names) for i in range(model.num_layers)]


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[list[bool]]:
    """Turn the first Ctrl-C into a flag checked between steps, so a checkpoint is never taken
    in the middle of a parameter update; a second Ctrl-C interrupts at once."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signals can only be handled in the main thread
        return

    def handler(signum, frame):
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = True
        print("\nCtrl-C: finishing this step and saving a checkpoint (again to abort)",
              file=sys.stderr, flush=True)  # fmt: skip

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------


def train(
    config: Config,
    data: ptb.PTBData,
    out_dir: str | Path,
    *,
    cell: str = "lstm",
    seed: int = 0,
    resume: bool = False,
    progress: str = "lines",
    log: Callable[[str], None] = print,
    threads: int | None = None,
) -> dict:
    """Train on ``data.train``, validate after each epoch, test at the end; returns a summary.

    ``threads``: how many row blocks of each batch run side by side (``parallel.py``); None
    chooses ``default_threads(batch_size)``, one per core. 1 runs each step in this thread with
    BLAS's own threads. Seeded runs give the same numbers up to rounding either way.

    Writes to ``out_dir``: checkpoint.npz (after every epoch and on Ctrl-C), log.csv (one row
    per epoch), summary.json (at the end) and perplexity.png (if matplotlib is installed).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    if data.vocab_size != config.vocab_size:
        raise ValueError(f"the data has a vocabulary of {data.vocab_size} words but the config "
                         f"says vocab_size={config.vocab_size}; pass --vocab_size "
                         f"{data.vocab_size}")  # fmt: skip

    model = LanguageModel(
        config.vocab_size, config.hidden_size, config.num_layers, cell=cell,
        init_scale=config.init_scale, forget_bias=0.0, seed=seed,
    )  # fmt: skip
    rng = np.random.default_rng(seed + 1)  # dropout masks
    epoch, step, costs, iters, history, state = 0, 0, 0.0, 0, [], None
    if resume and ckpt_path.exists():
        model, _, meta = load_model(ckpt_path)
        saved = meta.get("training", {})
        if saved.get("config") != config.to_dict() or model.cell != cell:
            raise ValueError(f"{ckpt_path} was written by a different config or cell; "
                             "use another --out directory or drop --resume")  # fmt: skip
        epoch, step, history = saved["epoch"], saved["step"], saved["history"]
        costs, iters = saved["costs"], saved["iters"]
        rng.bit_generator.state = saved["rng"]
        if step > 0:  # interrupted mid-epoch: the carried state was saved too
            state = _state_from_arrays(load_checkpoint(ckpt_path)[0], model)
        log(f"Resuming from {ckpt_path}: epoch {epoch + 1}, step {step}")
    elif resume:
        log(f"No checkpoint in {out}; starting a new run")

    def save(epoch: int, step: int, costs: float, iters: int, state: State | None) -> None:
        """Checkpoint = a saved model (generate/evaluate read it) + what resuming needs."""
        training = {
            "config": config.to_dict(), "epoch": epoch, "step": step, "costs": costs,
            "iters": iters, "history": history, "rng": rng.bit_generator.state, "seed": seed,
        }  # fmt: skip
        extra = _state_arrays(state) if state is not None else None
        save_model(ckpt_path, model, data.id_to_word,
                   {"training": training, "preprocess": "lower"}, extra)  # fmt: skip

    opt = SGD(model.params, config.learning_rate)
    bar = Progress(progress)
    B, T = config.batch_size, config.num_steps
    n_batches = ptb.epoch_size(len(data.train), B, T)
    threads = default_threads(B) if threads is None else threads
    log(f"{cell.upper()} {config.num_layers}x{config.hidden_size}, "
        f"{model.num_parameters():,} parameters, {n_batches} batches per epoch, "
        f"{threads} thread{'s' if threads > 1 else ''}")  # fmt: skip
    parallel = DataParallel(model, threads) if threads > 1 else None
    with contextlib.ExitStack() as stack, _deferred_interrupt() as interrupted:
        if parallel is not None:
            stack.callback(parallel.close)  # BLAS gets its threads back for the test pass
        while epoch < config.max_max_epoch:
            opt.lr = config.lr_at(epoch)  # (O4)
            log(f"Epoch: {epoch + 1} Learning rate: {opt.lr:.3f}")
            if state is None:
                state = model.init_state(B)  # the state is reset at each epoch start
            bar.start(n_batches, f"epoch {epoch + 1}")
            start, start_iters = time.perf_counter(), iters
            for i, (x, y) in enumerate(ptb.ptb_iterator(data.train, B, T)):
                if i < step:
                    continue  # resuming mid-epoch: these batches were already trained on
                loss, state = train_step(
                    model,
                    opt,
                    x,
                    y,
                    state,
                    config.max_grad_norm,
                    config.keep_prob,
                    rng,
                    parallel,
                )
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the loss became {loss} at epoch {epoch + 1}")
                costs, iters, step = costs + loss, iters + T, i + 1
                wps = (iters - start_iters) * B / (time.perf_counter() - start)
                bar.update(i, n_batches, math.exp(costs / iters), wps)
                if interrupted[0]:
                    bar.close()
                    save(epoch, step, costs, iters, state)
                    log(f"Interrupted: saved {ckpt_path} at epoch {epoch + 1}, step {step}; "
                        "continue with --resume")  # fmt: skip
                    raise KeyboardInterrupt
            bar.close()
            seconds = time.perf_counter() - start
            train_ppl = math.exp(costs / iters)
            log(f"Epoch: {epoch + 1} Train Perplexity: {train_ppl:.3f}")
            valid = evaluate(model, data.valid, B, T, parallel=parallel)
            log(f"Epoch: {epoch + 1} Valid Perplexity: {valid.perplexity:.3f}")
            history.append({
                "epoch": epoch + 1, "lr": opt.lr, "train_perplexity": train_ppl,
                "valid_perplexity": valid.perplexity, "seconds": seconds,
                "train_wps": (iters - start_iters) * B / seconds,
            })  # fmt: skip
            log(f"Epoch: {epoch + 1} took {seconds:.0f} s "
                f"({history[-1]['train_wps']:,.0f} words/s)")  # fmt: skip
            epoch, step, costs, iters, state = epoch + 1, 0, 0.0, 0, None
            save(epoch, 0, 0.0, 0, None)
            _write_log(out / "log.csv", history)
            if interrupted[0]:
                log(f"Interrupted: saved {ckpt_path} after epoch {epoch}; continue with --resume")
                raise KeyboardInterrupt

    test = evaluate(model, data.test, 1, 1)
    log(f"Test Perplexity: {test.perplexity:.3f} ({test.words_per_second:,.0f} words/s)")
    summary = {
        "cell": cell, "config": config.to_dict(), "history": history,
        "test_perplexity": test.perplexity, "test_words_per_second": test.words_per_second,
        "train_seconds": sum(h["seconds"] for h in history), "seed": seed,
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_history(history, out / "perplexity.png", title=f"PTB {cell.upper()}", log=log)
    return summary


def _write_log(path: Path, history: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)


def plot_history(history: list[dict], path: Path, title: str = "", log=print) -> None:
    """Train and valid perplexity per epoch to a PNG (skipped if matplotlib is missing)."""
    if not history:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed; skipping the perplexity plot")
        return
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_perplexity"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["valid_perplexity"] for h in history], "s-", label="valid")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
