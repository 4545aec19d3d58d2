"""A small fork-join team of worker threads, and control of NumPy's BLAS threads.

``parallel.py`` splits a training batch into row blocks and hands one block to each worker of
a ``ThreadTeam``. Inside a worker every library must run single-threaded, so that k workers use
k cores and nothing else competes for them:

- OpenBLAS: ``blas_threads(1)`` sets NumPy's OpenBLAS to one thread for the duration of a
  ``with`` block (the library is found through ``/proc/self/maps``; its thread count is a
  setting of the whole process).
- Numba: ``numba.set_num_threads(1)`` is per thread, and each worker sets it. numlstm's
  training kernels are serial anyway; this covers any ``parallel=True`` function.

Why workers rather than BLAS's own threads: the batch's rows are independent until the
gradients are summed, so two threads each doing half of the step meet once per step, while
BLAS splitting each small product between the cores meets hundreds of times per step
(docs/performance.md, "Third round").

Where NumPy's BLAS is not an OpenBLAS numlstm can find (another BLAS, another platform),
``blas_threads_controllable()`` is False and training runs each step in one thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from threading import BrokenBarrierError
from typing import Any

import numba


@functools.cache
def _openblas_thread_api() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """(get, set) of the number of threads of the OpenBLAS that NumPy uses, or None."""
    import numpy  # noqa: F401  (loads the BLAS library, so that it is in the maps)

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:  # not Linux
        return None
    for path in sorted(p for p in paths if p.startswith("/")):
        try:
            lib = ctypes.CDLL(path)  # already loaded: this only returns a handle to it
        except OSError:
            continue
        # NumPy's wheels rename the symbols (scipy_..._64_); a system OpenBLAS does not.
        for prefix, suffix in (("scipy_", "64_"), ("", ""), ("", "64_"), ("scipy_", "")):
            get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
            set_ = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                get.restype = ctypes.c_int
                set_.argtypes = [ctypes.c_int]
                set_.restype = None
                return get, set_
    return None


def blas_thread_count() -> int | None:
    """The number of threads NumPy's OpenBLAS uses now, or None where it cannot be read."""
    api = _openblas_thread_api()
    return None if api is None else api[0]()


def blas_threads_controllable() -> bool:
    """True when numlstm can set the number of threads of NumPy's BLAS (OpenBLAS)."""
    return _openblas_thread_api() is not None


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Run the block with NumPy's OpenBLAS using n threads, then restore the previous number.

    The setting is the whole process's: OpenBLAS 0.3.31's ``openblas_set_num_threads_local``
    measured here changed it for every thread too. Raises RuntimeError where the BLAS is not
    an OpenBLAS numlstm can find.
    """
    api = _openblas_thread_api()
    if api is None:
        raise RuntimeError("cannot set the number of BLAS threads: NumPy's BLAS is not an "
                           "OpenBLAS found in /proc/self/maps")  # fmt: skip
    get, set_ = api
    previous = get()
    set_(int(n))
    try:
        yield
    finally:
        set_(previous)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ThreadTeam:
    """``size`` worker threads; ``run(jobs)`` runs jobs[k] on worker k and returns their results.

    The calling thread waits while the workers run. An exception in a job is re-raised in the
    caller after every job of the call has finished. Use as a context manager, or call
    ``close()``, to stop the workers.
    """

    def __init__(self, size: int) -> None:
        if int(size) != size or size < 1:
            raise ValueError(f"size must be a positive integer, got {size}")
        self.size = int(size)
        self._inboxes: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(size)]
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, args=(k,), name=f"numlstm-{k}", daemon=True)
            for k in range(size)
        ]
        for t in self._threads:
            t.start()

    def _serve(self, k: int) -> None:
        numba.set_num_threads(1)  # per thread: a parallel=True kernel here stays on one core
        inbox = self._inboxes[k]
        while True:
            job = inbox.get()
            if job is None:
                return
            try:
                self._results.put((k, job(), None))
            except BaseException as e:  # handed to the caller of run()
                self._results.put((k, None, e))

    def run(self, jobs: Sequence[Callable[[], Any]]) -> list[Any]:
        """Run jobs[k]() on worker k (at most ``size`` jobs); results in the order of jobs."""
        if len(jobs) > self.size:
            raise ValueError(f"{len(jobs)} jobs for a team of {self.size} threads")
        if not self._threads:
            raise RuntimeError("the team is closed")
        for k, job in enumerate(jobs):
            self._inboxes[k].put(job)
        results: list[Any] = [None] * len(jobs)
        error: BaseException | None = None
        pending = len(jobs)
        try:
            while pending:
                k, value, exc = self._results.get()
                pending -= 1
                results[k] = value
                # A job that failed only because another one did (a broken barrier) is not
                # the error to report.
                if exc is not None and (error is None or isinstance(error, BrokenBarrierError)):
                    error = exc
        finally:
            while pending:  # interrupted while waiting: let the workers finish this call
                self._results.get()
                pending -= 1
        if error is not None:
            raise error
        return results

    def close(self) -> None:
        for inbox in self._inboxes:
            inbox.put(None)
        for t in self._threads:
            t.join()
        self._threads = []

    def __enter__(self) -> ThreadTeam:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
