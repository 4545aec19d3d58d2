"""Numerical gradient checking by central differences (see ``docs/optim.md``).

Usage on any layer::

    def loss():                       # reads the arrays in `params` each time it is called
        hs, _, _, _ = numlstm.lstm_forward(x, h0, c0, Wx, Wh, b)
        return float((hs * R).sum())
    hs, _, _, cache = numlstm.lstm_forward(x, h0, c0, Wx, Wh, b)
    dx, dh0, dc0, dWx, dWh, db = numlstm.lstm_backward(R, zeros, zeros, cache)
    errors = numlstm.gradcheck(loss, {"Wx": Wx, "x": x}, {"Wx": dWx, "x": dx})
    # {'Wx': 3e-10, 'x': 5e-10}   maximum relative error per parameter
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np


def relative_error(analytic: np.ndarray, numeric: np.ndarray, atol: float = 1e-4) -> float:
    """max_k |a_k - n_k| / max(|a_k|, |n_k|, atol).

    Entries whose gradient is below ``atol`` in magnitude are measured against ``atol``:
    central differences carry an absolute round-off error of about 1e-16 |f| / eps, which
    would make a pure ratio meaningless for gradients that are almost exactly zero.
    """
    a = np.asarray(analytic, np.float64)
    n = np.asarray(numeric, np.float64)
    if a.shape != n.shape:
        raise ValueError(f"analytic gradient has shape {a.shape}, numeric {n.shape}")
    if a.size == 0:
        return 0.0
    denom = np.maximum(np.maximum(np.abs(a), np.abs(n)), atol)
    return float(np.max(np.abs(a - n) / denom))  # (C2)


def _scalar(value: object) -> float:
    """The loss ``f()`` returned, as a float; TypeError naming it if it is not a real scalar."""
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating | np.ndarray
    ):
        raise TypeError(
            f"f must return a scalar loss (a float), got {type(value).__name__}: {value!r:.80}"
        )
    if isinstance(value, np.ndarray):
        if value.shape != () or value.dtype.kind not in "iuf":
            raise TypeError(
                "f must return a scalar loss (a float), got an array of shape "
                f"{value.shape} and dtype {value.dtype}"
            )
    return float(value)


def numeric_gradient(
    f: Callable[[], float], x: np.ndarray, eps: float = 3e-5, indices: np.ndarray | None = None
) -> np.ndarray:
    """Central differences (f(x + eps e_k) - f(x - eps e_k)) / (2 eps), modifying x in place.

    ``indices`` (flat) restricts the entries evaluated; others are left NaN.
    x must be a float64 array (float32 round-off would swamp the O(eps^2) truncation error).
    """
    if x.dtype != np.float64:
        raise TypeError(f"gradient checks need float64 parameters, got {x.dtype}")
    flat = x.reshape(-1)  # a view: x must be contiguous
    if not np.shares_memory(flat, x):
        raise ValueError("x must be C-contiguous so it can be perturbed in place")
    grad = np.full(x.size, np.nan)
    for k in range(x.size) if indices is None else indices:
        old = flat[k]
        try:
            flat[k] = old + eps
            fp = _scalar(f())
            flat[k] = old - eps
            fm = _scalar(f())
        finally:
            flat[k] = old  # restored even when f fails
        grad[k] = (fp - fm) / (2.0 * eps)  # (C1)
    return grad.reshape(x.shape)


def gradcheck(
    f: Callable[[], float],
    params: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    *,
    eps: float = 3e-5,
    atol: float = 1e-4,
    max_checks: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Compare analytic gradients with central differences; returns max relative error per name.

    Parameters
    ----------
    f : zero-argument function returning the scalar loss (a float or 0-d array; anything
        else raises TypeError naming it); it must read the arrays in ``params`` (they are
        perturbed in place and restored).
    params : name -> float64 array the loss depends on.
    grads : name -> analytic gradient with the same shape, computed before the call.
    eps : finite-difference step. The truncation error of central differences shrinks like
        eps^2 and the round-off error grows like 1e-16 |f| / eps; 3e-5 balances the two for
        losses of order 1-100 in float64 (measured over 20 seeds of every layer and the full
        model: worst 4e-7; 1e-4 gave up to 4e-6 from truncation, 1e-5 up to 2e-6 round-off).
    atol : see ``relative_error``.
    max_checks : check at most this many randomly chosen entries per parameter.
    """
    errors: dict[str, float] = {}
    rng = np.random.default_rng(seed)
    for name, x in params.items():
        if name not in grads:
            raise KeyError(f"no analytic gradient given for {name!r}")
        g = np.asarray(grads[name])
        if g.shape != x.shape:
            raise ValueError(f"gradient of {name!r} has shape {g.shape}, parameter {x.shape}")
        idx = None
        if max_checks is not None and x.size > max_checks:
            idx = rng.choice(x.size, size=max_checks, replace=False)
        num = numeric_gradient(f, x, eps, idx)
        if idx is None:
            errors[name] = relative_error(g, num, atol)
        else:
            errors[name] = relative_error(g.reshape(-1)[idx], num.reshape(-1)[idx], atol)
    return errors
