"""Dropout sites of the language model, in TensorFlow's DropoutWrapper sense, with variational
masks (Gal & Ghahramani 2016).

``Dropout`` says how much to drop where; the model (``model.py``) asks this module for the
masks of one batch and applies them. Equations D1-D5 and dD1-dD4 are derived in
``docs/dropout.md`` (D1, dD1: ``docs/layers.md``). Per layer l the sites are, in the order the
masks are drawn from the generator:

    embedding          the embedded words, before layer 0          (D1)
    l{l}.input         the input x of layer l, after the site below (D2)
    l{l}.state         h_{t-1} where it enters the product h_{t-1} Wh of layer l (D4; LSTM only,
                       c is never dropped; the state carried to the next batch is not dropped)
    l{l}.output        the outputs h_t of layer l                   (D3)

A mask is the scaled m / p of D1. Its shape says how it is shared (D5): (T, B, W) a fresh
mask per element and step (``variational=None``, the tutorial's); (B, W) one mask per
sequence, the same at every step (``"sequence"``: Gal's and Keras's); (1, W) one mask for the
whole batch (``"batch"``: TensorFlow's ``variational_recurrent=True``, noise shape [1, W]).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np

from .layers import dropout_mask

VARIATIONAL = (None, "sequence", "batch")
KEEP_FIELDS = ("embedding_keep_prob", "input_keep_prob", "output_keep_prob", "state_keep_prob")
SITE_KINDS = ("input", "state", "output")  # per layer, in drawing order

Masks = dict[str, np.ndarray | None]


def check_keep_prob(name: str, value: object) -> float:
    """A keep probability: a real number in (0, 1] (not a bool, not NaN); returns it as float."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number in (0, 1], got {value!r}")
    value = float(value)
    if not 0.0 < value <= 1.0:  # NaN fails both comparisons
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return value


@dataclass(frozen=True)
class Dropout:
    """Where the language model drops activations, and how its masks are shared.

    ``Dropout()`` drops nothing; ``Dropout.from_keep_prob(k)`` is the PTB tutorial's dropout
    (the embedding and every layer's output, fresh masks), what a float ``keep_prob`` means.

    Parameters
    ----------
    embedding_keep_prob : keep probability of the embedded words (D1).
    input_keep_prob : of every layer's input x (D2), after the site below it (TensorFlow's
        ``DropoutWrapper(input_keep_prob=)``).
    output_keep_prob : of every layer's outputs h_t (D3) (``output_keep_prob=``).
    state_keep_prob : of h_{t-1} where it enters the recurrent product h_{t-1} Wh (D4); the
        cell state c is never dropped. LSTM only (``state_keep_prob=``).
    variational : None: a fresh mask per element and step; "sequence": one mask per
        sequence (row) and site, the same at every step (Gal & Ghahramani 2016, Keras's
        ``dropout``/``recurrent_dropout``); "batch": one mask per site shared by every row
        of the batch, the same at every step (TensorFlow's ``variational_recurrent=True``,
        noise shape [1, W]). See D5 of docs/dropout.md.
    """

    embedding_keep_prob: float = 1.0
    input_keep_prob: float = 1.0
    output_keep_prob: float = 1.0
    state_keep_prob: float = 1.0
    variational: str | None = None

    def __post_init__(self) -> None:
        for name in KEEP_FIELDS:
            object.__setattr__(self, name, check_keep_prob(name, getattr(self, name)))
        if self.variational not in VARIATIONAL:
            raise ValueError(f"variational must be None, 'sequence' or 'batch', "
                             f"got {self.variational!r}")  # fmt: skip

    @classmethod
    def from_keep_prob(cls, keep_prob: float) -> Dropout:
        """The tutorial's dropout (today's float ``keep_prob``): the embedding and each layer's
        output with ``keep_prob``, fresh masks, nothing else."""
        keep_prob = check_keep_prob("keep_prob", keep_prob)
        return cls(embedding_keep_prob=keep_prob, output_keep_prob=keep_prob)

    @property
    def active(self) -> bool:
        """Whether any site drops anything."""
        return any(getattr(self, name) < 1.0 for name in KEEP_FIELDS)

    def keep_prob(self, site: str) -> float:
        """The keep probability of a site name ("embedding", "l0.input", "l1.state", ...)."""
        kind = site if site == "embedding" else site.split(".", 1)[1]
        return getattr(self, f"{kind}_keep_prob")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_cell(dropout: Dropout, cell: str) -> None:
    """State dropout (D4) is built for the LSTM only (docs/dropout.md section 3: a GRU uses
    h_{t-1} in its interpolation too, and libraries differ on dropping it there; the plain
    RNN's loop (R2) has no masked variant)."""
    if cell != "lstm" and dropout.state_keep_prob < 1.0:
        kind = {"gru": "a GRU", "rnn": "a plain RNN"}.get(cell, f"cell={cell!r}")
        raise ValueError(
            f"state_keep_prob={dropout.state_keep_prob} < 1 (state dropout, D4) is supported "
            f"for cell='lstm' only, not cell={cell!r}: use input_keep_prob and "
            f"output_keep_prob for {kind}")  # fmt: skip


