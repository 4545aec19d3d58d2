"""Shared fixtures for the engine tests (lstm, gru, layers, model, optim, gradcheck).

* ``seed``: every test that takes it runs for three seeds.
* ``check_grads``: runs ``numlstm.gradcheck`` in float64 (eps = 3e-5, atol = 1e-4) and asserts
  the project standard (maximum relative error per parameter <= 1e-6), with the error dict in
  the message. The
  worst error seen per layer is printed in the terminal summary.
* ``no_kernels``: replaces every Numba kernel with a tripwire, to show that bad input is
  rejected by validation before any kernel runs (the kernels do not bounds-check).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pytest

import numlstm
from numlstm import kernels
from numlstm.fast import timeloop

GRADCHECK_TOL = 1e-6
# Finite-difference step (numlstm.gradcheck's default since these measurements). eps = 1e-4
# sits at the truncation floor of the 1e-6 bar: for entries near the atol = 1e-4 floor the
# eps^2 * f'''/6 term alone reaches ~1e-6 relative. Measured over 20 seeds of these very
# tests (float64, correct gradients): worst error 3.7e-6 at eps = 1e-4 (LSTM, GRU and
# whole-model checks; it shrinks ~10x at eps = 3e-5, so it is truncation, not a bug) and
# 4.2e-7 at eps = 3e-5, where round-off (1e-16 |f| / eps with |f| < 10) is far below the bar.
GRADCHECK_EPS = 3e-5

# layer label -> (worst error, parameter name, test id); filled by check_grads.
_WORST: dict[str, tuple[float, str, str]] = {}


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"seed{s}")
def seed(request) -> int:
    return request.param


@pytest.fixture
def check_grads(request) -> Callable[..., dict[str, float]]:
    """check_grads(layer, f, params, grads, **gradcheck_kwargs) -> errors."""

    def _check(
        layer: str,
        f: Callable[[], float],
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, np.ndarray],
        **kwargs,
    ) -> dict[str, float]:
        for name, p in params.items():
            assert p.dtype == np.float64, f"{name}: gradient checks must run in float64"
        kwargs.setdefault("eps", GRADCHECK_EPS)
        errors = numlstm.gradcheck(f, params, grads, **kwargs)
        assert set(errors) == set(params)
        print(f"{layer} gradcheck errors: {errors}")
        name, worst = max(errors.items(), key=lambda kv: kv[1])
        if worst > _WORST.get(layer, (-1.0,))[0]:
            _WORST[layer] = (worst, name, request.node.name)
        assert worst <= GRADCHECK_TOL, f"{layer}: relative errors above 1e-6: {errors}"
        return errors

    return _check


def pytest_terminal_summary(terminalreporter):
    if not _WORST:
        return
    terminalreporter.section("largest gradcheck relative error per layer")
    for layer, (err, name, test) in sorted(_WORST.items()):
        terminalreporter.write_line(f"{layer:24s} {err:.2e}  ({name}, {test})")


_KERNEL_NAMES = (
    "lstm_cell_forward", "lstm_cell_backward", "gru_cell_forward", "gru_cell_backward",
    "gru_rz_forward", "gru_cho_cell_forward", "gru_cho_cell_backward", "gru_rz_backward",
    "softmax_xent_rows", "softmax_xent_loss_rows", "embedding_scatter_add", "scaled_add",
    "adam_update", "sum_of_squares", "embedding_rows_grad", "scatter_scaled_add",
    "rnn_cell_forward", "rnn_cell_backward", "lstmp_cell_forward", "lstmp_cell_backward",
)  # fmt: skip
_LOOP_NAMES = (
    "lstm_forward_loop", "lstm_backward_loop", "gru_forward_loop", "gru_backward_loop",
    "gru_cho_forward_loop", "gru_cho_backward_loop", "rnn_forward_loop", "rnn_backward_loop",
)  # fmt: skip


@pytest.fixture
def no_kernels(monkeypatch):
    """Make any kernel call fail the test with an AssertionError (not a Type/ValueError)."""

    def tripwire_for(name):
        def tripwire(*args, **kwargs):
            raise AssertionError(f"kernel {name} ran on input that should have been rejected")

        return tripwire

    for name in _KERNEL_NAMES:
        assert hasattr(kernels, name), name
        monkeypatch.setattr(kernels, name, tripwire_for(name))
    for name in _LOOP_NAMES:
        assert hasattr(timeloop, name), name
        monkeypatch.setattr(timeloop, name, tripwire_for(name))
    yield
