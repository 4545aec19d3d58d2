"""Penn Treebank (PTB) reader with the semantics of the TensorFlow PTB tutorial.

The data are Mikolov's preprocessed Penn Treebank files from the ``simple-examples`` archive of
the RNNLM toolkit (``simple-examples/data/ptb.*.txt``): lower-cased text, numbers replaced by
``N``, rare words replaced by ``<unk>``, one sentence per line.

Reading rule (the tutorial's ``_read_words``)
    A file is decoded strictly as UTF-8, every ``"\\n"`` is replaced by ``" <eos> "`` and the
    result is split on whitespace. Every newline therefore yields exactly one ``<eos>`` token;
    blank and whitespace-only text adds nothing. On the real word files this gives
    929,589 / 73,760 / 82,430 tokens (train / valid / test) and a vocabulary of 10,000 words.

Vocabulary (the tutorial's ``_build_vocab``)
    Words of the *training* file, sorted by descending count, ties broken by the word in
    ascending order; ids are ``0 .. V-1``. On PTB id 0 is ``the``.

Out-of-vocabulary words
    PTB already maps rare words to ``<unk>``, so an unknown word in valid/test means the wrong or
    a corrupt file: :func:`file_to_word_ids` raises :class:`DataError` naming the word, the file
    and the line. Pass ``unk="<unk>"`` to map unknown words to that token's id instead.

Character level
    ``ptb.char.*.txt`` hold the same sentences with the characters separated by single spaces and
    ``_`` as the word-boundary symbol. They are read with the *same* rule, so each symbol is a
    token and every newline is one ``<eos>``. The char files end with a stray ``"\\n "``; the
    trailing space is whitespace and yields nothing, so there is exactly one ``<eos>`` per
    sentence, as for the word files: 5,017,482 / 393,042 / 442,423 tokens (train / valid /
    test), i.e. the symbols plus one ``<eos>`` per line. The char vocabulary, built from char
    train, has 50 entries (49 symbols plus ``<eos>``); id 0 is ``_``.

Truncated files
    A non-empty file whose text does not end with a newline (trailing spaces and tabs after the
    last newline are allowed, as in the char files) is treated as truncated and rejected, because
    every PTB file ends with one and a cut-off download otherwise silently loses the final
    ``<eos>``. Pass ``allow_unterminated=True`` to :func:`read_words` to accept such text. A file
    that ends inside a multi-byte UTF-8 sequence is reported as truncated too.

Batching (the tutorial's ``ptb_producer``)
    :func:`ptb_iterator` reshapes the id stream into ``batch_size`` rows of
    ``batch_len = len // batch_size`` tokens (the tail is dropped) and walks over it in windows of
    ``num_steps`` columns; targets are the inputs shifted by one token. The number of batches is
    :func:`epoch_size`.

Sentences
    :func:`sentence_batches` cuts the id stream at ``<eos>`` instead, one sentence per row,
    padded to the longest sentence of the batch, with the lengths for
    ``LanguageModel.loss(..., lengths=...)`` (docs/layers.md section 4.2).

Download and cache
    :func:`ensure_ptb` finds the files in a directory given by the user, or in the cache directory
    (:func:`default_data_dir`), downloading and extracting ``simple-examples.tgz`` there when
    needed. Only regular-file members named like a PTB file inside a ``data/`` directory are
    extracted, each written by name (never by member path) through a temporary file. The
    archive's own checksum is not known, so the integrity check is the sha256 of every extracted
    file against :data:`PTB_FILES`.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import os
import socket
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from operator import index as _as_index
from pathlib import Path, PurePosixPath

import numpy as np

__all__ = [
    "DataError",
    "PTBData",
    "PTB_FILES",
    "PTB_URL",
    "build_vocab",
    "default_data_dir",
    "ensure_ptb",
    "epoch_size",
    "file_to_word_ids",
    "load_ptb",
    "ptb_char_raw_data",
    "ptb_iterator",
    "ptb_raw_data",
    "read_words",
    "sentence_batches",
]

PathLike = str | os.PathLike

PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"

#: Expected sha256 of every PTB file, by file name.
PTB_FILES: dict[str, str] = {
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    "ptb.char.train.txt": "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9",
    "ptb.char.valid.txt": "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8",
    "ptb.char.test.txt": "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe",
}

EOS = "<eos>"

_LEVEL_FILES: dict[str, tuple[str, str, str]] = {
    "word": ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
    "char": ("ptb.char.train.txt", "ptb.char.valid.txt", "ptb.char.test.txt"),
}

# Largest archive member that will be extracted (the biggest PTB file is about 10 MB).
_MAX_MEMBER_BYTES = 64 * 1024 * 1024
_CHUNK = 1 << 20


class DataError(ValueError):
    """A data file or archive is missing, empty, truncated, undecodable or fails a check."""


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _read_text(path: PathLike, *, allow_unterminated: bool = False) -> str:
    """Read a whole file as strict UTF-8, raising :class:`DataError` on any problem."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{p}: is a directory, not a file") from None
    except OSError as e:
        raise DataError(f"{p}: cannot read file: {e}") from e
    if not data:
        raise DataError(f"{p}: file is empty")
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        what = (
            "truncated UTF-8 sequence at end of file"
            if e.end == len(data) and e.reason == "unexpected end of data"
            else f"invalid UTF-8 byte 0x{data[e.start]:02x}"
        )
        raise DataError(
            f"{p}: not valid UTF-8: {what} at byte offset {e.start} (line {line}, column {col})"
        ) from None
    if not text.strip():
        raise DataError(f"{p}: file contains only whitespace")
    if not allow_unterminated and not text.rstrip(" \t").endswith("\n"):
        raise DataError(
            f"{p}: file does not end with a newline (truncated?); every PTB file ends with one"
        )
    return text


