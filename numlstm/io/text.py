"""Plain-text corpora for word models (e.g. tiny-shakespeare): cleaning and a vocabulary.

Unlike PTB, raw text is not tokenised, so it is cleaned first: lower-case, punctuation replaced
by spaces (hyphens and apostrophes kept: "o'er", "well-a-day"), all whitespace collapsed, so
``clean_text(text).split()`` is the word stream. Rare words become ``<unk>`` (id 0).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["UNK", "build_word_vocab", "clean_text", "words_to_ids"]

UNK = "<unk>"
# Anything that is not a letter, digit, whitespace, hyphen or apostrophe. \w also matches "_",
# which is punctuation here, hence the alternative.
_PUNCT = re.compile(r"[^\w\s'-]|_")


def clean_text(text: str) -> str:
    """Lower-case, turn punctuation into spaces, collapse whitespace (newlines too).

    Kept: letters, digits, ``-`` and ``'``. Punctuation becomes a space rather than vanishing,
    so ``"end.Next"`` gives ``"end next"``, not ``"endnext"``.

    >>> clean_text("First Citizen:\\nBefore we proceed, hear me--speak! O'er")
    "first citizen before we proceed hear me--speak o'er"
    """
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def build_word_vocab(
    words: Iterable[str], min_count: int = 1, unk: str = UNK
) -> tuple[dict[str, int], list[str]]:
    """Vocabulary of the words that occur at least ``min_count`` times, plus ``unk``.

    Parameters
    ----------
    words : iterable of str
        The corpus as a word stream.
    min_count : int >= 1
        Rarer words are left out (they map to ``unk``).
    unk : str
        Out-of-vocabulary token; it always gets id 0 (also when it occurs in ``words``).

    Returns
    -------
    word_to_id : dict of str to int, length V
    id_to_word : list of str, length V
        ``unk`` first, then words by descending count, ties by ascending word.
    """
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be an integer >= 1, got {min_count!r}")
    counts = Counter(words)
    counts.pop(unk, None)
    kept = sorted(
        (kv for kv in counts.items() if kv[1] >= min_count), key=lambda kv: (-kv[1], kv[0])
    )
    id_to_word = [unk] + [w for w, _ in kept]
    return {w: i for i, w in enumerate(id_to_word)}, id_to_word


def words_to_ids(words: Sequence[str], word_to_id: Mapping[str, int], unk: str = UNK) -> np.ndarray:
    """Map words to ids, unknown words to ``word_to_id[unk]``.

    Returns
    -------
    numpy.ndarray, shape (N,), dtype int32
    """
    if unk not in word_to_id:
        raise ValueError(f"the vocabulary has no {unk!r} token for unknown words")
    unk_id, get = word_to_id[unk], word_to_id.get
    return np.fromiter((get(w, unk_id) for w in words), dtype=np.int32, count=len(words))
