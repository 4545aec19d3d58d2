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
A checkpoint is written atomically after every epoch, every ``checkpoint_every`` seconds of
training (5 minutes by default) and on Ctrl-C or SIGTERM; ``resume=True`` continues from it with
the same schedule, the same data position, the same carried state and the same dropout random
stream, so a run stopped and resumed any number of times gives the same per-epoch numbers as an
uninterrupted one. The run folder's rules (one writer, nothing overwritten, segments recorded)
are in io/run_folder.py.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO  # the standard library's, not numlstm.io
from pathlib import Path

import numpy as np

from .config import MODEL_OPTIONS, Config
from .dropout import Dropout, check_cell
from .fast import distributed
from .fast.fast_eval import evaluate_sequence
from .fast.parallel import DataParallel, default_threads
from .io import grad_norm_log, ptb, run_folder
from .io.checkpoint import load_checkpoint
from .io.grad_norm_log import GRAD_NORM_CSV, GRAD_NORM_PNG, GradNormLog
from .io.run_folder import CHECKPOINT, RunFolderError
from .io.saving import load_model, save_model
from .model import CELLS, LanguageModel, State
from .optim import SGD, clip_factor, global_norm

DEFAULT_CHECKPOINT_EVERY = 300.0  # seconds: a run stopped at any moment loses at most 5 minutes


class TrainingDiverged(FloatingPointError):
    """The loss became non-finite or the validation perplexity blew up; the message says what
    to change."""