def read_words(path: PathLike, *, allow_unterminated: bool = False) -> list[str]:
    """Read a text file as a flat list of tokens (the tutorial's ``_read_words``).

    Parameters
    ----------
    path : str or os.PathLike
        Text file, UTF-8.
    allow_unterminated : bool, optional
        Accept text that does not end with a newline (default: reject it as truncated).

    Returns
    -------
    list of str, length N
        The whitespace-separated tokens with ``"<eos>"`` in place of every newline.

    Raises
    ------
    DataError
        Missing, empty, whitespace-only, non-UTF-8 (names the byte offset and line) or
        truncated file.
    """
    return _read_text(path, allow_unterminated=allow_unterminated).replace("\n", f" {EOS} ").split()


def build_vocab(path: PathLike) -> dict[str, int]:
    """Build the vocabulary of a (training) file (the tutorial's ``_build_vocab``).

    Parameters
    ----------
    path : str or os.PathLike
        Training text file, read with :func:`read_words`.

    Returns
    -------
    dict of str to int, length V
        Word to id; ids ``0 .. V-1`` in order of descending count, ties by ascending word.
    """
    counts = Counter(read_words(path))
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {word: i for i, (word, _) in enumerate(ordered)}


def _locate_word(path: PathLike, word: str) -> int:
    """1-based line of the first occurrence of ``word`` as a token, or 0 if not found."""
    text = Path(path).read_text(encoding="utf-8")
    for lineno, line in enumerate(text.split("\n"), start=1):
        if word in line.split():
            return lineno
    return 0


def file_to_word_ids(
    path: PathLike, word_to_id: Mapping[str, int], *, unk: str | None = None
) -> np.ndarray:
    """Convert a text file to word ids (the tutorial's ``_file_to_word_ids``, made strict).

    Parameters
    ----------
    path : str or os.PathLike
        Text file, read with :func:`read_words`.
    word_to_id : Mapping[str, int]
        Vocabulary, e.g. from :func:`build_vocab`.
    unk : str or None, optional
        If None (default), a word not in ``word_to_id`` raises :class:`DataError` naming the
        word, the file and the line (PTB already maps rare words to ``<unk>``, so this means a
        wrong or corrupt file). If given, unknown words map to ``word_to_id[unk]``, which must
        exist.

    Returns
    -------
    numpy.ndarray, shape (N,), dtype int32
        One id per token, ``<eos>`` included.
    """
    if unk is not None and unk not in word_to_id:
        raise DataError(f"unk token {unk!r} is not in the vocabulary")
    words = read_words(path)
    n = len(words)
    if unk is None:
        try:
            ids = np.fromiter(map(word_to_id.__getitem__, words), dtype=np.int64, count=n)
        except KeyError as e:
            word = e.args[0]
            line = _locate_word(path, word)
            where = f"line {line}" if line else "end of a line"
            raise DataError(
                f"{path}: word {word!r} at {where} is not in the vocabulary "
                "(wrong or corrupt file? pass unk='<unk>' to map unknown words)"
            ) from None
    else:
        unk_id = word_to_id[unk]
        get = word_to_id.get
        ids = np.fromiter((get(w, unk_id) for w in words), dtype=np.int64, count=n)
    if n and (ids.min() < 0 or ids.max() > np.iinfo(np.int32).max):
        raise DataError(f"word ids of {path} do not fit in int32 or are negative")
    return ids.astype(np.int32)


