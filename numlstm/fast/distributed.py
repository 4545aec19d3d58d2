"""Training one model in several processes, on one machine or many, with MPI (mpi4py).

Synchronous data parallelism with the tutorial's semantics: every rank reads the same global
batch (B, T), trains its block of rows (``row_blocks(B, ranks)``, the split ``DataParallel`` uses
for threads), and the ranks add up their gradients, so that a run's numbers do not depend on
the number of ranks beyond the order of floating-point sums:

    loss(batch)  = sum over ranks of  loss(rank's rows) * B_rank / B
    grads(batch) = sum over ranks of  grads(rank's rows) * B_rank / B       (one Allreduce)

* Dropout masks are drawn for the whole batch on every rank from the same generator, in the
  one-process order (``LanguageModel.draw_masks``); each rank takes its rows. The generator
  state therefore stays the same on every rank, and a run resumes on any number of ranks.
* Per step: one ``Allgather`` of (loss share, embedding rows touched) per rank, one in-place
  ``Allreduce`` of all dense gradients packed into one flat buffer, and for the embedding's
  row-sparse gradient (``IndexedRows``) either a place in that buffer (dense, V x H) or one
  ``Allgatherv`` of its rows and values, whichever moves fewer bytes (``embedding_mode``; the
  rule and the measurements behind it are in docs/distributed.md). Only the uppercase,
  buffer-based mpi4py calls are used for arrays: nothing per step is pickled.
* Clipping by the global norm and the SGD update then run on every rank on the same reduced
  gradient, so the parameters stay identical; ``check_every`` steps a float64 checksum of a
  strided sample of every parameter is compared across ranks (``ParametersDiverged``).
* The carried state is per rank (its rows). ``loss_and_grads``/``loss`` accept the whole
  batch's state (B rows, e.g. ``model.init_state(B)`` or a checkpoint's) and take their rows
  of it, or the rank's rows as they returned them.
* Inside a rank the rows can be split again between threads (``numlstm.DataParallel``), so
  one rank per machine with its cores in threads works.

Nothing here imports mpi4py until ``start`` is called: without a launcher numlstm runs exactly
as before. MPI is used when ``requested``: ``--mpi`` / ``train(mpi=True)``, or, by default,
when the environment shows an MPI launcher with a world size above 1 (``mpirun -n 4 python
-m numlstm train`` must not start four independent runs that fight over one run folder).
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import numba
import numpy as np

from .. import _checks
from ..dropout import Dropout, slice_rows
from ..model import LanguageModel, State
from .parallel import DataParallel
from .sparse import IndexedRows
from .team import blas_threads, blas_threads_controllable, usable_cores

# World-size variables set by the launchers: Open MPI (and PRRTE), MPICH/Hydra, Intel MPI and
# MVAPICH (PMI_SIZE), MVAPICH2's own launcher.
SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
EMBEDDING_MODES = ("auto", "dense", "gather")
DEFAULT_CHECK_EVERY = 100  # steps between parameter checksums (one tiny Allgather each)
_SAMPLE = 4096  # elements per parameter in the checksum


class ParametersDiverged(RuntimeError):
    """The ranks' parameters differ: the run cannot continue synchronously."""


def _env_int(names: tuple[str, ...], environ: Mapping[str, str]) -> int | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def launcher_world_size(environ: Mapping[str, str] | None = None) -> int:
    """The world size an MPI launcher announced in the environment (1 without a launcher)."""
    return _env_int(SIZE_VARS, os.environ if environ is None else environ) or 1


def launcher_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's rank as the launcher announced it (0 without a launcher); lets the
    command line print its preamble once without importing mpi4py."""
    return _env_int(RANK_VARS, os.environ if environ is None else environ) or 0


def requested(mpi: bool | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether to train with MPI: ``mpi`` if given, else whether a launcher started this
    process with a world size above 1."""
    if mpi is not None:
        if not isinstance(mpi, bool):
            raise TypeError(f"mpi must be True, False or None, got {mpi!r}")
        return mpi
    return launcher_world_size(environ) > 1


class MPIUnavailable(ImportError):
    """MPI was asked for (--mpi, or a launcher's environment) but mpi4py cannot be imported."""


