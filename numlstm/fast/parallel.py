"""One training step on several cores: the batch's rows split into blocks, one thread each.

The rows of a batch are independent sequences until the loss averages them, so

    loss(batch)  = sum over blocks of  loss(block) * B_block / B
    grads(batch) = sum over blocks of  grads(block) * B_block / B

Each block runs ``LanguageModel.rows_loss_and_grads`` (the model's public hook for a part of a
batch) with the loss divided by the whole batch's B, which makes the second line a plain sum.
The blocks run at the same time in a ``ThreadTeam`` (team.py), each on a replica of the model
that shares the parameters and has its own scratch buffers; every GEMM, kernel and time loop
inside a block is single-threaded. The blocks meet twice per step. Inside the softmax's
backward pass they wait for each other at a barrier, then each computes its share of the
columns of [dW; db] over every block's rows (``SharedSoftmaxGrad`` below), so that the largest
gradient needs no summing. At the end the calling thread adds the blocks' LSTM/GRU gradients
into the first block's arrays and builds the embedding's row-sparse gradient from all blocks'
rows at once.

Dropout masks are drawn for the whole batch before the split, in the order the one-thread
forward pass draws them, so a seeded run takes the same masks with any number of threads; each
block takes its rows of them (``dropout.slice_rows``: a per-sequence mask its rows, a mask
shared by the whole batch whole).
The results equal the one-thread step's up to float rounding (tests/test_parallel.py).

Why: on 2 cores a training step ran about 10 % faster this way for the PTB small model and
about 20 % for Medium and Large than with BLAS splitting each product between the cores
(docs/performance.md, "Third round").
"""

from __future__ import annotations

import contextlib
import functools
import threading

import numpy as np

from ..dropout import Dropout, slice_rows
from ..layers import SoftmaxGrad
from ..model import LanguageModel, RowsResult, State
from .sparse import IndexedRows
from .team import ThreadTeam, blas_threads, blas_threads_controllable, usable_cores
from .timeloop import MIN_ROWS
from .workspace import Workspace

# Gradients that the blocks compute together (SharedSoftmaxGrad): not summed.
SHARED = ("softmax_w", "softmax_b")


class SharedSoftmaxGrad(SoftmaxGrad):
    """[dW; db] of a batch whose rows are split into blocks run by threads.

    Each block writes its rows of Ẽ and of diag(q) [h 1] into the shared buffers, waits at the
    barrier for the other blocks, then computes its own columns of [dW; db] over every row
    (dS1). The blocks' results need no summing afterwards, and no block holds an (H + 1, V)
    array of its own. Plugged into the softmax layer through ``rows_loss_and_grads``.
    """

    def __init__(
        self, z: np.ndarray, hq: np.ndarray, dWb: np.ndarray, rows: slice, cols: slice,
        barrier: threading.Barrier,
    ) -> None:  # fmt: skip
        self.z = z  # (N_all, V) every block's logits, turned into Ẽ in place
        self.hq = hq  # (N_all, H + 1) every block's diag(q) [h 1]
        self.dWb = dWb  # (H + 1, V) the batch's [dW; db]
        self.rows = rows  # this block's rows of z and hq
        self.cols = cols  # this block's columns of dWb
        self.barrier = barrier

    def buffers(self, ws, tag, N, H, V, dt):
        """This block's rows of the shared z and hq."""
        return self.z[self.rows], self.hq[self.rows]

    def weight_grad(self, hq, z, ws, tag):
        """(dS1) over the rows of every block, for this block's columns."""
        self.barrier.wait()  # every block's Ẽ and hq are in place
        c = self.cols
        np.matmul(self.hq.T, self.z[:, c], out=self.dWb[:, c])
        return self.dWb


