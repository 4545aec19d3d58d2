"""Optimisers: gradient clipping by global norm, SGD and Adam (O1-O8 in ``docs/optim.md``).

All of them work in place on dicts of arrays (name -> ndarray) such as
``LanguageModel.params`` and the gradients from ``LanguageModel.loss_and_grads``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping

import numpy as np

from . import kernels


def _flat(a: np.ndarray) -> np.ndarray:
    if not a.flags.c_contiguous:
        raise ValueError("parameters and gradients must be C-contiguous arrays")
    return a.reshape(-1)


def global_norm(grads: Mapping[str, np.ndarray]) -> float:
    """(O1) sqrt(sum over all arrays of their squared entries), accumulated in float64."""
    return math.sqrt(sum(kernels.sum_of_squares(_flat(g)) for g in grads.values()))


def clip_by_global_norm(grads: MutableMapping[str, np.ndarray], max_norm: float) -> float:
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


def _check_matching(params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
    if grads.keys() != params.keys():
        missing = sorted(set(params) ^ set(grads))
        raise KeyError(f"gradients and parameters differ in names: {missing}")
    for name, p in params.items():
        if grads[name].shape != p.shape or grads[name].dtype != p.dtype:
            raise ValueError(
                f"gradient {name!r} is {grads[name].dtype}{grads[name].shape}, "
                f"parameter is {p.dtype}{p.shape}"
            )


class SGD:
    """(O3) Plain stochastic gradient descent: p <- p - lr * g, in place."""

    def __init__(self, params: MutableMapping[str, np.ndarray], lr: float) -> None:
        self.params = params
        self.lr = float(lr)

    def step(self, grads: Mapping[str, np.ndarray], grad_scale: float = 1.0) -> None:
        """p <- p - lr * grad_scale * g; grad_scale carries a clip factor (O2) into the update."""
        _check_matching(self.params, grads)
        for name, p in self.params.items():
            kernels.scaled_add(_flat(p), _flat(grads[name]), p.dtype.type(-self.lr * grad_scale))


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

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        _check_matching(self.params, grads)
        self.t += 1
        c1 = 1.0 - self.beta1**self.t
        c2 = 1.0 - self.beta2**self.t
        for name, p in self.params.items():
            kernels.adam_update(
                _flat(p), _flat(grads[name]), _flat(self.m[name]), _flat(self.v[name]),
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
