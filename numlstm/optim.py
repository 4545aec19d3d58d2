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


def _check_max_norm(max_norm: float) -> None:
    if not (max_norm > 0 and math.isfinite(max_norm)):  # `not (...)` also rejects NaN
        raise ValueError(f"max_norm must be a finite number > 0, got {max_norm}")


def clip_by_global_norm(grads: MutableMapping[str, Gradient], max_norm: float) -> float:
    """(O2) Scale every gradient by max_norm / max(norm, max_norm), in place.

    TensorFlow's ``clip_by_global_norm``: nothing changes when the norm is at most max_norm.
    Returns the global norm measured *before* clipping.
    """
    _check_max_norm(max_norm)  # before the pass over the gradients
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
    _check_max_norm(max_norm)
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


def _hyper(name: str, value: object, *, low: float, high: float = math.inf,
           low_open: bool = False, high_open: bool = True) -> float:  # fmt: skip
    """``value`` as a float after checking it is a finite real number in the given interval."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    ok = (
        math.isfinite(v)
        and (v > low if low_open else v >= low)
        and (v < high if high_open else v <= high)
    )
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be a finite number in {lo}{low}, {high}{hi}, got {value!r}")
    return v


def _check_finite_grads(grads: Mapping[str, Gradient], norm: float | None) -> None:
    """Raise FloatingPointError if any gradient entry is NaN or inf, before anything changes.

    ``norm``: the global norm of these gradients if the caller already measured it (as
    ``train.train_step`` does for clipping); finite means every entry is finite, so the scan
    over the gradients is skipped. Otherwise one float64 sum of squares per array (the same
    kernel as O1) detects a NaN or inf anywhere.
    """
    if norm is not None:
        if not math.isfinite(norm):
            raise FloatingPointError(f"gradient global norm is {norm}: the loss has diverged")
        return
    for name, g in grads.items():
        if not math.isfinite(kernels.sum_of_squares(_dense_part(g))):
            # sum of squares can also overflow on huge finite values: say which it was
            bad = "NaN or inf" if not np.isfinite(_dense_part(g)).all() else "overflowing"
            raise FloatingPointError(
                f"gradient {name!r} holds {bad} values; refusing to update the parameters"
            )


def _check_scale(grad_scale: float) -> None:
    if not (grad_scale >= 0 and math.isfinite(grad_scale)):
        raise ValueError(f"grad_scale must be a finite number >= 0, got {grad_scale}")


class SGD:
    """(O3) Plain stochastic gradient descent: p <- p - lr * g, in place."""

    def __init__(self, params: MutableMapping[str, np.ndarray], lr: float) -> None:
        self.params = params
        self.lr = lr

    @property
    def lr(self) -> float:
        """Learning rate: a finite number >= 0 (checked on every assignment)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _hyper("lr", value, low=0.0)

    def step(
        self, grads: Mapping[str, Gradient], grad_scale: float = 1.0, *, norm: float | None = None
    ) -> None:
        """p <- p - lr * grad_scale * g; grad_scale carries a clip factor (O2) into the update.

        An ``IndexedRows`` gradient updates only its rows (the others would add zero).
        A gradient holding NaN or inf raises FloatingPointError before any parameter changes;
        pass ``norm=global_norm(grads)`` when it is already known to skip that scan.
        """
        _check_matching(self.params, grads)
        _check_scale(grad_scale)
        _check_finite_grads(grads, norm)
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
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.t = 0
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}

    @property
    def lr(self) -> float:
        """Learning rate: a finite number >= 0."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _hyper("lr", value, low=0.0)

    @property
    def beta1(self) -> float:
        """First-moment decay in [0, 1)."""
        return self._beta1

    @beta1.setter
    def beta1(self, value: float) -> None:
        self._beta1 = _hyper("beta1", value, low=0.0, high=1.0)

    @property
    def beta2(self) -> float:
        """Second-moment decay in [0, 1)."""
        return self._beta2

    @beta2.setter
    def beta2(self, value: float) -> None:
        self._beta2 = _hyper("beta2", value, low=0.0, high=1.0)

    @property
    def eps(self) -> float:
        """Denominator offset: a finite number > 0."""
        return self._eps

    @eps.setter
    def eps(self, value: float) -> None:
        self._eps = _hyper("eps", value, low=0.0, low_open=True)

    def step(self, grads: Mapping[str, Gradient], *, norm: float | None = None) -> None:
        """One Adam step. ``IndexedRows`` gradients are made dense first: the moment estimates
        of every row decay each step (O5, O6), touched or not. A gradient holding NaN or inf
        raises FloatingPointError before anything changes (``norm`` as in ``SGD.step``)."""
        _check_matching(self.params, grads)
        _check_finite_grads(grads, norm)
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