def row_blocks(B: int, n: int) -> list[tuple[int, int]]:
    """n contiguous (lo, hi) row ranges covering range(B), sizes differing by at most one."""
    edges = [B * k // n for k in range(n + 1)]
    return [(edges[k], edges[k + 1]) for k in range(n)]


def default_threads(batch_size: int) -> int:
    """Threads for a batch: the usable cores, at most one per MIN_ROWS rows (so that every
    block keeps the time loops of timeloop.py), and 1 where numlstm cannot set the number of
    NumPy's BLAS threads."""
    if not blas_threads_controllable():
        return 1
    return max(1, min(usable_cores(), batch_size // MIN_ROWS))


class DataParallel:
    """``loss_and_grads`` and ``loss`` of ``model`` computed on row blocks in ``threads`` threads.

    Parameters
    ----------
    model : the LanguageModel; its parameters are shared, never copied.
    threads : number of row blocks and worker threads (>= 1).

    Notes
    -----
    While it is open, NumPy's BLAS runs on one thread in the whole process (``blas_threads``
    in team.py); use it as a context manager, or call ``close()``, to stop the threads and
    restore BLAS's threads.
    """

    def __init__(self, model: LanguageModel, threads: int) -> None:
        if int(threads) != threads or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads}")
        self.model = model
        self.threads = int(threads)
        self.replicas = [model] + [model.replica() for _ in range(self.threads - 1)]
        # One BLAS thread per block while this object is open (see team.py).
        self._blas = blas_threads(1) if self.threads > 1 else contextlib.nullcontext()
        self._blas.__enter__()
        self.team = ThreadTeam(self.threads)
        self._barrier = threading.Barrier(self.threads)
        self._ws = Workspace()  # the buffers of SharedSoftmaxGrad
        self._open = True

    def close(self) -> None:
        """Stop the threads and give NumPy's BLAS its previous number of threads back."""
        if self._open:
            self._open = False
            self.team.close()
            self._blas.__exit__(None, None, None)

    def __enter__(self) -> DataParallel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _blocks(self, B: int) -> list[tuple[int, int]]:
        if B < self.threads:
            raise ValueError(f"batch size {B} is smaller than threads={self.threads}")
        return row_blocks(B, self.threads)

    def _block_passes(
        self, x, y, state, keep_prob, rng, masks=None, lengths=None
    ) -> list[RowsResult]:
        """Checks, then every block's forward and backward pass in the threads."""
        m = self.model
        x, y = m.check_batch(x, y, state, keep_prob, rng, masks, lengths)
        lengths = _as_lengths(lengths)
        B, T = x.shape
        if masks is None:  # the one-thread pass's masks, same order
            masks = m.draw_masks(T, B, keep_prob, rng)
        H, V, dt = m.output_size, m.vocab_size, m.dtype  # H: the softmax's input width (P)
        z = self._ws.empty("z", (T * B, V), dt)  # the softmax buffers all blocks share
        hq = self._ws.empty("hq", (T * B, H + 1), dt)
        dWb = self._ws.empty("dWb", (H + 1, V), dt)
        if self._barrier.broken:  # a block failed in the previous call
            self._barrier.reset()
        cols = row_blocks(V, self.threads)
        jobs = []
        for k, (rep, (lo, hi)) in enumerate(zip(self.replicas, self._blocks(B), strict=True)):
            block_masks = slice_rows(masks, lo, hi, B)  # a batch-shared (1, H) mask whole (D5)
            block_state = [tuple(a[lo:hi] for a in s) for s in state]
            block_lengths = None if lengths is None else lengths[lo:hi]
            shared = SharedSoftmaxGrad(z, hq, dWb, slice(T * lo, T * hi),
                                       slice(*cols[k]), self._barrier)  # fmt: skip
            jobs.append(functools.partial(
                self._guard, rep.rows_loss_and_grads, x[lo:hi], y[lo:hi], block_state, B,
                keep_prob, masks=block_masks, softmax_grad=shared,
                lengths=block_lengths))  # fmt: skip
        return self.team.run(jobs)

    def _guard(self, fn, *args, **kwargs):
        """fn(*args, **kwargs); if it fails, break the barrier so that the other blocks stop
        waiting."""
        try:
            return fn(*args, **kwargs)
        except BaseException:
            self._barrier.abort()
            raise

    def _embedding_grad(self, results: list[RowsResult]) -> IndexedRows:
        """(dE1) the embedding's row-sparse gradient from every block's rows at once; tied
        (dT1), plus the softmax's dW, which the shared softmax made the whole batch's in every
        block's result (so block 0's alone, not a sum over blocks)."""
        ids = np.concatenate([r.ids for r in results])
        d = np.concatenate([r.d_embedded for r in results])
        dW = results[0].grads["softmax_w"] if self.model.tie_embeddings else None
        return self.model.embedding_grad(ids, d, sparse=True, softmax_w_grad=dW)

    def loss_and_grads(
        self,
        x: np.ndarray,
        y: np.ndarray,
        state: State,
        keep_prob: float | Dropout = 1.0,
        rng: np.random.Generator | None = None,
        *,
        masks: list | dict | None = None,
        lengths: np.ndarray | None = None,
    ) -> tuple[float, dict, State]:
        """As ``LanguageModel.loss_and_grads(x, y, state, keep_prob, rng, masks=masks,
        sparse_embedding=True, lengths=lengths)``. The gradient arrays belong to the model, as
        there. ``masks`` (the whole block of rows' masks, e.g. an MPI rank's rows of its batch's
        masks: distributed.py) replaces drawing them from ``rng``. ``lengths`` (B,) is split
        by rows like x: the masked loss S3m is a sum over rows, so the blocks still add up."""
        results = self._block_passes(x, y, state, keep_prob, rng, masks, lengths)
        loss, grads = results[0].loss, results[0].grads
        for r in results[1:]:
            loss += r.loss
            for name, g in r.grads.items():
                if name not in SHARED:  # the softmax's are the whole batch's already
                    grads[name] += g  # into block 0's buffers
        grads["embedding"] = self._embedding_grad(results)
        new_state = _join_states([r.state for r in results])
        return loss, {k: grads[k] for k in self.model.params}, new_state

    def loss(
        self, x: np.ndarray, y: np.ndarray, state: State, *, lengths: np.ndarray | None = None
    ) -> tuple[float, State]:
        """As ``LanguageModel.loss(x, y, state, lengths=lengths)`` (no dropout), on row blocks
        in the threads."""
        x, y = self.model.check_batch(x, y, state, lengths=lengths)
        lengths = _as_lengths(lengths)
        B = x.shape[0]
        blocks = self._blocks(B)
        jobs = [
            functools.partial(
                rep.loss,
                x[lo:hi],
                y[lo:hi],
                [tuple(a[lo:hi] for a in s) for s in state],
                lengths=None if lengths is None else lengths[lo:hi],
            )
            for rep, (lo, hi) in zip(self.replicas, blocks, strict=True)
        ]
        results = self.team.run(jobs)  # (loss divided by the block's rows, state) per block
        loss = sum(r[0] * (hi - lo) for r, (lo, hi) in zip(results, blocks, strict=True)) / B
        return loss, _join_states([r[1] for r in results])


def _as_lengths(lengths: object) -> np.ndarray | None:
    """Lengths already validated by ``check_batch`` (a list allowed), as an array to slice."""
    return None if lengths is None else np.asarray(lengths)


def _join_states(states: list[State]) -> State:
    """The blocks' states (per layer, tuples of (B_block, H) arrays) stacked back into rows."""
    return [tuple(np.concatenate(parts) for parts in zip(*layers, strict=True))
            for layers in zip(*states, strict=True)]  # fmt: skip
