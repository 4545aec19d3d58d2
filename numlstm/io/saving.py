"""Saving and loading a language model together with its vocabulary.

A saved model is a checkpoint (``checkpoint.py``: one ``.npz``, JSON metadata, atomic write, no
pickle) whose metadata says ``"kind": "numlstm-language-model"`` and holds the architecture
(``LanguageModel.config()``) and the vocabulary (``id_to_word``). Training checkpoints are saved
models too, with their resumption data in ``meta["training"]`` and extra arrays named
``state.*``; so ``python -m numlstm generate`` and ``evaluate`` read them directly.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..model import BIASES, CELLS, GATES, LanguageModel
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint

MODEL_KIND = "numlstm-language-model"
EXTRA_PREFIXES = ("state.", "opt.", "train.")
_RESERVED_META = ("kind", "model", "vocab")


def save_model(
    path: str | os.PathLike[str],
    model: LanguageModel,
    id_to_word: Sequence[str],
    extra_meta: Mapping[str, Any] | None = None,
    extra_arrays: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Save the parameters, architecture and vocabulary in one checkpoint (atomic write).

    Arrays: ``model.params`` under their own names. Meta: ``{"kind": "numlstm-language-model",
    "model": model.config(), "vocab": id_to_word, **extra_meta}``; ``extra_meta`` (JSON-able:
    e.g. training settings, perplexities, ``"preprocess": "clean_text"``) may not use the keys
    "kind", "model" or "vocab". ``extra_arrays`` are saved beside the parameters; their names
    must start with one of ``EXTRA_PREFIXES`` ("state." for a carried RNN state, "opt." for
    optimiser moments, "train." for training records such as the epoch's gradient norms),
    which ``load_model`` ignores.
    """
    vocab = list(id_to_word)
    if len(vocab) != model.vocab_size:
        raise ValueError(
            f"id_to_word has {len(vocab)} words, the model's vocab_size is {model.vocab_size}"
        )
    if not all(isinstance(w, str) for w in vocab) or len(set(vocab)) != len(vocab):
        raise ValueError("id_to_word must hold distinct strings")
    extra = dict(extra_meta or {})
    clash = [k for k in _RESERVED_META if k in extra]
    if clash:
        raise ValueError(f"extra_meta may not use the reserved key(s) {clash}")
    meta = {"kind": MODEL_KIND, "model": model.config(), "vocab": vocab, **extra}
    arrays = dict(model.params)
    for name, a in (extra_arrays or {}).items():
        if not name.startswith(EXTRA_PREFIXES) or name in arrays:
            raise ValueError(f"extra array name {name!r} must start with one of {EXTRA_PREFIXES}")
        arrays[name] = a
    return save_checkpoint(path, arrays, meta)


_CONFIG_KEYS = frozenset(
    ("vocab_size", "hidden_size", "num_layers", "cell", "forget_bias", "reset_after", "dtype",
     "init_scale", "peepholes", "cell_clip", "proj_size", "proj_clip", "tie_embeddings",
     "embedding_size")
)  # fmt: skip
_LAYER_RE = re.compile(r"l(\d+)\.Wx")