# ----------------------------------------------------------------------------------------------
# Whole data set
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PTBData:
    """PTB id streams and vocabulary.

    Attributes
    ----------
    train, valid, test : numpy.ndarray, shape (N_split,), dtype int32
        Token ids of each split.
    word_to_id : dict of str to int, length V
        Vocabulary built from the training split.
    id_to_word : list of str, length V
        Inverse of ``word_to_id``.
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    word_to_id: dict[str, int]
    id_to_word: list[str]

    @property
    def vocab_size(self) -> int:
        """Number of distinct tokens V (10,000 for word-level PTB, 50 for char-level)."""
        return len(self.id_to_word)


def _check_level(level: str) -> tuple[str, str, str]:
    try:
        return _LEVEL_FILES[level]
    except (KeyError, TypeError):
        raise ValueError(f"level must be 'word' or 'char', got {level!r}") from None


def load_ptb(data_path: PathLike | None = None, level: str = "word") -> PTBData:
    """Load the three PTB splits and the training vocabulary.

    Parameters
    ----------
    data_path : str or os.PathLike or None, optional
        Directory holding the files. None: find or download them with :func:`ensure_ptb`.
    level : {"word", "char"}, optional
        ``"word"`` reads ``ptb.{train,valid,test}.txt``; ``"char"`` reads
        ``ptb.char.{train,valid,test}.txt`` (same reading rule; ``_`` separates words).

    Returns
    -------
    PTBData
        ``train``/``valid``/``test`` int32 arrays of shape (N_split,) and the vocabulary.
        Word level: 929,589 / 73,760 / 82,430 tokens, V = 10,000. Char level: 5,017,482 /
        393,042 / 442,423 tokens, V = 50.

    Raises
    ------
    DataError
        Missing or bad files, or a valid/test token that is not in the training vocabulary.
    """
    names = _check_level(level)
    directory = ensure_ptb(data_path, level=level)
    train_path, valid_path, test_path = (directory / n for n in names)
    word_to_id = build_vocab(train_path)
    id_to_word = [""] * len(word_to_id)
    for word, i in word_to_id.items():
        id_to_word[i] = word
    return PTBData(
        train=file_to_word_ids(train_path, word_to_id),
        valid=file_to_word_ids(valid_path, word_to_id),
        test=file_to_word_ids(test_path, word_to_id),
        word_to_id=word_to_id,
        id_to_word=id_to_word,
    )


def ptb_raw_data(
    data_path: PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Word-level PTB as in the tutorial's ``ptb_raw_data``.

    Parameters
    ----------
    data_path : str or os.PathLike or None, optional
        Directory holding ``ptb.{train,valid,test}.txt``; None: use :func:`ensure_ptb`.

    Returns
    -------
    train, valid, test : numpy.ndarray, shape (N_split,), dtype int32
    vocab_size : int
        10,000 on the real data.
    """
    d = load_ptb(data_path, level="word")
    return d.train, d.valid, d.test, d.vocab_size