def start(comm: Any = None) -> Distributed:
    """Import mpi4py (initialising MPI) and wrap ``comm`` (default COMM_WORLD)."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise MPIUnavailable(
            "training with MPI needs mpi4py and an MPI library: pip install 'numlstm[mpi]' "
            f"(this process was asked to use MPI; world size {launcher_world_size()} in the "
            "environment)") from e  # fmt: skip
    return Distributed(MPI.COMM_WORLD if comm is None else comm, MPI)


class Distributed:
    """An MPI communicator and the collective operations training needs."""

    def __init__(self, comm: Any, mpi_module: Any) -> None:
        self.comm, self.MPI = comm, mpi_module
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.is_root = self.rank == 0
        # Ranks sharing this machine's memory (and cores): the default thread count divides
        # the cores between them.
        local = comm.Split_type(mpi_module.COMM_TYPE_SHARED)
        self.local_size = local.Get_size()
        local.Free()

    def rows(self, batch_size: int) -> tuple[int, int]:
        """(lo, hi): this rank's rows of a batch, split as ``parallel.row_blocks``."""
        if batch_size < self.size:
            raise ValueError(f"batch_size {batch_size} is smaller than the number of MPI ranks "
                             f"({self.size}); every rank needs at least one row")  # fmt: skip
        edges = [batch_size * k // self.size for k in range(self.size + 1)]
        return edges[self.rank], edges[self.rank + 1]

    def threads_per_rank(self, threads: int) -> int:
        """A default thread count for one process cut to this rank's share of the machine."""
        return max(1, threads // self.local_size)

    # -- small collectives ---------------------------------------------------------------
    def agree(self, *values: int) -> tuple[int, ...]:
        """The maximum of each value over the ranks (e.g. a signal flag that one rank saw,
        a checkpoint that rank 0's clock says is due)."""
        buf = np.array(values, np.int64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.MAX)
        return tuple(int(v) for v in buf)

    def sum_in_rank_order(self, value: float) -> float:
        """Sum of one float64 per rank, added in rank order so that all ranks get the same
        bits."""
        out = np.empty(self.size, np.float64)
        self.comm.Allgather(np.array([value], np.float64), out)
        return float(sum(out.tolist()))

    def bcast_arrays(self, arrays: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        """Rank 0's named arrays on every rank: names, shapes and dtypes pickled (small), the
        data by ``Bcast``."""
        spec = self.comm.bcast(
            [(k, a.shape, a.dtype.str) for k, a in arrays.items()] if self.is_root else None
        )
        out = {}
        for name, shape, dtype in spec:
            a = np.ascontiguousarray(arrays[name]) if self.is_root else np.empty(shape, dtype)
            self.comm.Bcast(a)
            out[name] = a
        return out

    def share_model(self, model: LanguageModel | None) -> LanguageModel:
        """Rank 0's model (architecture and parameters) on every rank."""
        config = self.comm.bcast(model.config() if self.is_root else None)
        params = self.bcast_arrays(model.params if self.is_root else None)
        if self.is_root:
            return model
        m = LanguageModel(**config)
        for name, a in params.items():
            m.params[name][...] = a
        return m

    def on_root(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0, its (picklable, small) result on every rank. If it raises, every
        rank raises the same kind of error with the same message (marked ``all_ranks``, so
        that ``guard`` lets it end the run normally)."""
        result, error = None, None
        if self.is_root:
            try:
                result = fn()
            except Exception as e:
                error = e
        kind, message = self.comm.bcast(
            (type(error), str(error)) if error is not None else (None, None)
        )
        if kind is None:
            return self.comm.bcast(result if self.is_root else None)
        if error is None:
            try:
                error = kind(message)
            except Exception:
                error = RuntimeError(message)
        error.all_ranks = True
        raise error

    def gather_state(self, state: State, batch_size: int) -> State | None:
        """The whole batch's carried state on rank 0 (None elsewhere) from every rank's rows,
        for a checkpoint that any number of ranks can resume from."""
        counts = [hi - lo for lo, hi in (_edges(batch_size, self.size, r)
                                         for r in range(self.size))]  # fmt: skip
        out: State = []
        for layer in state:
            parts = []
            for a in layer:
                a = np.ascontiguousarray(a)
                H = a.shape[1]
                full = np.empty((batch_size, H), a.dtype) if self.is_root else None
                sizes = [c * H for c in counts]
                displs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
                self.comm.Gatherv(a, [full, (sizes, displs)] if self.is_root else None, root=0)
                parts.append(full)
            out.append(tuple(parts))
        return out if self.is_root else None

    def check_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Raise ``ParametersDiverged`` (on every rank) unless every rank holds the same
        parameters, compared by a float64 sum of a strided sample of each array."""
        sums = np.array([_checksum(a) for a in params.values()], np.float64)
        table = np.empty((self.size, sums.size), np.float64)
        self.comm.Allgather(sums, table)
        bad = [name for j, name in enumerate(params) if not np.all(table[:, j] == table[0, j])]
        if bad:
            ranks = [r for r in range(self.size) if not np.array_equal(table[r], table[0])]
            raise ParametersDiverged(
                f"the parameters differ between MPI ranks ({', '.join(bad)}; ranks "
                f"{ranks} differ from rank 0): the ranks no longer train the same model. "
                "Resume from the last checkpoint; if it happens again, report it with the "
                "MPI library and network used")  # fmt: skip

    def guard(self, *agreed: type[BaseException]) -> _Guard:
        """A context manager that ends the whole MPI job (``MPI_Abort``) when an exception
        leaves it on this rank only: the other ranks would otherwise wait forever in their
        next collective. Errors that every rank raises at the same point (the ``agreed``
        kinds, ``ParametersDiverged``, or errors marked ``all_ranks`` by ``on_root``) end the
        run normally on every rank."""
        return _Guard(self, (ParametersDiverged, *agreed))


class _Guard:
    def __init__(self, dist: Distributed, agreed: tuple) -> None:
        self.dist, self.agreed = dist, agreed

    def __enter__(self) -> Distributed:
        return self.dist

    def __exit__(self, kind, error, tb) -> bool:
        if error is None or getattr(error, "all_ranks", False) or isinstance(error, self.agreed):
            return False
        print(f"numlstm (MPI rank {self.dist.rank} of {self.dist.size}): "
              f"{kind.__name__}: {error}; aborting all ranks", file=sys.stderr)  # fmt: skip
        traceback.print_exception(kind, error, tb, file=sys.stderr)
        sys.stderr.flush()
        self.dist.comm.Abort(1)
        return False  # not reached


def _edges(B: int, n: int, k: int) -> tuple[int, int]:
    return B * k // n, B * (k + 1) // n


def _checksum(a: np.ndarray) -> float:
    flat = a.reshape(-1)
    stride = max(1, flat.size // _SAMPLE)
    return float(np.sum(flat[::stride], dtype=np.float64))


def _take_rows(state: State, lo: int, hi: int, batch_size: int) -> State:
    """This rank's rows of a whole batch's state; a rank's own state passes through."""
    if state and state[0][0].shape[0] == batch_size and hi - lo != batch_size:
        return [tuple(np.ascontiguousarray(a[lo:hi]) for a in layer) for layer in state]
    return state


class DistributedStep:
    """``loss_and_grads`` and ``loss`` of the whole batch, each rank computing its rows.

    Parameters
    ----------
    model : the LanguageModel (identical on every rank: see ``Distributed.share_model``).
    dist : the ``Distributed`` communicator.
    threads : threads inside this rank (``numlstm.DataParallel`` on the rank's rows).
    embedding_mode : how the embedding's row-sparse gradient is combined: "dense" (its V x H
        array in the Allreduce), "gather" (Allgatherv of the rows) or "auto" (per step, the
        one that moves fewer bytes; docs/distributed.md).
    check_every : steps between parameter checksums (0: never).

    Used where train.py uses a ``DataParallel``: same signatures, same results up to rounding.
    """

    def __init__(self, model: LanguageModel, dist: Distributed, threads: int = 1, *,
                 embedding_mode: str = "auto",
                 check_every: int = DEFAULT_CHECK_EVERY) -> None:  # fmt: skip
        if embedding_mode not in EMBEDDING_MODES:
            raise ValueError(f"embedding_mode must be one of {EMBEDDING_MODES}, "
                             f"got {embedding_mode!r}")  # fmt: skip
        if int(check_every) != check_every or check_every < 0:
            raise ValueError(f"check_every must be an integer >= 0, got {check_every!r}")
        if int(threads) != threads or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.model, self.dist, self.threads = model, dist, int(threads)
        self.embedding_mode, self.check_every = embedding_mode, int(check_every)
        self.parallel = DataParallel(model, self.threads) if self.threads > 1 else None
        # Ranks sharing a machine share its cores: a rank's BLAS and Numba threads get its
        # share. Left at one per core, 2 ranks on 2 busy cores ran a tiny model's epoch in
        # 12.5 s instead of 0.85 s (oversubscribed threads spinning against each other).
        self._limits = contextlib.ExitStack()
        share = max(1, usable_cores() // dist.local_size)
        if dist.local_size > 1:
            if self.parallel is None and blas_threads_controllable():
                self._limits.enter_context(blas_threads(share))
            previous = numba.get_num_threads()
            numba.set_num_threads(min(share, previous))
            self._limits.callback(numba.set_num_threads, previous)
        self.steps = 0
        self.last_mode = ""  # "dense" or "gather": what the last step did (for benchmarks)
        names = [k for k in model.params if k != "embedding"]
        sizes = [model.params[k].size for k in names]
        self._layout = list(zip(names, np.cumsum([0, *sizes[:-1]]).tolist(), sizes, strict=True))
        self._n_dense = int(sum(sizes))
        V, H = model.params["embedding"].shape
        # The dense gradients, then room for the dense embedding gradient when it goes dense.
        self._flat = np.empty(self._n_dense + V * H, model.dtype)

    def close(self) -> None:
        """Stop the threads and give BLAS and Numba their previous numbers of threads."""
        if self.parallel is not None:
            self.parallel.close()
        self._limits.close()

    def __enter__(self) -> DistributedStep:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _local(self) -> Any:
        return self.parallel if self.parallel is not None else self.model

    def loss_and_grads(
        self, x: np.ndarray, y: np.ndarray, state: State, keep_prob: float | Dropout = 1.0,
        rng: np.random.Generator | None = None, *, lengths: np.ndarray | None = None,
    ) -> tuple[float, dict, State]:  # fmt: skip
        """As ``DataParallel.loss_and_grads`` for the whole (B, T) batch ``x``, ``y`` (the same
        on every rank); ``state`` is the whole batch's or this rank's rows. Returns the batch's
        loss, the summed gradients (the same bits on every rank; the arrays are this object's
        buffers, overwritten by the next call) and this rank's rows of the final state.
        ``lengths`` (B,): the whole batch's, each rank takes its rows (S3m sums over rows)."""
        if self.check_every and self.steps % self.check_every == 0:
            self.dist.check_params(self.model.params)  # the previous updates kept them equal
        self.steps += 1
        x, y = np.asarray(x), np.asarray(y)
        B, T = x.shape
        lo, hi = self.dist.rows(B)
        # The whole batch's masks from the shared generator, in the one-process order.
        masks = self.model.draw_masks(T, B, keep_prob, rng)
        mine = slice_rows(masks, lo, hi, B)  # a batch-shared (1, H) mask whole (D5)
        state = _take_rows(state, lo, hi, B)
        n = _rank_lengths(lengths, lo, hi, B, T)
        if self.parallel is not None:
            loss, grads, state = self.parallel.loss_and_grads(
                x[lo:hi], y[lo:hi], state, keep_prob, None, masks=mine, lengths=n)  # fmt: skip
        else:
            loss, grads, state = self.model.loss_and_grads(
                x[lo:hi], y[lo:hi], state, keep_prob, None, masks=mine, sparse_embedding=True,
                lengths=n)  # fmt: skip
        share = (hi - lo) / B  # the model divided by the rank's rows; the batch divides by B
        emb = grads["embedding"]
        V, H = emb.shape
        # (loss share, rows touched) of every rank: the loss, and the sizes the gather needs.
        info = np.empty((self.dist.size, 2), np.float64)
        self.dist.comm.Allgather(np.array([loss * share, len(emb.rows)], np.float64), info)
        loss = float(sum(info[:, 0].tolist()))  # rank order: the same bits on every rank
        counts = info[:, 1].astype(np.int64)
        mode = self.embedding_mode
        if mode == "auto":
            mode = choose_embedding_mode(int(counts.sum()), V, H, self.model.dtype.itemsize)
        self.last_mode = mode
        flat = self._flat
        for name, off, n in self._layout:
            np.multiply(grads[name].reshape(-1), share, out=flat[off : off + n])
        n = self._n_dense
        if mode == "dense":
            dense = flat[n:].reshape(V, H)
            dense.fill(0)
            dense[emb.rows] = emb.values * share
            n += V * H
        self.dist.comm.Allreduce(self.dist.MPI.IN_PLACE, flat[:n])
        out = {name: flat[off : off + k].reshape(self.model.params[name].shape)
               for name, off, k in self._layout}  # fmt: skip
        if mode == "dense":
            # The norm and the update of the dense form are the same as of its touched rows;
            # the gradient stays row-sparse so SGD touches only those rows.
            dense = flat[self._n_dense :].reshape(V, H)
            rows = np.flatnonzero(np.any(dense != 0, axis=1))
            out["embedding"] = IndexedRows(rows, dense[rows], (V, H))
        else:
            out["embedding"] = self._gather_rows(emb, share, counts)
        return loss, {k: out[k] for k in self.model.params}, state

    def _gather_rows(self, emb, share: float, counts: np.ndarray):
        """The embedding's rows of every rank (Allgatherv of rows + values as bytes), repeated
        rows summed in rank order: the same ``IndexedRows`` on every rank."""
        V, H = emb.shape
        dt = self.model.dtype
        row_bytes = 8 + H * dt.itemsize
        U = len(emb.rows)
        send = np.empty(U * row_bytes, np.uint8)
        send[: U * 8] = np.ascontiguousarray(emb.rows, np.int64).view(np.uint8)
        vals = send[U * 8 :].view(dt).reshape(U, H)
        np.multiply(emb.values, share, out=vals)
        sizes = (counts * row_bytes).tolist()
        displs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64).tolist()
        recv = np.empty(int(sum(sizes)), np.uint8)
        self.dist.comm.Allgatherv(send, [recv, sizes, displs, self.dist.MPI.BYTE])
        rows, values = [], []
        for c, d in zip(counts.tolist(), displs, strict=True):
            rows.append(recv[d : d + c * 8].view(np.int64))
            values.append(recv[d + c * 8 : d + c * row_bytes].view(dt).reshape(c, H))
        rows_all, values_all = np.concatenate(rows), np.concatenate(values)
        order = np.argsort(rows_all, kind="stable")  # stable: duplicates add in rank order
        r = rows_all[order]
        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        summed = np.add.reduceat(values_all[order], starts, axis=0)
        return IndexedRows(r[starts], summed, (V, H))

    def loss(
        self, x: np.ndarray, y: np.ndarray, state: State, *, lengths: np.ndarray | None = None
    ) -> tuple[float, State]:
        """As ``LanguageModel.loss`` of the whole batch (no dropout); the state and ``lengths``
        as in ``loss_and_grads``. One float64 Allgather per batch."""
        x, y = np.asarray(x), np.asarray(y)
        B, T = x.shape
        lo, hi = self.dist.rows(B)
        state = _take_rows(state, lo, hi, B)
        n = _rank_lengths(lengths, lo, hi, B, T)
        loss, state = self._local().loss(x[lo:hi], y[lo:hi], state, lengths=n)
        return self.dist.sum_in_rank_order(loss * (hi - lo) / B), state


def _rank_lengths(lengths: object, lo: int, hi: int, B: int, T: int) -> np.ndarray | None:
    """This rank's rows of the whole batch's lengths, checked whole first (a (B,) array that
    is too long must not pass because its slice has the right size)."""
    return None if lengths is None else _checks.lengths("lengths", lengths, T, B)[lo:hi]


def choose_embedding_mode(total_rows: int, vocab_size: int, hidden_size: int,
                          itemsize: int) -> str:  # fmt: skip
    """``"gather"`` when an Allgatherv of every rank's touched rows (8-byte index + H values each)
    moves fewer bytes than the Allreduce of the dense (V, H) gradient, else ``"dense"``.

    A ring Allreduce of S bytes moves 2 (N-1)/N S per rank, a ring Allgather of a total of
    G bytes (N-1)/N G: gather wins while G < 2 S (docs/distributed.md has the measurements).
    """
    gathered = total_rows * (8 + hidden_size * itemsize)
    return "gather" if gathered < 2 * vocab_size * hidden_size * itemsize else "dense"
