"""Scratch buffers reused from one training step to the next.

A step of the PTB small model needs a 16 MB logits buffer and several 8 MB gradient arrays.
Allocating them afresh each step costs more than the arithmetic in them: the memory comes
straight from the operating system and every page faults on first touch. A ``Workspace`` keeps
one array per name and hands the same memory back while the shape and dtype stay the same.

The layer functions take an optional workspace; without one (``FRESH``) they allocate new
arrays, which is what the public API does, so results handed to users are never overwritten.
"""

from __future__ import annotations

import numpy as np


class Workspace:
    """Named arrays reused across calls. Anything obtained from it is valid until the next call
    that asks for the same name."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def _get(self, name: str, shape: tuple[int, ...], dtype: np.dtype, make) -> np.ndarray:
        """The array kept under ``name``, or ``make()`` kept there if shape or dtype differ."""
        a = self._arrays.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = make()
            self._arrays[name] = a
        return a

    def empty(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self._get(name, shape, dtype, lambda: np.empty(shape, dtype))

    def zeros(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        a = self.empty(name, shape, dtype)
        a.fill(0)
        return a

    def scratch(self, name: str, shape: tuple[int, ...], dtype: np.dtype, fill) -> np.ndarray:
        """An array filled with ``fill`` when first created, then handed back as the caller left
        it: for scratch that a kernel restores to ``fill`` after every use."""
        return self._get(name, shape, dtype, lambda: np.full(shape, fill, dtype))

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())


class _Fresh(Workspace):
    """A workspace that keeps nothing: every request is a new array."""

    def empty(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return np.empty(shape, dtype)

    def zeros(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return np.zeros(shape, dtype)

    def scratch(self, name: str, shape: tuple[int, ...], dtype: np.dtype, fill) -> np.ndarray:
        return np.full(shape, fill, dtype)


FRESH = _Fresh()