class Interrupted(KeyboardInterrupt):
    """Training stopped by a signal (SIGINT or SIGTERM) after saving a checkpoint."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
    max_grad_norm: float, keep_prob: float | Dropout, rng: np.random.Generator,
    parallel: DataParallel | None = None, norms: list[float] | None = None,
) -> tuple[float, State]:  # fmt: skip
    """Forward, backward, clip by global norm (O1, O2) and SGD update (O3) of one batch.

    The embedding's gradient stays row-sparse (``IndexedRows``): the norm and the update touch
    only the rows of the batch's words, with the same result as the dense gradient.
    ``parallel`` (a ``DataParallel`` of this model) computes the loss and gradients on row
    blocks of the batch in threads; the numbers are the same up to rounding. ``keep_prob``: a
    float (the tutorial's dropout) or a ``Dropout`` (``Config.dropout()``, docs/dropout.md).
    ``norms``, if given, gets the global norm before clipping (O1) appended (the run folder's
    grad_norm.csv).
    """
    if parallel is not None:  # the same loss and gradients, on row blocks in threads
        loss, grads, state = parallel.loss_and_grads(x, y, state, keep_prob, rng)
    else:
        loss, grads, state = model.loss_and_grads(
            x, y, state, keep_prob, rng, sparse_embedding=True
        )
    norm = global_norm(grads)  # (O1); NaN/inf here raises FloatingPointError before the update
    opt.step(grads, grad_scale=clip_factor(norm, max_grad_norm), norm=norm)  # (O2) in (O3)
    if norms is not None:  # after the update: a step that raised is not recorded
        norms.append(norm)
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
        elif self.mode == "lines" and _is_tenth(step, total):
            print(f"{step / total:.3f} perplexity: {perplexity:.3f} speed: {wps:.0f} wps",
                  file=self.stream, flush=True)  # fmt: skip

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _is_tenth(step: int, total: int) -> bool:
    """The tutorial prints at ``step % (total // 10) == 10``, which never fires when an epoch
    has fewer than 110 batches; shorter epochs print as each tenth of the epoch completes."""
    if total >= 110:
        return step % (total // 10) == 10
    return (step + 1) * 10 // total > step * 10 // total


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


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
def _deferred_interrupt() -> Iterator[list[int]]:
    """Turn the first Ctrl-C (SIGINT) or SIGTERM into a flag checked between steps, so that a
    checkpoint is never taken in the middle of a parameter update; a second signal interrupts at
    once. The flag holds the signal number (0: none)."""
    flag = [0]
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signals can only be handled in the main thread
        return

    def handler(signum, frame):
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = signum
        print(f"\n{signal.Signals(signum).name}: finishing this step and saving a checkpoint "
              "(send it again to abort)", file=sys.stderr, flush=True)  # fmt: skip

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


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
    checkpoint_every: float | None = DEFAULT_CHECKPOINT_EVERY,
    overwrite: bool = False,
    data_source: dict | None = None,
    mpi: bool | None = None,
    dtype: type | np.dtype = np.float32,
) -> dict:
    """Train on ``data.train``, validate after each epoch, test at the end; returns a summary.

    ``threads``: how many row blocks of each batch run side by side (``parallel.py``); None
    chooses ``default_threads(batch_size)``, one per core. 1 runs each step in this thread with
    BLAS's own threads. Seeded runs give the same numbers up to rounding either way.

    ``checkpoint_every``: seconds of training between mid-epoch checkpoints (None or 0: only
    after each epoch and on a signal). ``resume``: continue the run in ``out_dir``; the config
    must be the same except ``max_max_epoch``, which may grow. ``overwrite``: replace a run
    already in ``out_dir`` (without it, and without ``resume``, such a folder is refused).

    Writes to ``out_dir``: checkpoint.npz, log.csv (one row per epoch), grad_norm.csv (the
    global gradient norm before clipping of every step, rewritten with every checkpoint;
    io/grad_norm_log.py), summary.json (after every epoch, with ``"finished": false`` until the
    test pass) and perplexity.png and grad_norm.png (if matplotlib is installed). Raises
    ``Interrupted`` after saving a checkpoint on SIGINT or SIGTERM, and ``RunFolderError`` for
    a folder it must not touch. ``data_source`` (JSON-able, e.g. ``{"data_dir": ...,
    "limit_tokens": ...}``) is recorded in the checkpoint so that ``numlstm evaluate`` scores
    the same data by default.

    ``mpi``: train in the ranks of an MPI job (fast/distributed.py): True, False, or None (default)
    for "when an MPI launcher started this process with a world size above 1". Rank 0 alone
    holds the folder's lock and writes files; every rank returns the summary. ``dtype``: the
    parameters' dtype (float32, or float64 for exact comparisons in tests).
    """
    out = Path(out_dir)
    config.validate()
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or not 1 <= threads <= config.batch_size):  # fmt: skip
        raise ValueError(f"threads must be an integer from 1 to batch_size="
                         f"{config.batch_size}, got {threads!r}")  # fmt: skip
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    lstmp = config.lstmp_options_on()
    if cell != "lstm" and lstmp:  # refused here, before the run folder is touched
        raise ValueError(f"{', '.join(lstmp)}: the LSTMP options need cell 'lstm', got {cell!r}")
    check_cell(config.dropout(), cell)  # state dropout is for the LSTM only
    if data.vocab_size != config.vocab_size:
        raise ValueError(f"the data has a vocabulary of {data.vocab_size} words but the config "
                         f"says vocab_size={config.vocab_size}; pass --vocab_size "
                         f"{data.vocab_size}")  # fmt: skip
    if checkpoint_every is not None and not (checkpoint_every >= 0 and
                                             math.isfinite(checkpoint_every)):  # fmt: skip
        raise ValueError(f"checkpoint_every must be a number of seconds >= 0, "
                         f"got {checkpoint_every}")  # fmt: skip
    args = dict(cell=cell, seed=seed, resume=resume, threads=threads, overwrite=overwrite,
                checkpoint_every=checkpoint_every or None, data_source=data_source,
                dtype=dtype)  # fmt: skip
    if not distributed.requested(mpi):  # mpi4py is not even imported
        run_folder.check_writable(out)
        with run_folder.lock(out):
            run_folder.remove_stale_temp_files(out)
            return _train_locked(config, data, out, progress=progress, log=log, **args)
    # MPI: an error on one rank alone aborts the job (the others would wait forever).
    dist = distributed.start()
    with dist.guard(Interrupted, TrainingDiverged), contextlib.ExitStack() as stack:

        def take_folder() -> None:  # rank 0 alone owns the run folder
            run_folder.check_writable(out)
            stack.enter_context(run_folder.lock(out))
            run_folder.remove_stale_temp_files(out)

        dist.on_root(take_folder)
        if not dist.is_root:
            log, progress = (lambda message: None), "none"
        return _train_locked(config, data, out, progress=progress, log=log, dist=dist, **args)


def _train_locked(config: Config, data: ptb.PTBData, out: Path, *, cell: str, seed: int,
                  resume: bool, progress: str, log: Callable[[str], None], threads: int | None,
                  checkpoint_every: float | None, overwrite: bool, data_source: dict | None,
                  dtype: type | np.dtype = np.float32,
                  dist: distributed.Distributed | None = None) -> dict:  # fmt: skip
    """``train`` once the folder's lock is held (by rank 0, under MPI: ``dist``)."""
    ckpt_path = out / CHECKPOINT
    B, T = config.batch_size, config.num_steps
    n_batches = ptb.epoch_size(len(data.train), B, T)
    splits = {"train": data.train, "valid": data.valid, "test": data.test}
    fingerprint = run_folder.data_fingerprint(splits, data.id_to_word)
    writer = dist is None or dist.is_root  # the one process that writes files
    loaded: dict = {}  # the writer's checkpoint: model and carried state

    def setup() -> dict:
        """The folder checks and the resumption data (under MPI on rank 0 alone, then shared
        by broadcast: the other machines need not see the folder)."""
        existing = run_folder.existing_run(out)
        if existing and not resume:
            if not overwrite:
                raise RunFolderError(
                    f"{out} already holds a run ({', '.join(existing)}); pass --resume to "
                    "continue it, --overwrite to replace it, or choose another --out")  # fmt: skip
            for name in (*run_folder.RUN_FILES, "perplexity.png", GRAD_NORM_PNG):
                (out / name).unlink(missing_ok=True)
            log(f"--overwrite: removed the previous run in {out}")
        if not (resume and ckpt_path.exists()):
            if resume:
                log(f"No checkpoint in {out}; starting a new run")
            return {}
        model, _, meta = load_model(ckpt_path)
        saved = meta.get("training", {})
        _check_resume(saved, model.cell, cell, config, fingerprint, n_batches, ckpt_path, log)
        segments = saved.get("segments", [])
        run_folder.close_unfinished(segments)
        loaded["model"] = model
        arrays = load_checkpoint(ckpt_path)[0] if saved["step"] > 0 else {}
        if saved["step"] > 0:  # interrupted mid-epoch: the carried state was saved too
            loaded["state"] = {k: a for k, a in arrays.items() if k.startswith("state.")}
        # Rank 0 alone keeps the norms (it alone writes files); the file is made to match the
        # checkpoint at once (a kill between the file's write and the checkpoint's left more).
        loaded["grad_norms"] = grad_norm_log.restore(
            out / GRAD_NORM_CSV, saved, arrays.get(grad_norm_log.ARRAY), n_batches, log
        )
        run_folder.write_atomic(out / GRAD_NORM_CSV, loaded["grad_norms"].csv_text())
        log(f"Resuming from {ckpt_path}: epoch {saved['epoch'] + 1}, step {saved['step']} "
            f"(segment {len(segments) + 1})")  # fmt: skip
        return {"epoch": saved["epoch"], "step": saved["step"], "history": saved["history"],
                "costs": saved["costs"], "iters": saved["iters"], "segments": segments,
                "epoch_seconds": float(saved.get("epoch_seconds", 0.0)),
                "rng": saved["rng"]}  # fmt: skip

    start = setup() if dist is None else dist.on_root(setup)
    model = loaded.get("model")
    if model is None and writer:
        model = LanguageModel(
            config.vocab_size, config.hidden_size, config.num_layers, cell=cell,
            init_scale=config.init_scale, forget_bias=0.0, seed=seed, dtype=dtype,
            **config.model_options(),
        )  # fmt: skip
    state_arrays = loaded.get("state")
    if dist is not None:  # every rank starts from rank 0's parameters and carried state
        model = dist.share_model(model)
        if start.get("step", 0) > 0:
            state_arrays = dist.bcast_arrays(state_arrays)
    rng = np.random.default_rng(seed + 1)  # dropout masks
    epoch, step, costs, iters, history, state = 0, 0, 0.0, 0, [], None
    segments: list[dict] = start.get("segments", [])
    epoch_seconds = 0.0  # training seconds of the current epoch spent in earlier segments
    if start:
        epoch, step, history = start["epoch"], start["step"], start["history"]
        costs, iters, epoch_seconds = start["costs"], start["iters"], start["epoch_seconds"]
        rng.bit_generator.state = start["rng"]
        if state_arrays is not None:  # the whole batch's rows: each rank takes its own
            state = _state_from_arrays(state_arrays, model)

    if dist is None:
        threads = default_threads(B) if threads is None else threads
    else:
        lo, hi = dist.rows(B)  # the rank's rows (raises if there are more ranks than rows)
        fewest = B // dist.size
        if threads is None:
            threads = dist.threads_per_rank(default_threads(hi - lo))
        elif threads > fewest:
            raise ValueError(f"threads must be at most {fewest} with {dist.size} MPI ranks "
                             f"(the fewest rows of batch_size {B} a rank gets), "
                             f"got {threads}")  # fmt: skip
    grad_norms: GradNormLog = (loaded["grad_norms"] if "grad_norms" in loaded
                               else GradNormLog((epoch, step)))  # fmt: skip
    step_norms: list[float] = []  # train_step appends the step's norm here
    segment = run_folder.new_segment(epoch, step, threads)
    if dist is not None:
        segment["mpi_ranks"] = dist.size
    segments.append(segment)
    seg_start = time.monotonic()

    def save(epoch: int, step: int, costs: float, iters: int, state: State | None,
             epoch_seconds: float, ended: str = "running") -> None:  # fmt: skip
        """Checkpoint = a saved model (generate/evaluate read it) + what resuming needs."""
        if dist is not None:  # every rank comes here at the same step
            dist.check_params(model.params)
            if state is not None:  # the whole batch's rows: any number of ranks can resume
                state = dist.gather_state(state, B)
            if not writer:
                return
        segment.update(saved=run_folder.now_utc(), seconds=time.monotonic() - seg_start,
                       end={"epoch": epoch, "step": step}, ended=ended,
                       peak_rss_mib=round(run_folder.peak_rss_mib(), 1))  # fmt: skip
        training = {
            "config": config.to_dict(), "epoch": epoch, "step": step, "costs": costs,
            "iters": iters, "history": history, "rng": rng.bit_generator.state, "seed": seed,
            "epoch_seconds": epoch_seconds, "segments": segments, "data": fingerprint,
            "data_source": data_source, "dropout": config.dropout().to_dict(),
            "grad_norm": grad_norms.meta(),
        }  # fmt: skip
        extra = _state_arrays(state) if state is not None else {}
        if step > 0:  # the epoch's norms so far; the completed epochs' are in the file
            extra[grad_norm_log.ARRAY] = grad_norms.current(epoch + 1)
        # The file first: it then always holds every step the checkpoint counts (see
        # io/grad_norm_log.py); the rows it may hold beyond are dropped on resume.
        run_folder.write_atomic(out / GRAD_NORM_CSV, grad_norms.csv_text())
        save_model(ckpt_path, model, data.id_to_word,
                   {"training": training, "preprocess": "lower"}, extra)  # fmt: skip

    def write_summary(test: EpochResult | None = None) -> dict:
        summary = {
            "cell": cell, "config": config.to_dict(), "history": history,
            "finished": test is not None,
            "test_perplexity": test.perplexity if test else None,
            "test_words_per_second": test.words_per_second if test else None,
            "train_seconds": sum(h["seconds"] for h in history), "seed": seed,
            "wall_seconds": sum(s["seconds"] for s in segments), "segments": segments,
            "data": fingerprint,
            "grad_norm": grad_norms.summary(config.max_grad_norm, n_batches),
        }  # fmt: skip
        if writer:
            run_folder.write_json(out / "summary.json", summary)
        return summary

    opt = SGD(model.params, config.learning_rate)
    dropout = config.dropout()  # a float keep_prob alone: the tutorial's dropout, same draws
    bar = Progress(progress)
    log(f"{cell.upper()} {config.num_layers}x{config.hidden_size}, "
        f"{model.num_parameters():,} parameters, {n_batches} batches per epoch, "
        f"{threads} thread{'s' if threads > 1 else ''}"
        + (f" in each of {dist.size} MPI ranks" if dist else ""))  # fmt: skip
    if dist is not None:  # the whole batch's loss and gradients, each rank on its rows
        parallel = distributed.DistributedStep(model, dist, threads)
    else:
        parallel = DataParallel(model, threads) if threads > 1 else None
    can_plot = writer and _has_matplotlib()
    if writer and not can_plot:
        log("matplotlib is not installed, so no perplexity.png will be drawn "
            "(pip install 'numlstm[plot]')")  # fmt: skip
    with contextlib.ExitStack() as stack, _deferred_interrupt() as interrupted:
        if parallel is not None:
            stack.callback(parallel.close)  # BLAS gets its threads back for the test pass
        _prepare_kernels(model, parallel, data, config, log)
        while epoch < config.max_max_epoch:
            opt.lr = config.lr_at(epoch)  # (O4)
            log(f"Epoch: {epoch + 1} Learning rate: {opt.lr:.3f}")
            if state is None:
                state = model.init_state(B)  # the state is reset at each epoch start
            bar.start(n_batches, f"epoch {epoch + 1}")
            start, start_iters, last_save = time.perf_counter(), iters, time.monotonic()
            for i, (x, y) in enumerate(ptb.ptb_iterator(data.train, B, T)):
                if i < step:
                    continue  # resuming mid-epoch: these batches were already trained on
                try:
                    loss, state = train_step(
                        model, opt, x, y, state, config.max_grad_norm, dropout, rng,
                        parallel, norms=step_norms,
                    )  # fmt: skip
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"the loss became {loss}")
                except FloatingPointError as e:  # a NaN/inf loss or gradient norm
                    raise TrainingDiverged(
                        f"training diverged at epoch {epoch + 1}, step {i + 1} ({e}). "
                        f"{_advice(config, cell)}") from None  # fmt: skip
                costs, iters, step = costs + loss, iters + T, i + 1
                grad_norms.append(epoch + 1, step, step_norms.pop())
                wps = (iters - start_iters) * B / (time.perf_counter() - start)
                bar.update(i, n_batches, math.exp(costs / iters), wps)
                signum = interrupted[0]
                due = bool(checkpoint_every) and step < n_batches and (
                    time.monotonic() - last_save >= checkpoint_every)  # fmt: skip
                if dist is not None:  # all ranks save together: any rank's signal, rank 0's clock
                    signum, due = dist.agree(signum, due and dist.is_root)
                if signum:
                    bar.close()
                    name = signal.Signals(signum).name
                    seconds = epoch_seconds + time.perf_counter() - start
                    save(epoch, step, costs, iters, state, seconds, f"stopped by {name}")
                    write_summary()
                    log(f"Interrupted: saved {ckpt_path} at epoch {epoch + 1}, step {step}; "
                        "continue with --resume")  # fmt: skip
                    raise Interrupted(signum)
                if due:
                    save(epoch, step, costs, iters, state,
                         epoch_seconds + time.perf_counter() - start)  # fmt: skip
                    last_save = time.monotonic()
            bar.close()
            seconds = epoch_seconds + time.perf_counter() - start
            train_ppl = math.exp(costs / iters)
            log(f"Epoch: {epoch + 1} Train Perplexity: {train_ppl:.3f}")
            valid = evaluate(model, data.valid, B, T, parallel=parallel)
            log(f"Epoch: {epoch + 1} Valid Perplexity: {valid.perplexity:.3f}")
            _check_divergence(valid.perplexity, history, epoch, config, cell)
            history.append({
                "epoch": epoch + 1, "lr": opt.lr, "train_perplexity": train_ppl,
                "valid_perplexity": valid.perplexity, "seconds": seconds,
                "train_wps": iters * B / seconds,
            })  # fmt: skip
            log(f"Epoch: {epoch + 1} took {seconds:.0f} s "
                f"({history[-1]['train_wps']:,.0f} words/s)")  # fmt: skip
            epoch, step, costs, iters, state, epoch_seconds = epoch + 1, 0, 0.0, 0, None, 0.0
            stopping = interrupted[0]
            if dist is not None:
                (stopping,) = dist.agree(stopping)
            ended = f"stopped by {signal.Signals(stopping).name}" if stopping else "running"
            save(epoch, 0, 0.0, 0, None, 0.0, ended)
            if writer:
                run_folder.write_log(out / "log.csv", history)
            write_summary()
            if can_plot:
                plot_history(history, out / "perplexity.png", title=f"PTB {cell.upper()}",
                             log=log, resumes=_resume_points(segments, n_batches))  # fmt: skip
                plot_grad_norms(grad_norms, out / GRAD_NORM_PNG, n_batches,
                                config.max_grad_norm, title=f"PTB {cell.upper()}", log=log,
                                resumes=_resume_points(segments, n_batches))  # fmt: skip
            if stopping:
                log(f"Interrupted: saved {ckpt_path} after epoch {epoch}; continue with --resume")
                raise Interrupted(stopping)

    # The test pass (batch 1 x 1) carries the state word to word: a sequential chain that
    # splitting between ranks would change (docs/distributed.md). Rank 0 runs it whole.
    if dist is None:
        test = evaluate(model, data.test, 1, 1)
    else:
        test = dist.on_root(lambda: evaluate(model, data.test, 1, 1))
    log(f"Test Perplexity: {test.perplexity:.3f} ({test.words_per_second:,.0f} words/s)")
    save(epoch, 0, 0.0, 0, None, 0.0, "finished")
    summary = write_summary(test)
    if can_plot:
        plot_history(history, out / "perplexity.png", title=f"PTB {cell.upper()}", log=log,
                     resumes=_resume_points(segments, n_batches))  # fmt: skip
        plot_grad_norms(grad_norms, out / GRAD_NORM_PNG, n_batches, config.max_grad_norm,
                        title=f"PTB {cell.upper()}", log=log,
                        resumes=_resume_points(segments, n_batches))  # fmt: skip
    return summary


def _prepare_kernels(model: LanguageModel, parallel: DataParallel | None, data: ptb.PTBData,
                     config: Config, log: Callable[[str], None]) -> None:  # fmt: skip
    """Run every kernel the run will use once, on a two-step slice of the first batch, so that
    Numba's compilation (about 25 s on a first run; later runs load the cache) is announced and
    kept out of the measured speeds. Nothing persistent changes: the gradients are thrown away,
    the dropout masks come from a throwaway generator, the run's state is untouched."""
    log("Preparing the Numba kernels (compiled on a first run, about 25 s; cached after)...")
    start = time.perf_counter()
    x, y = next(ptb.ptb_iterator(data.train, config.batch_size, config.num_steps))
    x, y = x[:, :2], y[:, :2]
    state = model.init_state(config.batch_size)
    throwaway = np.random.default_rng(0)
    if parallel is not None:
        parallel.loss_and_grads(x, y, state, config.dropout(), throwaway)
        parallel.loss(x, y, state)
    else:
        model.loss_and_grads(x, y, state, config.dropout(), throwaway, sparse_embedding=True)
        model.loss(x, y, state)
    evaluate_sequence(model, np.asarray(data.train[:3]))
    log(f"Kernels ready in {time.perf_counter() - start:.1f} s")


# the cells as a message names them, with their article ("an RNN run, not a GRU")
_CELL_NAMES = {"lstm": "an LSTM", "gru": "a GRU", "rnn": "an RNN"}


# the learning rate each cell trains with at the tutorial's sizes, where it is not the LSTM's
# 1.0 (cli.CELL_LEARNING_RATES; where it is documented)
_CELL_LR = {"gru": (0.5, "docs/results.md"), "rnn": (0.25, "docs/rnn.md")}


def _advice(config: Config, cell: str) -> str:
    known, page = _CELL_LR.get(cell, (None, ""))
    lower = known if known and config.learning_rate >= 2 * known else config.learning_rate / 2
    return (f"The learning rate {config.learning_rate:g} is too high for this model: start "
            f"again with --learning_rate {lower:g} (and --overwrite, or another --out)"
            + (f" — the {cell.upper()} trains with {known:g}, {page}" if known else "")
            + ", or clip harder with a smaller --max_grad_norm.")  # fmt: skip


def _check_divergence(valid: float, history: list[dict], epoch: int, config: Config,
                      cell: str) -> None:  # fmt: skip
    """Stop a run whose validation perplexity is non-finite, worse than guessing every word
    uniformly (vocab_size), or more than twice its best so far: the tutorial's runs never do
    that, and a diverged run only wastes the hours that are left."""
    best = min((h["valid_perplexity"] for h in history), default=math.inf)
    if not math.isfinite(valid) or valid > config.vocab_size or valid > 2 * best:
        why = (f"worse than guessing uniformly ({config.vocab_size:,})"
               if not math.isfinite(valid) or valid > config.vocab_size
               else f"more than twice the best so far ({best:,.1f})")  # fmt: skip
        raise TrainingDiverged(
            f"training diverged: valid perplexity {valid:,.1f} after epoch {epoch + 1} is {why}. "
            f"{_advice(config, cell)}")  # fmt: skip


def _check_resume(saved: dict, saved_cell: str, cell: str, config: Config, fingerprint: dict,
                  n_batches: int, path: Path, log: Callable[[str], None]) -> None:  # fmt: skip
    """Refuse to resume a checkpoint that is not this run, naming what differs; check the
    saved position before trusting it (a crafted or damaged checkpoint must not skip data)."""
    if saved_cell != cell:
        raise RunFolderError(f"{path} holds {_CELL_NAMES.get(saved_cell, saved_cell)} run, "
                             f"not {_CELL_NAMES.get(cell, cell)}; use another --out or drop "
                             "--resume")  # fmt: skip
    # A checkpoint from before the model options existed was trained with them off.
    defaults = {k: getattr(Config(), k) for k in MODEL_OPTIONS}
    saved_config = {**defaults, **(saved.get("config") or {})}
    diffs = run_folder.config_differences(saved_config, config.to_dict(),
                                          ignore=run_folder.EXTENDABLE)  # fmt: skip
    if diffs:
        raise RunFolderError(f"{path} was written with a different config ({'; '.join(diffs)}); "
                             "resume with the same settings, or use another --out")  # fmt: skip
    keys = ("epoch", "step", "costs", "iters", "history", "rng")
    missing = [k for k in keys if k not in saved]
    if missing:
        raise RunFolderError(f"{path} has no resumption data ({', '.join(missing)} missing): "
                             "it is not a training checkpoint")  # fmt: skip
    epoch, step, iters = saved["epoch"], saved["step"], saved["iters"]
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (epoch, step, iters))
    if (not ints or not 0 <= step < n_batches or epoch < 0 or iters != step * config.num_steps
            or not isinstance(saved["history"], list) or len(saved["history"]) != epoch
            or not isinstance(saved["costs"], float | int)
            or not math.isfinite(saved["costs"])):  # fmt: skip
        raise RunFolderError(f"{path}: inconsistent training position (epoch {epoch!r}, step "
                             f"{step!r} of {n_batches} batches, iters {iters!r}); the "
                             "checkpoint is damaged or was edited")  # fmt: skip
    if epoch > config.max_max_epoch:
        raise RunFolderError(f"{path} has already trained {epoch} epochs; --max_max_epoch "
                             f"{config.max_max_epoch} would undo them")  # fmt: skip
    if "data" not in saved:
        log(f"warning: {path} records no data fingerprint (written before numlstm checked "
            "data on resume); cannot verify that the data is the same")  # fmt: skip
        return
    diffs = run_folder.fingerprint_differences(saved["data"], fingerprint)
    if diffs:
        raise RunFolderError(f"{path} was trained on different data ({'; '.join(diffs)}); "
                             "resume with the data the run started with (--data-dir, "
                             "--limit-tokens), or use another --out")  # fmt: skip