def _expected_params(path: object, config: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
                     ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:  # fmt: skip
    """Parameter names -> (shape, dtype) the saved config implies, checked against the arrays
    actually present *before* anything of the config's size is allocated."""

    def bad(msg: str) -> CheckpointError:
        return CheckpointError(f"{path}: invalid model config: {msg}")

    unknown = sorted(set(config) - _CONFIG_KEYS)
    if unknown:
        raise bad(f"unknown key(s) {unknown}")
    for key in ("vocab_size", "hidden_size", "num_layers"):
        v = config.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad(f"{key} must be a positive integer, got {v!r}")
    cell = config.get("cell", "lstm")
    if cell not in CELLS:
        raise bad(f"cell must be one of {CELLS}, got {cell!r}")
    dtype_name = config.get("dtype", "float32")
    if dtype_name not in ("float32", "float64"):
        raise bad(f"dtype must be 'float32' or 'float64', got {dtype_name!r}")
    for key in ("forget_bias", "init_scale"):
        v = config.get(key, 0.0)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise bad(f"{key} must be a finite number, got {v!r}")
    for key in ("reset_after", "peepholes", "tie_embeddings"):
        if not isinstance(config.get(key, key == "reset_after"), bool):
            raise bad(f"{key} must be true or false, got {config.get(key)!r}")
    for key in ("proj_size", "embedding_size"):  # absent (older files) or null: the default
        v = config.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise bad(f"{key} must be a positive integer or null, got {v!r}")
    for key in ("cell_clip", "proj_clip"):  # the values themselves: LanguageModel checks them
        v = config.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise bad(f"{key} must be a number or null, got {v!r}")
    V, H, L = config["vocab_size"], config["hidden_size"], config["num_layers"]
    E = config.get("embedding_size") or H
    P = config.get("proj_size") or H
    emb = arrays.get("embedding")
    if emb is None or emb.shape != (V, E):
        got = None if emb is None else list(emb.shape)
        raise CheckpointError(
            f"{path}: config says vocab_size={V}, hidden_size={H}"
            + (f", embedding_size={E}" if E != H else "")
            + f", but the saved 'embedding' has shape {got}"
        )
    layers = sorted(int(m.group(1)) for k in arrays if (m := _LAYER_RE.fullmatch(k)))
    if layers != list(range(L)):
        raise CheckpointError(
            f"{path}: config says num_layers={L}, but the checkpoint holds "
            f"{len(layers)} layer(s) of weights"
        )
    dtype, G = np.dtype(dtype_name), GATES[cell]
    shapes: dict[str, tuple[int, ...]] = {"embedding": (V, E)}
    for layer in range(L):
        shapes[f"l{layer}.Wx"] = (E if layer == 0 else P, G * H)
        shapes[f"l{layer}.Wh"] = (P, G * H)
        shapes.update({f"l{layer}.{b}": (G * H,) for b in BIASES[cell]})
        if config.get("peepholes"):
            shapes[f"l{layer}.peepholes"] = (3, H)
        if config.get("proj_size") is not None:
            shapes[f"l{layer}.W_proj"] = (H, P)
    if not config.get("tie_embeddings"):
        shapes["softmax_w"] = (P, V)
    shapes["softmax_b"] = (V,)
    return {k: (s, dtype) for k, s in shapes.items()}


def load_model(
    path: str | os.PathLike[str], *, allow_nonfinite: bool = False
) -> tuple[LanguageModel, list[str], dict]:
    """Load a file written by :func:`save_model`.

    The saved config is checked against the arrays actually in the file (names, shapes,
    dtypes, number of layers, vocabulary size) before a model is built, so a crafted config
    cannot make this allocate more than the file holds.

    Parameters
    ----------
    path : str or os.PathLike
    allow_nonfinite : bool, default False
        Accept parameters holding NaN or inf (a training checkpoint never legitimately does;
        only for inspecting a diverged run).

    Returns
    -------
    model : LanguageModel
        Rebuilt from the saved config, with the saved parameters copied in.
    id_to_word : list of str, length V
    meta : dict
        Everything saved in meta (including "model" and "vocab").

    Raises
    ------
    CheckpointError
        Missing / corrupt file (from ``load_checkpoint``), a checkpoint that is not a saved
        model, an invalid config, parameters whose names, shapes or dtypes do not match the
        config, a vocabulary that is not V distinct strings, or (unless ``allow_nonfinite``)
        a parameter holding NaN or inf; the message names the path and the parameter.
    """
    arrays, meta = load_checkpoint(path)
    config, vocab = meta.get("model"), meta.get("vocab")
    if meta.get("kind") != MODEL_KIND or not isinstance(config, dict):
        raise CheckpointError(f"{path}: not a saved language model (write it with save_model)")
    expected = _expected_params(path, config, arrays)
    V = config["vocab_size"]
    if not isinstance(vocab, list) or len(vocab) != V or not all(isinstance(w, str) for w in vocab):
        raise CheckpointError(f"{path}: 'vocab' must be a list of {V} strings")
    if len(set(vocab)) != V:
        raise CheckpointError(f"{path}: 'vocab' holds the same word more than once")
    extra = [k for k in arrays if k not in expected and not k.startswith(EXTRA_PREFIXES)]
    missing = [k for k in expected if k not in arrays]
    if missing or extra:
        raise CheckpointError(
            f"{path}: parameters do not match the config: missing {missing}, unexpected {extra}"
        )
    for name, (shape, dtype) in expected.items():
        a = arrays[name]
        if a.shape != shape or a.dtype != dtype:
            raise CheckpointError(
                f"{path}: parameter {name!r} is {a.dtype}{a.shape}, the config needs {dtype}{shape}"
            )
        if not allow_nonfinite and not np.isfinite(a).all():
            raise CheckpointError(
                f"{path}: parameter {name!r} holds NaN or inf values (a diverged run?); "
                "refusing to load it"
            )
    try:
        model = LanguageModel(**{**config, "dtype": np.dtype(config.get("dtype", "float32"))})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model config {config}: {e}") from None
    for name, dest in model.params.items():
        dest[...] = arrays[name]
    return model, vocab, meta
