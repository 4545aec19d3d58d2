"""exp, sigmoid and tanh for the Numba kernels, fast in float32 and exact in float64.

Numba compiles ``math.exp`` to a call into the C library, one element at a time; those calls
dominated the gate kernels and the softmax. For float32 we instead evaluate exp inline with
the classic Cephes ``expf`` scheme, which the compiler can unroll and vectorise:

    exp(x) = 2^n * exp(r),  n = round(x / ln 2),  r = x - n ln 2,  |r| <= ln(2)/2
    exp(r) ~ 1 + r + r^2 (1/2 + r/6 + ...)  (degree-7 minimax polynomial, ~1 ulp)

and 2^n is built directly from its IEEE-754 bits ((n + 127) << 23). Inputs are clamped to
[-87.3, 88.3], the range of normal float32 results. In float64, used for gradient checks, every
function below is the C library's (``math.exp``, ``math.tanh``), so checks see exact math.

The functions dispatch on the argument's type at compile time (``numba.extending.overload``):
a kernel written once works for both dtypes.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload, register_jitable

_F32 = np.float32


@intrinsic
def _bits_to_float32(typingctx, bits):
    """Reinterpret the bits of an int32 as a float32 (no conversion)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


def exp(x):  # pragma: no cover - replaced by the overload inside Numba code
    """exp(x): fast inline polynomial for float32, math.exp for float64 (Numba only)."""
    return math.exp(x)


def exp_floor(x):  # pragma: no cover
    """exp(max(x, -60)): probabilities below e^-60 (1e-26) are 0 for every purpose, and the
    floor keeps products such as p / B out of float32's slow subnormal range (Numba only)."""
    return math.exp(max(x, -60.0))


def sigmoid(x):  # pragma: no cover
    """1 / (1 + exp(-x)) (Numba only)."""
    return 1.0 / (1.0 + math.exp(-x))


def tanh(x):  # pragma: no cover
    """tanh(x): 2 sigmoid(2x) - 1 for float32 (absolute error ~1e-7), math.tanh for float64."""
    return math.tanh(x)


def zero_like(x):  # pragma: no cover
    """0 in x's float type, to start a sum that stays in the arrays' dtype (Numba only).

    A float32 kernel summing into a Python float (float64) converts every term, and those
    conversions stop the loop from vectorising well: the softmax's sum of exponentials ran 2x
    slower with a float64 accumulator (docs/performance.md).
    """
    return 0.0


@register_jitable(inline="always")
def _expf(x):
    x = min(max(x, _F32(-87.3)), _F32(88.3))
    n = np.floor(x * _F32(1.44269504088896341) + _F32(0.5))
    r = x - n * _F32(0.693359375) + n * _F32(2.12194440e-4)  # Cody-Waite: ln 2 in two parts
    p = _F32(1.9875691500e-4)
    p = p * r + _F32(1.3981999507e-3)
    p = p * r + _F32(8.3334519073e-3)
    p = p * r + _F32(4.1665795894e-2)
    p = p * r + _F32(1.6666665459e-1)
    p = p * r + _F32(5.0000001201e-1)
    p = p * r * r + r + _F32(1.0)
    return p * _bits_to_float32(np.int32((np.int32(n) + np.int32(127)) << np.int32(23)))


@overload(exp, inline="always")
def _ol_exp(x):
    if x == types.float32:
        return _expf
    if isinstance(x, types.Float):
        return lambda x: math.exp(x)
    return None


@overload(exp_floor, inline="always")
def _ol_exp_floor(x):
    if x == types.float32:
        return lambda x: _expf(max(x, _F32(-60.0)))
    if isinstance(x, types.Float):
        return lambda x: math.exp(max(x, -60.0))
    return None


@overload(sigmoid, inline="always")
def _ol_sigmoid(x):
    if x == types.float32:
        # x >= -80 keeps the result a normal float32 (subnormals cost ~100 cycles each).
        return lambda x: _F32(1.0) / (_F32(1.0) + _expf(-max(x, _F32(-80.0))))
    if isinstance(x, types.Float):
        return lambda x: 1.0 / (1.0 + math.exp(-x))
    return None


@overload(tanh, inline="always")
def _ol_tanh(x):
    if x == types.float32:
        # |x| <= 9 is exact to float32 (tanh(9) rounds to 1) and keeps every step normal.
        return lambda x: (
            _F32(2.0) / (_F32(1.0) + _expf(_F32(-2.0) * min(max(x, _F32(-9.0)), _F32(9.0))))
            - _F32(1.0)
        )
    if isinstance(x, types.Float):
        return lambda x: math.tanh(x)
    return None


@overload(zero_like, inline="always")
def _ol_zero_like(x):
    if x == types.float32:
        return lambda x: _F32(0.0)
    if isinstance(x, types.Float):
        return lambda x: 0.0
    return None