def _resume_points(segments: list[dict], n_batches: int) -> list[float]:
    """Where each segment after the first started, in epochs (2.5: halfway through epoch 3)."""
    return [s["start"]["epoch"] + s["start"]["step"] / n_batches for s in segments[1:]]


def _pyplot(log, what: str):
    """matplotlib.pyplot on the file-only Agg backend, or None (said once through ``log``)
    when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log(f"matplotlib is not installed; skipping {what}")
        return None
    return plt


def _write_png(plt, fig, path: Path) -> None:
    """The figure as a PNG, written atomically (run_folder.write_atomic), then closed."""
    fig.tight_layout()
    png = BytesIO()
    fig.savefig(png, dpi=100, format="png")
    plt.close(fig)
    run_folder.write_atomic(path, png.getvalue())


def plot_history(history: list[dict], path: Path, title: str = "", log=print,
                 resumes: list[float] = ()) -> None:  # fmt: skip
    """Train and valid perplexity per epoch to a PNG (skipped if matplotlib is missing), with a
    dotted line where the run was resumed."""
    if not history:
        return
    plt = _pyplot(log, "the perplexity plot")
    if plt is None:
        return
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_perplexity"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["valid_perplexity"] for h in history], "s-", label="valid")
    _finish_epoch_axes(ax, resumes, "perplexity", title)
    _write_png(plt, fig, path)


def _finish_epoch_axes(ax, resumes, ylabel: str, title: str, fontsize=None) -> None:
    """What both run-folder plots share: a dotted line at each resume point, x in epochs, a log
    y axis, the grid and the legend."""
    for k, x in enumerate(resumes):
        ax.axvline(x, color="gray", linestyle=":", linewidth=1,
                   label="resumed" if k == 0 else None)  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=fontsize)


def plot_grad_norms(grad_norms: GradNormLog, path: Path, steps_per_epoch: int,
                    max_grad_norm: float, title: str = "", log=print,
                    resumes: list[float] = ()) -> None:  # fmt: skip
    """The global gradient norm before clipping of every recorded step to a PNG (skipped if
    matplotlib is missing): thin per-step line, running median, the clipping threshold, a dotted
    line where the run was resumed. x is in epochs (2.5: halfway through epoch 3)."""
    if not len(grad_norms):
        return
    plt = _pyplot(log, "the gradient norm plot")
    if plt is None:
        return
    x = (np.array(grad_norms.epochs) - 1) + np.array(grad_norms.steps) / steps_per_epoch
    norms = np.array(grad_norms.norms)
    # A tenth of an epoch: smooth enough to read the trend, short enough to follow the lr decay.
    window = max(1, steps_per_epoch // 10) | 1
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(x, norms, color="tab:blue", linewidth=0.3, alpha=0.6, label="norm per step")
    ax.plot(x, grad_norm_log.running_median(norms, window), color="tab:orange", linewidth=1.5,
            label=f"running median ({window} steps)")  # fmt: skip
    ax.axhline(max_grad_norm, color="k", linestyle="--", linewidth=1,
               label=f"max_grad_norm = {max_grad_norm:g} (above: clipped)")  # fmt: skip
    _finish_epoch_axes(ax, resumes, "global gradient norm before clipping", title, fontsize=8)
    _write_png(plt, fig, path)
