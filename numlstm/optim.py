"""Optimisers: gradient clipping by global norm, SGD and Adam (O1-O8 in ``docs/optim.md``).

All of them work in place on dicts of arrays (name -> ndarray) such as
``LanguageModel.params`` and the gradients from ``LanguageModel.loss_and_grads``. A gradient
may also be ``IndexedRows`` (a row-sparse gradient, see ``sparse.py``): its rows are used
as they are, which gives the same numbers as the dense array it stands for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping

import numpy as np

from . import kernels
from .fast.sparse import IndexedRows

Gradient = np.ndarray | IndexedRows


def _flat(a: np.ndarray) -> np.ndarray:
    if not a.flags.c_contiguous:
        raise ValueError("parameters and gradients must be C-contiguous arrays")
    return a.reshape(-1)


def _dense_part(g: Gradient) -> np.ndarray:
    """The array holding every nonzero entry of g (the rows' values for IndexedRows)."""
    return _flat(g.values if isinstance(g, IndexedRows) else g)


def global_norm(grads: Mapping[str, Gradient]) -> float:
    """(O1) sqrt(sum over all arrays of their squared entries), accumulated in float64.

    For ``IndexedRows`` only the stored rows are summed: the other rows are zero.
    """
    return math.sqrt(sum(kernels.sum_of_squares(_dense_part(g)) for g in grads.values()))


def clip_by_global_norm(grads: MutableMapping[str, Gradient], max_norm: float) -> float:
    """(O2) Scale every gradient by max_norm / max(norm, max_norm), in place.

    TensorFlow's ``clip_by_global_norm``: nothing changes when the norm is at most max_norm.
    Returns the global norm measured *before* clipping.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    norm = global_norm(grads)
    scale = clip_factor(norm, max_norm)
    if scale != 1.0:
        for g in grads.values():
            g *= g.dtype.type(scale)
    return norm


def clip_factor(norm: float, max_norm: float) -> float:
    """(O2) the factor max_norm / max(norm, max_norm) that clipping multiplies gradients by.

    ``SGD.step(grads, grad_scale=clip_factor(norm, max_norm))`` applies clipping and the update
    in one pass over the gradients instead of two.
    """
    if not math.isfinite(norm):
        raise FloatingPointError(f"gradient global norm is {norm}: the loss has diverged")
    return max_norm / norm if norm > max_norm else 1.0


def _check_matching(params: Mapping[str, np.ndarray], grads: Mapping[str, Gradient]) -> None:
    if grads.keys() != params.keys():
        missing = sorted(set(params) ^ set(grads))
        raise KeyError(f"gradients and parameters differ in names: {missing}")
    for name, p in params.items():
        g = grads[name]
        if tuple(g.shape) != p.shape or g.dtype != p.dtype:
            raise ValueError(
                f"gradient {name!r} is {g.dtype}{tuple(g.shape)}, parameter is {p.dtype}{p.shape}"
            )
        if isinstance(g, IndexedRows):
            _check_indexed_rows(name, g)


def _check_indexed_rows(name: str, g: IndexedRows) -> None:
    """The kernels index p[rows[u]] without bounds checks: validate rows and values first."""
    rows, values = g.rows, g.values
    if not isinstance(rows, np.ndarray) or rows.ndim != 1 or rows.dtype.kind not in "iu":
        raise TypeError(f"gradient {name!r}: rows must be a 1-D integer array")
    if not isinstance(values, np.ndarray) or values.shape != (rows.size, g.shape[1]):
        raise ValueError(f"gradient {name!r}: values must have shape (len(rows), "
                         f"{g.shape[1]}), got {getattr(values, 'shape', None)}")  # fmt: skip
    if rows.size and (rows.min() < 0 or rows.max() >= g.shape[0]):
        raise ValueError(f"gradient {name!r}: rows must lie in [0, {g.shape[0]})")


class SGD:
    """(O3) Plain stochastic gradient descent: p <- p - lr * g, in place."""

    def __init__(self, params: MutableMapping[str, np.ndarray], lr: float) -> None:
        self.params = params
        self.lr = float(lr)

    def step(self, grads: Mapping[str, Gradient], grad_scale: float = 1.0) -> None:
        """p <- p - lr * grad_scale * g; grad_scale carries a clip factor (O2) into the update.

        An ``IndexedRows`` gradient updates only its rows (the others would add zero).
        """
        _check_matching(self.params, grads)
        for name, p in self.params.items():
            g, alpha = grads[name], p.dtype.type(-self.lr * grad_scale)
            if isinstance(g, IndexedRows):
                if not p.flags.c_contiguous:
                    raise ValueError("parameters and gradients must be C-contiguous arrays")
                kernels.scatter_scaled_add(p, g.rows, np.ascontiguousarray(g.values), alpha)
            else:
                kernels.scaled_add(_flat(p), _flat(g), alpha)


class Adam:
    """(O5-O8) Adam (Kingma & Ba, 2015) with bias-corrected moment estimates."""

    def __init__(
        self,
        params: MutableMapping[str, np.ndarray],
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        self.params = params
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(beta1), float(beta2), eps
        self.t = 0
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}

    def step(self, grads: Mapping[str, Gradient]) -> None:
        """One Adam step. ``IndexedRows`` gradients are made dense first: the moment estimates
        of every row decay each step (O5, O6), touched or not."""
        _check_matching(self.params, grads)
        self.t += 1
        c1 = 1.0 - self.beta1**self.t
        c2 = 1.0 - self.beta2**self.t
        for name, p in self.params.items():
            g = grads[name]
            g = g.to_dense() if isinstance(g, IndexedRows) else g
            kernels.adam_update(
                _flat(p), _flat(g), _flat(self.m[name]), _flat(self.v[name]),
                self.lr, self.beta1, self.beta2, self.eps, c1, c2,
            )  # fmt: skip

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Moment estimates as named arrays (for checkpoints); the step count is ``self.t``."""
        out = {f"adam.m.{k}": v for k, v in self.m.items()}
        out.update({f"adam.v.{k}": v for k, v in self.v.items()})
        return out

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray], t: int) -> None:
        for k in self.params:
            self.m[k][...] = arrays[f"adam.m.{k}"]
            self.v[k][...] = arrays[f"adam.v.{k}"]
        self.t = int(t)