def ptb_char_raw_data(
    data_path: PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Character-level PTB, same 4-tuple as :func:`ptb_raw_data`.

    Parameters
    ----------
    data_path : str or os.PathLike or None, optional
        Directory holding ``ptb.char.{train,valid,test}.txt``; None: use :func:`ensure_ptb`.

    Returns
    -------
    train, valid, test : numpy.ndarray, shape (N_split,), dtype int32
    vocab_size : int
        50 on the real data.
    """
    d = load_ptb(data_path, level="char")
    return d.train, d.valid, d.test, d.vocab_size


# ----------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    try:
        v = _as_index(value)
    except TypeError:
        raise TypeError(f"{name} must be a positive integer, got {value!r}") from None
    if v <= 0:
        raise ValueError(f"{name} must be a positive integer, got {v}")
    return v


def epoch_size(num_tokens: int, batch_size: int, num_steps: int) -> int:
    """Number of ``(x, y)`` batches :func:`ptb_iterator` yields for ``num_tokens`` tokens.

    Parameters
    ----------
    num_tokens : int
        Length of the id stream (>= 0).
    batch_size, num_steps : int
        Positive batch dimensions.

    Returns
    -------
    int
        ``((num_tokens // batch_size) - 1) // num_steps``, clamped at 0 (never negative).
    """
    n = _as_index(num_tokens)
    if n < 0:
        raise ValueError(f"num_tokens must be >= 0, got {n}")
    b = _positive_int(batch_size, "batch_size")
    s = _positive_int(num_steps, "num_steps")
    return max(0, ((n // b) - 1) // s)


def ptb_iterator(
    raw_data: np.ndarray, batch_size: int, num_steps: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate over an id stream in batches (the tutorial's ``ptb_producer``).

    ``data = raw_data[:batch_len * batch_size].reshape(batch_size, batch_len)`` with
    ``batch_len = len(raw_data) // batch_size``; batch ``i`` is
    ``x = data[:, i*num_steps:(i+1)*num_steps]`` and ``y`` the same window shifted right by one.
    Arguments are validated when this function is called, not on the first ``next``.

    Parameters
    ----------
    raw_data : array_like of int, shape (N,)
        Token ids (non-negative, fit in int32).
    batch_size : int
        Number of parallel streams B (> 0).
    num_steps : int
        Unroll length T (> 0).

    Yields
    ------
    x, y : numpy.ndarray, shape (B, T), dtype int32, C-contiguous
        Inputs and next-token targets; ``epoch_size(N, B, T)`` pairs in all.

    Raises
    ------
    TypeError
        ``batch_size``/``num_steps`` not integers, or ``raw_data`` not of integer dtype.
    ValueError
        Non-positive sizes, ``raw_data`` not 1-D, negative or too large ids, or an epoch of zero
        batches ("decrease batch_size or num_steps").
    """
    b = _positive_int(batch_size, "batch_size")
    s = _positive_int(num_steps, "num_steps")
    arr = np.asarray(raw_data)
    if arr.ndim != 1:
        raise ValueError(f"raw_data must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"raw_data must have an integer dtype, got {arr.dtype}")
    n = arr.shape[0]
    steps = epoch_size(n, b, s)
    if steps == 0:
        raise ValueError(
            f"epoch_size == 0 for {n} tokens with batch_size={b}, num_steps={s} "
            f"(batch_len={n // b}): decrease batch_size or num_steps"
        )
    if arr.min() < 0 or arr.max() > np.iinfo(np.int32).max:
        raise ValueError("raw_data ids must be non-negative and fit in int32")
    batch_len = n // b
    data = arr[: batch_len * b].astype(np.int32, copy=False).reshape(b, batch_len)
    return _batches(data, steps, s)


def _batches(
    data: np.ndarray, steps: int, num_steps: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for i in range(steps):
        lo = i * num_steps
        x = np.ascontiguousarray(data[:, lo : lo + num_steps])
        y = np.ascontiguousarray(data[:, lo + 1 : lo + num_steps + 1])
        yield x, y


# ----------------------------------------------------------------------------------------------
# Batches of sentences (variable lengths)
# ----------------------------------------------------------------------------------------------


def _id_arg(value: object, name: str) -> int:
    """A non-negative integer id (not a bool)."""
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a non-negative integer id, got {value!r}")
    try:
        v = _as_index(value)
    except TypeError:
        raise TypeError(f"{name} must be a non-negative integer id, got {value!r}") from None
    if v < 0:
        raise ValueError(f"{name} must be a non-negative integer id, got {v}")
    return v


def sentence_batches(
    ids: np.ndarray,
    eos_id: int,
    batch_size: int,
    *,
    pad_id: int = 0,
    bucket: bool = True,
    shuffle_rng: np.random.Generator | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Batches of whole sentences, one per row, padded, with their lengths.

    The id stream is cut after every ``eos_id``. A sentence ``w_1 .. w_k <eos>`` becomes one
    row with ``x = <eos> w_1 .. w_k`` and ``y = w_1 .. w_k <eos>`` (length k + 1): ``<eos>``
    stands for the sentence start in x, every word and the final ``<eos>`` is predicted from
    the words before it *in the same sentence* only (the state starts at zero for each row;
    nothing is carried from the previous sentence). A trailing piece without ``<eos>``,
    ``w_1 .. w_k``, is a last sentence with ``x = <eos> w_1 .. w_{k-1}``, ``y = w_1 .. w_k``.
    So every id of ``ids`` is the target of exactly one valid position: the lengths of all
    batches add up to ``len(ids)``, the number of words that a per-word perplexity over the
    valid positions counts (``<eos>`` included, as the continuous model of
    :func:`ptb_iterator` counts it): ``ppl = exp(sum of loss * B / sum of lengths)`` with
    ``loss`` from ``LanguageModel.loss(x, y, state, lengths=lengths)`` and B the batch's rows.

    Parameters
    ----------
    ids : array_like of int, shape (N,)
        Token ids (non-negative, fit in int32), N >= 1.
    eos_id : int
        The id of ``<eos>`` (``word_to_id["<eos>"]``).
    batch_size : int
        Sentences per batch (> 0); the last batch may have fewer.
    pad_id : int
        The id written at padded positions of x and y (any id of the vocabulary; the loss
        ignores them). Default 0.
    bucket : bool
        True (default): sort the sentences by length (ties in stream order) before grouping
        them, so that a batch holds sentences of nearly equal length and padding is small.
        False: group them in stream order.
    shuffle_rng : numpy.random.Generator or None
        If given, the sentences are shuffled before the (stable) sort or grouping, and the
        batches' order is shuffled; None keeps everything deterministic.

    Yields
    ------
    x, y : numpy.ndarray, shape (b, T), dtype int32, C-contiguous
        Inputs and targets, b <= batch_size rows, T the batch's longest sentence.
    lengths : numpy.ndarray, shape (b,), dtype int64
        Valid positions per row, 1 <= lengths[r] <= T.

    Raises
    ------
    TypeError
        ``ids`` not of integer dtype; ``eos_id``/``pad_id``/``batch_size`` not integers;
        ``bucket`` not a bool; ``shuffle_rng`` not a Generator.
    ValueError
        ``ids`` empty, not 1-D, negative or too large ids; negative ``eos_id``/``pad_id``;
        non-positive ``batch_size``. All checked when this function is called.
    """
    b = _positive_int(batch_size, "batch_size")
    eos = _id_arg(eos_id, "eos_id")
    pad = _id_arg(pad_id, "pad_id")
    if not isinstance(bucket, bool | np.bool_):
        raise TypeError(f"bucket must be a bool, got {bucket!r}")
    if shuffle_rng is not None and not isinstance(shuffle_rng, np.random.Generator):
        raise TypeError(
            f"shuffle_rng must be a numpy.random.Generator or None, got {type(shuffle_rng)}"
        )
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("ids must not be empty")
    if not np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        raise TypeError(f"ids must have an integer dtype, got {arr.dtype}")
    limit = np.iinfo(np.int32).max
    if arr.min() < 0 or arr.max() > limit or max(eos, pad) > limit:
        raise ValueError("ids, eos_id and pad_id must be non-negative and fit in int32")
    arr = arr.astype(np.int32, copy=False)
    # Sentence k is arr[starts[k]:ends[k]]: cut after every <eos>, plus a trailing piece.
    ends = np.flatnonzero(arr == eos) + 1
    if ends.size == 0 or ends[-1] != arr.size:
        ends = np.append(ends, arr.size)
    starts = np.concatenate(([0], ends[:-1]))
    lengths = ends - starts  # each sentence's words, its <eos> included: every id once
    order = np.arange(lengths.size)
    if shuffle_rng is not None:
        order = shuffle_rng.permutation(order)
    if bucket:
        order = order[np.argsort(lengths[order], kind="stable")]
    groups = [order[lo : lo + b] for lo in range(0, order.size, b)]
    if shuffle_rng is not None:
        groups = [groups[k] for k in shuffle_rng.permutation(len(groups))]
    return _sentence_batches(arr, starts, lengths, groups, eos, pad)


def _sentence_batches(
    arr: np.ndarray, starts: np.ndarray, lengths: np.ndarray, groups: list, eos: int, pad: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    for group in groups:
        n = lengths[group].astype(np.int64)
        T = int(n.max())
        x = np.full((group.size, T), pad, np.int32)
        y = np.full((group.size, T), pad, np.int32)
        for r, k in enumerate(group.tolist()):
            s, m = int(starts[k]), int(lengths[k])
            y[r, :m] = arr[s : s + m]  # the sentence's words, its <eos> last
            x[r, 0] = eos  # the sentence start
            x[r, 1:m] = arr[s : s + m - 1]  # each word predicts the next
        yield x, y, n


# ----------------------------------------------------------------------------------------------
# Download and cache
# ----------------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """Directory where downloaded PTB files are cached.

    Returns
    -------
    pathlib.Path
        ``$NUMLSTM_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/numlstm/ptb``, else
        ``~/.cache/numlstm/ptb``.
    """
    env = os.environ.get("NUMLSTM_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "numlstm" / "ptb"


def _missing(directory: Path, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if not (directory / n).is_file()]


def ensure_ptb(
    data_dir: PathLike | None = None,
    *,
    url: str = PTB_URL,
    archive_sha256: str | None = None,
    file_sha256: Mapping[str, str] | None = PTB_FILES,
    download: bool = True,
    level: str = "word",
    download_timeout: float = 900.0,
) -> Path:
    """Find (and if needed download) the PTB files for ``level``; return their directory.

    A ``data_dir`` given by the caller is used as-is: it must already hold the train/valid/test
    files of ``level`` (nothing is downloaded into it and the files are not checksummed). With
    ``data_dir=None`` the cache directory :func:`default_data_dir` is used; if files are missing
    there and ``download`` is true, the ``simple-examples.tgz`` archive at ``url`` (``http://``,
    ``https://`` or ``file://``) is fetched to a temporary file in the cache directory and the
    PTB files are extracted from it. Files already in the cache are checked against
    ``file_sha256`` (hashed once per process; an edited file is detected by its changed
    mtime/ctime and refused with a DataError saying to delete it).

    Extraction is restricted: only regular-file members whose base name is a PTB file name
    (a key of :data:`PTB_FILES`) and whose parent directory is named ``data`` are read; links,
    other members and names containing ``..`` or absolute paths are ignored. Each file is
    written by its base name via a temporary file and ``os.replace``. ``extractall`` is never
    used. The archive's own checksum is not published, so integrity rests on the per-file
    sha256 check against ``file_sha256`` (``archive_sha256`` is checked when given).

    Parameters
    ----------
    data_dir : str or os.PathLike or None, optional
        Directory with the files, or None for the cache directory.
    url : str, optional
        Archive URL (default :data:`PTB_URL`).
    archive_sha256 : str or None, optional
        Expected sha256 of the archive, checked when given.
    file_sha256 : Mapping[str, str] or None, optional
        Expected sha256 per extracted file name; names not in it (or None) are not checked.
    download : bool, optional
        Allow downloading into the cache directory.
    level : {"word", "char"}, optional
        Which files are required.
    download_timeout : float, optional
        Total seconds the download may take (connection, headers and body together); a
        server that trickles bytes is cut off at this deadline (default 900).

    Returns
    -------
    pathlib.Path
        Directory containing the required files.

    Raises
    ------
    DataError
        Files missing (and no download allowed), download failure (also a connection cut
        mid-body and the total deadline), corrupt or truncated archive, archive or file
        checksum mismatch (a bad file is not left behind), an edited cached file, or a cache
        directory that cannot be used (names NUMLSTM_DATA_DIR when that set it).
    """
    names = _check_level(level)
    if isinstance(download_timeout, bool) or not (
        isinstance(download_timeout, int | float) and 0 < download_timeout < float("inf")
    ):
        raise ValueError(f"download_timeout must be a finite number > 0, got {download_timeout!r}")
    if data_dir is not None:
        directory = Path(data_dir).expanduser()
        if not directory.is_dir():
            raise DataError(f"PTB data directory {directory} does not exist")
        missing = _missing(directory, names)
        if missing:
            raise DataError(f"PTB data directory {directory} lacks: {', '.join(missing)}")
        return directory

    directory = default_data_dir()
    try:
        missing = _missing(directory, names)
        if not missing:
            _verify_cached(directory, names, file_sha256)
            return directory
        if not download:
            raise DataError(
                f"PTB files missing in {directory}: {', '.join(missing)}. Download them with "
                "ensure_ptb(download=True), set NUMLSTM_DATA_DIR, or pass --data-dir with a "
                f"directory holding {', '.join(names)}"
            )
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(f"{directory} exists and is not a directory")
        directory.mkdir(parents=True, exist_ok=True)
        _download_and_extract(url, directory, archive_sha256, file_sha256, download_timeout)
        missing = _missing(directory, names)
    except DataError:
        raise
    except OSError as e:  # a file where the folder should be, no permission, read-only, ...
        raise DataError(
            f"cannot use the PTB cache directory {directory} ({_cache_source()}): "
            f"{e.strerror or e}. Set NUMLSTM_DATA_DIR to a writable folder, or pass "
            "--data-dir with a directory holding the PTB files"
        ) from e
    if missing:
        raise DataError(f"archive {url} did not contain: {', '.join(missing)}")
    return directory


def _cache_source() -> str:
    """Where the cache directory's location came from, for error messages."""
    if os.environ.get("NUMLSTM_DATA_DIR"):
        return "from the environment variable NUMLSTM_DATA_DIR"
    if os.environ.get("XDG_CACHE_HOME"):
        return "from XDG_CACHE_HOME; set NUMLSTM_DATA_DIR to choose another"
    return "the default; set NUMLSTM_DATA_DIR to choose another"


# (path, size, mtime_ns, inode, ctime_ns) -> sha256 of files this process already hashed. Any
# edit changes the mtime or ctime (ctime cannot be set back by the user), so it re-hashes.
_VERIFIED: dict[tuple[str, int, int, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    digest = _VERIFIED.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        digest = _VERIFIED[key] = h.hexdigest()
    return digest


def _verify_cached(
    directory: Path, names: tuple[str, ...], file_sha256: Mapping[str, str] | None
) -> None:
    """Check cached files against their known sha256 (hashed once per process per version)."""
    if file_sha256 is None:
        return
    for name in names:
        expected = file_sha256.get(name)
        if expected is None:
            continue
        path = directory / name
        digest = _file_sha256(path)
        if digest != expected.lower():
            raise DataError(
                f"cached PTB file {path} has sha256 {digest}, expected {expected.lower()}: it "
                f"was edited or damaged. Delete it (rm {path}) and run again to download a "
                "fresh copy, or pass --data-dir to use files of your own (not checksummed)"
            )


# Seconds one read (or the connection) may wait for data; the whole download has its own deadline.
_READ_TIMEOUT = 60.0
# Errors a download can end in: network and file errors, HTTP protocol errors (a body cut
# mid-chunk raises http.client.IncompleteRead, a bad status line BadStatusLine, ...).
_DOWNLOAD_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError, ValueError, EOFError)


class _Deadline:
    """Shuts down every socket of a download when its total time is up.

    A per-read timeout does not bound a download: a server sending one byte a second never
    lets a read time out. At the deadline a timer thread calls ``shutdown`` on the sockets,
    which ends any blocked read (connect, headers or body) with an error or EOF.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def register(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                self._shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def check(self) -> None:
        if self.expired or time.monotonic() > self.expires:
            self.expired = True
            raise TimeoutError(f"the download took longer than {self.seconds:g} s")


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: object, deadline: _Deadline, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._deadline.register(self.sock)


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: object, deadline: _Deadline, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._deadline.register(self.sock)


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """urllib opener whose HTTP(S) connections register their sockets with ``deadline``."""

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):  # type: ignore[no-untyped-def]
            return self.do_open(functools.partial(_HTTPConnection, deadline=deadline), req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):  # type: ignore[no-untyped-def]
            return self.do_open(
                functools.partial(_HTTPSConnection, deadline=deadline),
                req,
                context=self._context,
            )

    return urllib.request.build_opener(HTTPHandler, HTTPSHandler)


def _download(url: str, dest: Path, archive_sha256: str | None, timeout: float = 900.0) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise ValueError(f"unsupported URL scheme {scheme!r} in {url} (use http, https or file)")
    print(f"numlstm: downloading {url} -> {dest.parent}", file=sys.stderr, flush=True)
    h = hashlib.sha256()
    received = 0
    length = None
    with _Deadline(timeout) as deadline:
        try:
            with (
                _opener(deadline).open(url, timeout=min(_READ_TIMEOUT, timeout)) as resp,
                open(dest, "wb") as out,
            ):
                length = resp.headers.get("Content-Length")
                read = getattr(resp, "read1", resp.read)  # read1: returns what has arrived
                while True:
                    deadline.check()
                    chunk = read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
            deadline.check()
        except _DOWNLOAD_ERRORS as e:
            if deadline.expired:
                raise DataError(
                    f"could not download {url}: no complete answer within the "
                    f"{timeout:g} s deadline ({received} bytes received)"
                ) from e
            raise DataError(f"could not download {url}: {type(e).__name__}: {e}") from e
    if length is not None and length.isdigit() and int(length) != received:
        raise DataError(f"download of {url} truncated: got {received} of {length} bytes")
    if archive_sha256 is not None and h.hexdigest() != archive_sha256.lower():
        raise DataError(
            f"archive {url} has sha256 {h.hexdigest()}, expected {archive_sha256.lower()}"
        )


def _member_target(member: tarfile.TarInfo) -> str | None:
    """PTB file name for an archive member, or None if the member must be skipped."""
    if not member.isreg():
        return None
    name = member.name.replace("\\", "/")
    if name.startswith("/"):
        return None
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if len(parts) < 2 or ".." in parts:
        return None
    if parts[-1] not in PTB_FILES or parts[-2] != "data":
        return None
    return parts[-1]


def _extract_member(
    tf: tarfile.TarFile,
    member: tarfile.TarInfo,
    target: Path,
    expected: str | None,
) -> None:
    if member.size > _MAX_MEMBER_BYTES:
        raise DataError(f"archive member {member.name} is too large ({member.size} bytes)")
    src = tf.extractfile(member)
    if src is None:  # pragma: no cover - isreg() members always have data
        raise DataError(f"archive member {member.name} cannot be read")
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, src:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                h.update(chunk)
        digest = h.hexdigest()
        if expected is not None and digest != expected.lower():
            raise DataError(
                f"{target.name} from the archive has sha256 {digest}, expected {expected.lower()}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _download_and_extract(
    url: str,
    directory: Path,
    archive_sha256: str | None,
    file_sha256: Mapping[str, str] | None,
    timeout: float = 900.0,
) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".simple-examples.", suffix=".tgz.part")
    os.close(fd)
    archive = Path(tmp_name)
    try:
        _download(url, archive, archive_sha256, timeout)
        seen: set[str] = set()
        try:
            with tarfile.open(archive, mode="r:gz") as tf:
                for member in tf:
                    name = _member_target(member)
                    if name is None:
                        continue
                    if name in seen:
                        raise DataError(f"archive {url} contains {name} more than once")
                    seen.add(name)
                    expected = None if file_sha256 is None else file_sha256.get(name)
                    _extract_member(tf, member, directory / name, expected)
        except DataError:
            raise
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise DataError(f"archive {url} is corrupt or truncated: {e}") from e
        if not seen:
            raise DataError(f"archive {url} contains no PTB files under a data/ directory")
    finally:
        archive.unlink(missing_ok=True)
