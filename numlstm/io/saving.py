"""Saving and loading a language model together with its vocabulary.

A saved model is a checkpoint (``checkpoint.py``: one ``.npz``, JSON metadata, atomic write, no
pickle) whose metadata says ``"kind": "numlstm-language-model"`` and holds the architecture
(``LanguageModel.config()``) and the vocabulary (``id_to_word``). Training checkpoints are saved
models too, with their resumption data in ``meta["training"]`` and extra arrays named
``state.*``; so ``python -m numlstm generate`` and ``evaluate`` read them directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..model import LanguageModel
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint

MODEL_KIND = "numlstm-language-model"
EXTRA_PREFIXES = ("state.", "opt.")
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
    optimiser moments), which ``load_model`` ignores.
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


def load_model(path: str | os.PathLike[str]) -> tuple[LanguageModel, list[str], dict]:
    """Load a file written by :func:`save_model`.

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
        model, or parameters whose names, shapes or dtypes do not match the config.
    """
    arrays, meta = load_checkpoint(path)
    config, vocab = meta.get("model"), meta.get("vocab")
    if meta.get("kind") != MODEL_KIND or not isinstance(config, dict):
        raise CheckpointError(f"{path}: not a saved language model (write it with save_model)")
    try:
        model = LanguageModel(**{**config, "dtype": np.dtype(config.get("dtype", "float32"))})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model config {config}: {e}") from None
    if (
        not isinstance(vocab, list)
        or len(vocab) != model.vocab_size
        or not all(isinstance(w, str) for w in vocab)
    ):
        raise CheckpointError(f"{path}: 'vocab' must be a list of {model.vocab_size} strings")
    missing = [k for k in model.params if k not in arrays]
    extra = [k for k in arrays if k not in model.params and not k.startswith(EXTRA_PREFIXES)]
    if missing or extra:
        raise CheckpointError(
            f"{path}: parameters do not match the config: missing {missing}, unexpected {extra}"
        )
    for name, dest in model.params.items():
        a = arrays[name]
        if a.shape != dest.shape or a.dtype != dest.dtype:
            raise CheckpointError(
                f"{path}: parameter {name!r} is {a.dtype}{a.shape}, the config "
                f"needs {dest.dtype}{dest.shape}"
            )
        dest[...] = a
    return model, vocab, meta
