"""Speed machinery: what makes numlstm fast, kept apart from the equations.

Nothing here defines a new piece of the model. The layers in ``numlstm/`` (``lstm.py``,
``gru.py``, ``layers.py``, ``model.py``) compute every equation of docs/ themselves; the
modules below only change *how fast* that arithmetic runs, and each result equals the plain
path's (exactly, or up to float rounding where the tests say so):

- ``workspace.py``: scratch arrays reused from one step to the next (no page faults per step).
- ``blas.py``: matrix products into preallocated arrays; one row goes to GEMV.
- ``fastmath.py``: ``exp``/``tanh``/``sigmoid`` for the Numba kernels, an inline polynomial
  in float32 (about 1 ulp), the C library's in float64.
- ``timeloop.py``: the T steps of a layer in one Numba call (L2-L6, G2-G5), used when BLAS
  runs on one thread.
- ``fast_eval.py``: batch-1 test perplexity of a whole sequence in one compiled call (a third
  implementation of the LSTM/GRU forward pass, E1, L1-L6, G1-G5, S1-S3).
- ``sparse.py``: the embedding's gradient as the rows of the batch's words only.
- ``team.py``: a team of worker threads and control of NumPy's BLAS threads.
- ``parallel.py``: one training step split into row blocks, one thread each.
- ``distributed.py``: the same split between the processes of an MPI job (mpi4py), for
  training across machines.

On a first read skip this folder: start with docs/lstm.md and ``numlstm/lstm.py``.
"""