def as_dropout(keep_prob: float | Dropout) -> Dropout:
    """A ``Dropout`` from what ``keep_prob`` arguments accept: a ``Dropout``, or a float meaning
    ``Dropout.from_keep_prob`` (raises ``ValueError`` naming keep_prob outside (0, 1])."""
    if isinstance(keep_prob, Dropout):
        return keep_prob
    return Dropout.from_keep_prob(keep_prob)


def sites(num_layers: int) -> list[str]:
    """Every site's name, in the order the masks are drawn (module docstring)."""
    return ["embedding"] + [f"l{layer}.{kind}" for layer in range(num_layers)
                            for kind in SITE_KINDS]  # fmt: skip


def mask_shape(T: int, B: int, width: int, variational: str | None) -> tuple[int, ...]:
    """(D5) The shape of one site's mask: (T, B, W) fresh, (B, W) per sequence, (1, W) per
    batch; a (B, W) or (1, W) mask broadcasts over the steps (and rows)."""
    if variational is None:
        return (T, B, width)
    return (B, width) if variational == "sequence" else (1, width)


def draw(
    num_layers: int, T: int, B: int, widths: Mapping[str, int], dropout: Dropout,
    rng: np.random.Generator, dtype: np.dtype,
) -> Masks:  # fmt: skip
    """The masks of a (B, T) batch, drawn from ``rng`` in site order (sites with keep
    probability 1 draw nothing and get None); ``widths`` maps each site to its width W. With
    ``Dropout.from_keep_prob(k)`` this draws what the tutorial's model draws, in the same
    order: the embedding's, then each output's."""
    if dropout.active and not isinstance(rng, np.random.Generator):
        raise TypeError("dropout needs rng, a numpy.random.Generator (np.random.default_rng(0))")
    out: Masks = {}
    for site in sites(num_layers):
        p = dropout.keep_prob(site)
        shape = mask_shape(T, B, widths[site], dropout.variational)
        out[site] = None if p == 1.0 else dropout_mask(shape, p, rng, dtype)
    return out


def normalize(masks: Sequence | Mapping, num_layers: int) -> dict[str, tuple[str, object]]:
    """Fixed masks as {site: (display name, mask)}: the list form [embedding, each layer's
    output] of D1, or a dict keyed by site names. A site left out, or None, is not dropped."""
    known = sites(num_layers)
    if isinstance(masks, Mapping):
        unknown = [k for k in masks if k not in known]
        if unknown:
            raise ValueError(f"masks has unknown site {unknown[0]!r}; the sites are "
                             f"{', '.join(known)}")  # fmt: skip
        return {k: (f"masks[{k!r}]", m) for k, m in masks.items() if m is not None}
    if isinstance(masks, str | bytes | np.ndarray) or not isinstance(masks, Sequence):
        raise TypeError("masks must be a list (the embedding's, then each layer's output's) or "
                        f"a dict keyed by site name, got {type(masks).__name__}")  # fmt: skip
    if len(masks) != num_layers + 1:
        raise ValueError(f"masks must hold {num_layers + 1} entries (the embedding, then "
                         f"each layer's output), got {len(masks)}")  # fmt: skip
    names = ["embedding"] + [f"l{layer}.output" for layer in range(num_layers)]
    return {s: (f"masks[{k}]", m) for k, (s, m) in enumerate(zip(names, masks, strict=True))
            if m is not None}  # fmt: skip


def check_mask(name: str, m: object, T: int, B: int, width: int, dtype: np.dtype) -> None:
    """A fixed mask must be an array of shape (T, B, W), (B, W) or (1, W) (D5) and of the
    model's dtype: a float64 mask would silently turn a float32 model's activations float64."""
    shapes = ((T, B, width), (B, width), (1, width))
    if not isinstance(m, np.ndarray) or m.shape not in shapes:
        got = getattr(m, "shape", m)
        raise ValueError(f"{name} must be an array of shape (T, B, W) = {shapes[0]}, or "
                         f"(B, W) = {shapes[1]} or (1, W) = {shapes[2]} (D5; W the site's "
                         f"width), got {got}")  # fmt: skip
    if m.dtype != dtype:
        raise TypeError(f"{name} must be {dtype} like the model, got {m.dtype}")
    if not np.isfinite(m).all():
        raise ValueError(f"{name} contains NaN or inf")


def slice_rows(masks: Sequence | Mapping | None, lo: int, hi: int, B: int):
    """Rows lo:hi of a batch's masks (of B rows), in the same form (list or dict): a part of a
    data-parallel step passes these so that its result does not depend on the split. A
    (T, B, W) mask gives [:, lo:hi], a per-sequence (B, W) mask [lo:hi]; a batch-shared (1, W)
    mask (B > 1) belongs to every part whole (D5)."""
    if masks is None:
        return None

    def rows(m):
        if m is None:
            return None
        if m.ndim == 3:
            return np.ascontiguousarray(m[:, lo:hi])
        if m.shape[0] == 1 and B != 1:  # "batch": shared by all rows
            return m
        return np.ascontiguousarray(m[lo:hi])

    if isinstance(masks, Mapping):
        return {k: rows(m) for k, m in masks.items()}
    return [rows(m) for m in masks]


def step_mask(mask: np.ndarray, t: int) -> np.ndarray:
    """(D5) The mask of step t: mask[t] of a (T, B, W) mask; a (B, W) or (1, W) mask is the same
    at every step."""
    return mask[t] if mask.ndim == 3 else mask
