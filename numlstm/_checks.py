"""Argument validation shared by the public layer functions.

Numba kernels do not bounds-check, so every public entry point validates shapes, dtypes,
finiteness and token ids here first and raises a ``TypeError``/``ValueError`` that names the
argument and the expected shape.
"""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_array(name: str, a: object, ndim: int, dtype: np.dtype | None = None) -> np.ndarray:
    """Return ``a`` as a C-contiguous float32/float64 array with ``ndim`` dimensions.

    ``dtype``, when given, is the dtype every other argument of the call already has.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but the other arguments are {dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    return np.ascontiguousarray(a)


def expect_shape(name: str, a: np.ndarray, shape: tuple[int, ...], meaning: str) -> None:
    """Raise ``ValueError`` unless ``a.shape == shape``; ``meaning`` spells the shape in symbols."""
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {meaning} = {shape}, got {a.shape}")


def flag(name: str, value: object) -> bool:
    """A True/False switch: a bool (or NumPy bool), never a truthy string like "False"."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def expect_time_major(x: np.ndarray, h0: np.ndarray) -> None:
    """The layers take time-major x (T, B, D). When h0's rows match x's first axis rather than
    its second, x is almost surely batch-major: say so, rather than blame h0's shape."""
    T, B = x.shape[:2]
    if h0.shape[0] != B and h0.shape[0] == T:
        raise ValueError(
            f"x looks batch-major: x has shape {x.shape} and h0 has {h0.shape[0]} rows, which "
            f"matches x's first axis; the layers take time-major x of shape (T, B, D), so pass "
            f"x.transpose(1, 0, 2) (if x is time-major, h0 must have shape (B, H) = "
            f"{(B, h0.shape[1])})"
        )


def expect_nonempty(name: str, a: np.ndarray, meaning: str) -> None:
    if a.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {a.shape} for {meaning}")


def expect_finite(**arrays: np.ndarray) -> None:
    """Raise ``ValueError`` naming the first argument that holds NaN or inf."""
    for name, a in arrays.items():
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or inf")


def token_ids(name: str, ids: object, vocab_size: int, ndim: int | None = None) -> np.ndarray:
    """Validate integer token ids in ``[0, vocab_size)``; returns them as a contiguous array.

    This is the check that stands between user data and the kernels' unchecked indexing.
    """
    if not isinstance(ids, np.ndarray):
        raise TypeError(f"{name} must be a numpy integer array, got {type(ids).__name__}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ndim is not None and ids.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {ids.shape}")
    if ids.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {ids.shape}")
    lo, hi = ids.min(), ids.max()
    if lo < 0 or hi >= vocab_size:
        bad = ids[(ids < 0) | (ids >= vocab_size)]
        pos = tuple(int(p) for p in np.argwhere((ids < 0) | (ids >= vocab_size))[0])
        raise ValueError(
            f"{name} holds token id {int(bad[0])} at position {pos}, outside the vocabulary "
            f"[0, {vocab_size})"
        )
    return np.ascontiguousarray(ids)


def lengths(name: str, value: object, T: int, B: int) -> np.ndarray:
    """Validate sequence lengths: a (B,) integer array with 0 <= value[b] <= T (not bool, not
    float). Returns a contiguous int64 copy, safe to index with (docs/rnn.md, M1)."""
    if isinstance(value, list | tuple):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a (B,) numpy integer array, got {type(value).__name__}")
    if value.dtype == np.bool_ or not np.issubdtype(value.dtype, np.integer):
        raise TypeError(f"{name} must hold integers (one length per sequence), got {value.dtype}")
    if value.shape != (B,):
        raise ValueError(f"{name} must have shape (B,) = ({B},), got {value.shape}")
    if B and (value.min() < 0 or value.max() > T):
        bad = int(np.flatnonzero((value < 0) | (value > T))[0])
        raise ValueError(
            f"{name}[{bad}] = {int(value[bad])} is outside [0, T] = [0, {T}]: a sequence "
            f"cannot be longer than x"
        )
    return np.ascontiguousarray(value, dtype=np.int64)
