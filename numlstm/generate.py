"""Text generation: sampling the next word, priming the network, words <-> ids, saved models.

    model, id_to_word, meta = load_model("ptb.npz")
    word_to_id = {w: i for i, w in enumerate(id_to_word)}
    ids = generate(model, encode("the company said", word_to_id), 50, temperature=0.8, seed=1)
    print(decode(ids, id_to_word))

Sampling rule (``docs/generation.md``): ``p = softmax(logits / T)`` in float64, then optionally
keep only the ``top_k`` most probable ids, then only the nucleus of probability ``top_p``,
renormalise and draw with ``rng``. ``T = 0`` is greedy (argmax). Among equal probabilities the
lower id ranks first, so the kept set never depends on the sort algorithm.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .fast.blas import matmul_into
from .fast.workspace import Workspace
from .gru import gru_forward_unchecked
from .io.checkpoint import CheckpointError
from .io.saving import load_model, save_model
from .io.text import clean_text
from .lstm import lstm_forward_unchecked
from .lstmp import lstmp_forward_unchecked
from .model import LanguageModel, State
from .rnn import rnn_forward_unchecked

__all__ = [
    "decode",
    "encode",
    "generate",
    "generate_main",
    "iter_generate",
    "load_model",
    "sample_next",
    "save_model",
]

UNK = "<unk>"
EOS = "<eos>"
_NUCLEUS_START = 64  # top-p first looks among this many ids and widens only if needed

# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------


def _check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, int | float | np.number):
        raise TypeError(f"temperature must be a number, got {temperature!r}")
    if not temperature >= 0 or not np.isfinite(temperature):  # `not >=` also rejects NaN
        raise ValueError(f"temperature must be finite and >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and (
        isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1
    ):
        raise ValueError(f"top_k must be an integer >= 1 (or None), got {top_k!r}")
    if top_p is not None and (
        isinstance(top_p, bool)
        or not isinstance(top_p, int | float | np.number)
        or not 0 < top_p <= 1
    ):
        raise ValueError(f"top_p must be in (0, 1] (or None), got {top_p!r}")


def _top_ids(p: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest entries of p (V,), largest first; equal values: lower id first."""
    if k >= p.size:
        cand = np.arange(p.size)
    else:
        kth = np.partition(p, p.size - k)[p.size - k]  # the k-th largest value, O(V)
        cand = np.flatnonzero(p >= kth)  # ascending ids; more than k when kth is tied
    v = -p[cand]
    order = np.argsort(v)  # quicksort: 3-4x faster than a stable sort on 10k floats
    s = v[order]
    if np.any(s[1:] == s[:-1]):  # ties (rare): a stable sort keeps them in ascending id order
        order = np.argsort(v, kind="stable")
    return cand[order[:k]]


def _nucleus(p: np.ndarray, top_p: float) -> np.ndarray:
    """Smallest prefix of the ids sorted by p (normalised, (V,)) with cumulative mass >= top_p.

    Sorting all V ids each step is the slow part of top-p, so look among the 64 most probable
    first and widen only while their mass is still short of top_p.
    """
    k = min(_NUCLEUS_START, p.size)
    while True:
        ids = _top_ids(p, k)
        cum = np.cumsum(p[ids])
        n = int(np.searchsorted(cum, top_p))  # first index with cum >= top_p
        if n < k:
            return ids[: n + 1]
        smallest = p[ids[-1]]
        if k == p.size or smallest == 0:  # rounding left the mass just short: keep them all
            return ids
        # Every id not yet looked at has p <= smallest, so at least `more` of them are needed.
        more = int(np.ceil((top_p - cum[-1]) / smallest))
        k = min(max(4 * k, k + more), p.size)


def _check_logits_finite(z: np.ndarray) -> None:
    """Raise ValueError unless z holds at least one finite value and no NaN or +inf.

    One O(V) reduction: NaN propagates to ``max``; +inf and an all -inf row also land here.
    """
    top = z.max()
    if not np.isfinite(top):
        if np.isnan(top):
            what = "NaN (are the model's weights finite?)"
        elif top > 0:
            what = "+inf"
        else:
            what = "only -inf (no token is possible)"
        raise ValueError(
            f"logits hold {what}; they must hold at least one finite value and no NaN or +inf"
        )


def _sample(
    logits: np.ndarray,
    rng: np.random.Generator,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
) -> int:
    """``sample_next`` without argument checks; non-finite logits are still refused."""
    _check_logits_finite(logits)
    if temperature == 0:
        return int(np.argmax(logits))  # first maximum: ties go to the lower id
    z = logits.astype(np.float64)  # float64: exp of float32 logits / small T loses the tail
    z /= temperature
    z -= z.max()  # the largest term becomes exp(0) = 1: no overflow
    p = np.exp(z, out=z)
    p /= p.sum()
    ids = None  # None: all V ids are candidates
    if top_k is not None and top_k < p.size:
        ids = _top_ids(p, top_k)
    if top_p is not None and top_p < 1:
        if ids is None:
            ids = _nucleus(p, top_p)
        else:  # nucleus of the renormalised top-k distribution (ids already sorted)
            q = p[ids]
            n = int(np.searchsorted(np.cumsum(q / q.sum()), top_p))
            ids = ids[: n + 1]
    cum = np.cumsum(p if ids is None else p[ids])  # renormalising = scaling the draw by cum[-1]
    j = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), cum.size - 1)
    return j if ids is None else int(ids[j])


def sample_next(
    logits: np.ndarray,
    rng: np.random.Generator,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> int:
    """Draw the next token id from unnormalised scores.

    Parameters
    ----------
    logits : numpy.ndarray, shape (V,)
        Scores z; -inf marks an impossible token. NaN and +inf are rejected.
    rng : numpy.random.Generator
        Source of the one uniform number each call draws (``rng.random()``).
    temperature : float, default 1.0
        T in ``softmax(z / T)``; 0 returns ``argmax(z)`` (greedy), T > 1 flattens.
    top_k : int or None
        Keep only the k most probable ids (ties: the lower id ranks first).
    top_p : float in (0, 1] or None
        Keep the smallest set of most probable ids whose probability sums to >= top_p (at
        least one id). Applied after ``top_k``, to the renormalised top-k distribution.

    Returns
    -------
    int
        A token id in ``[0, V)``.

    Raises
    ------
    ValueError
        Bad temperature / top_k / top_p, logits not a non-empty 1-D float array, or logits
        holding NaN / +inf / only -inf.
    """
    _check_sampling(temperature, top_k, top_p)
    z = np.asarray(logits)
    if z.ndim != 1 or z.size == 0 or not np.issubdtype(z.dtype, np.floating):
        raise ValueError(f"logits must be a non-empty 1-D float array, got {z.dtype}{z.shape}")
    return _sample(z, rng, temperature, top_k, top_p)  # _sample refuses NaN / +inf / all -inf


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------


class _Stepper:
    """Runs the network one token at a time.

    ``model.logits`` validates its input and builds a (B, T, V) result on every call, which is
    most of the cost of a single-token step; this calls the same engine functions directly on
    ids that are known to be valid (the prime was checked by ``model.logits``, sampled ids come
    from ``range(V)``). Buffers come from a private ``Workspace``, never the model's.
    """

    def __init__(self, model: LanguageModel) -> None:
        self.model = model
        self.ws = Workspace()
        self.z = np.empty((1, model.vocab_size), model.dtype)

    def step(self, token: int, state: State) -> tuple[np.ndarray, State]:
        """Feed one token id; returns (next-token logits (V,), new state)."""
        m, p = self.model, self.model.params
        E, P = m.embedding_size, m.output_size  # both H by default
        x = p["embedding"][token : token + 1].reshape(1, 1, E)  # (T=1, B=1, E) row view
        new_state: State = []
        for layer, s in enumerate(state):
            Wx, Wh, tag = p[f"l{layer}.Wx"], p[f"l{layer}.Wh"], f"l{layer}"
            if m._lstmp:  # P1-P8 (peepholes, clips, projection)
                x, h, c, _ = lstmp_forward_unchecked(
                    x, s[0], s[1], Wx, Wh, p[f"l{layer}.b"], m.forget_bias,
                    p.get(f"l{layer}.peepholes"), m.cell_clip, p.get(f"l{layer}.W_proj"),
                    m.proj_clip, None)  # fmt: skip
                new_state.append((h, c))
            elif m.cell == "lstm":
                x, h, c, _ = lstm_forward_unchecked(
                    x, s[0], s[1], Wx, Wh, p[f"l{layer}.b"], m.forget_bias, self.ws, tag
                )
                new_state.append((h, c))
            elif m.cell == "rnn":  # R1-R2
                x, h, _ = rnn_forward_unchecked(
                    x, s[0], Wx, Wh, p[f"l{layer}.b"], None, self.ws, tag
                )
                new_state.append((h,))
            else:
                bx, bh = p[f"l{layer}.bx"], p[f"l{layer}.bh"]
                x, h, _ = gru_forward_unchecked(
                    x, s[0], Wx, Wh, bx, bh, m.reset_after, self.ws, tag
                )
                new_state.append((h,))
        matmul_into(x.reshape(1, P), m.softmax_weight(), self.z)  # (S1), as GEMV; tied (T1)
        self.z += p["softmax_b"]
        return self.z[0], new_state


# A prime is fed through the network in chunks whose logits hold at most this many entries
# (16 MB in float32), so memory does not grow with the prime's length.
_PRIME_CHUNK_ENTRIES = 4_000_000


def _check_generate_args(
    model: LanguageModel,
    prime_ids: Sequence[int] | np.ndarray,
    num_words: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    stop_id: int | None,
) -> np.ndarray:
    _check_sampling(temperature, top_k, top_p)
    if isinstance(num_words, bool) or not isinstance(num_words, int | np.integer) or num_words < 0:
        raise ValueError(f"num_words must be an integer >= 0, got {num_words!r}")
    V = model.vocab_size
    if stop_id is not None and not (isinstance(stop_id, int | np.integer) and 0 <= stop_id < V):
        raise ValueError(f"stop_id must be a token id in [0, {V}), got {stop_id!r}")
    prime = np.asarray(prime_ids)
    if prime.size == 0:
        raise ValueError("prime_ids must hold at least one token id (for PTB try '<eos>')")
    if prime.ndim != 1:
        raise ValueError(f"prime_ids must be 1-D, got shape {prime.shape}")
    return prime


def _run_prime(model: LanguageModel, prime: np.ndarray) -> tuple[np.ndarray, State]:
    """Feed the prime from the zero state; return (logits after its last token (V,), state).

    The prime goes through ``model.logits`` (which validates the ids) in chunks, carrying the
    state, so only one chunk's (chunk, V) logits exist at a time, never the whole prime's.
    """
    chunk = max(1, _PRIME_CHUNK_ENTRIES // model.vocab_size)
    state = model.init_state(1)
    for lo in range(0, prime.shape[0], chunk):
        logits, state = model.logits(prime[None, lo : lo + chunk], state)
    return np.array(logits[0, -1]), state


def iter_generate(
    model: LanguageModel,
    prime_ids: Sequence[int] | np.ndarray,
    num_words: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | np.random.Generator | None = None,
    stop_id: int | None = None,
) -> Iterator[int]:
    """:func:`generate` as an iterator: yields each id as soon as it is sampled.

    The arguments are checked and the prime is run when this is called, not on the first
    ``next``. The ids are the same as ``generate`` returns for the same arguments.
    """
    prime = _check_generate_args(model, prime_ids, num_words, temperature, top_k, top_p, stop_id)
    rng = np.random.default_rng(seed)
    z, state = _run_prime(model, prime)
    return _generate_ids(model, z, state, rng, int(num_words), temperature, top_k, top_p, stop_id)


def _generate_ids(
    model: LanguageModel,
    z: np.ndarray,
    state: State,
    rng: np.random.Generator,
    num_words: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    stop_id: int | None,
) -> Iterator[int]:
    stepper = _Stepper(model)
    for n in range(1, num_words + 1):
        token = _sample(z, rng, temperature, top_k, top_p)
        yield token
        if token == stop_id or n == num_words:
            return
        z, state = stepper.step(token, state)


def generate(
    model: LanguageModel,
    prime_ids: Sequence[int] | np.ndarray,
    num_words: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | np.random.Generator | None = None,
    stop_id: int | None = None,
) -> list[int]:
    """Continue a primed sequence word by word.

    The prime goes through the network from the zero state (in chunks of ``model.logits``
    calls that carry the state, so memory does not grow with its length); then each sampled
    id is fed back with the carried state. :func:`iter_generate` yields the ids one by one.

    Parameters
    ----------
    model : LanguageModel
    prime_ids : sequence of int, length T >= 1
        Context ids (e.g. from :func:`encode`). An empty prime raises ValueError; for PTB,
        ``[word_to_id["<eos>"]]`` is the natural "start of a sentence" prime.
    num_words : int >= 0
        Maximum number of ids to generate.
    temperature, top_k, top_p :
        As in :func:`sample_next`.
    seed : int, numpy.random.Generator or None
        Same seed, model and arguments give the same ids. None: fresh entropy.
    stop_id : int or None
        Stop as soon as this id (e.g. ``<eos>``) is sampled; it is *included* as the last id.

    Returns
    -------
    list of int, length <= num_words
        The generated ids only (the prime is not repeated).

    Raises
    ------
    ValueError
        Bad arguments, or logits holding NaN / +inf (a model with non-finite weights).
    """
    return list(
        iter_generate(
            model, prime_ids, num_words, temperature=temperature, top_k=top_k, top_p=top_p,
            seed=seed, stop_id=stop_id,
        )
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Words <-> ids
# ----------------------------------------------------------------------------------------------


def encode(
    text: str, word_to_id: Mapping[str, int], *, unk: str = UNK, on_unknown: str = "unk"
) -> list[int]:
    """Split ``text`` on whitespace and map each word to its id.

    Words are looked up verbatim (no lower-casing); clean the text the way the training data
    was cleaned first (e.g. :func:`numlstm.io.text.clean_text`).

    Parameters
    ----------
    text : str
    word_to_id : Mapping[str, int]
    unk : str, default "<unk>"
        Token that stands for out-of-vocabulary words.
    on_unknown : {"unk", "error"}, default "unk"
        "unk": map unknown words to ``word_to_id[unk]`` and ``warnings.warn`` listing them.
        "error": raise ValueError listing them.

    Returns
    -------
    list of int, one id per word
    """
    if on_unknown not in ("unk", "error"):
        raise ValueError(f"on_unknown must be 'unk' or 'error', got {on_unknown!r}")
    words = text.split()
    unknown = list(dict.fromkeys(w for w in words if w not in word_to_id))  # unique, in order
    if not unknown:
        return [int(word_to_id[w]) for w in words]
    listed = ", ".join(map(repr, unknown[:10])) + (", ..." if len(unknown) > 10 else "")
    if on_unknown == "error":
        raise ValueError(f"{len(unknown)} word(s) not in the vocabulary: {listed}")
    if unk not in word_to_id:
        raise ValueError(
            f"word(s) {listed} not in the vocabulary, which has no {unk!r} token to map them to"
        )
    warnings.warn(f"word(s) not in the vocabulary, mapped to {unk!r}: {listed}", stacklevel=2)
    unk_id = int(word_to_id[unk])
    return [int(word_to_id.get(w, unk_id)) for w in words]


def decode(ids: Sequence[int] | np.ndarray, id_to_word: Sequence[str], *, eos: str = EOS) -> str:
    """Join the words of ``ids`` with spaces; each ``eos`` token becomes a newline.

    Example: the ids of ``"a b <eos> c"`` decode to ``"a b\\nc"``.
    """
    lines: list[list[str]] = [[]]
    V = len(id_to_word)
    for i in ids:
        if not 0 <= i < V:  # a negative index would silently wrap around
            raise ValueError(f"token id {i} is outside the vocabulary [0, {V})")
        word = id_to_word[i]
        if word == eos:
            lines.append([])
        else:
            lines[-1].append(word)
    return "\n".join(" ".join(line) for line in lines)


# ----------------------------------------------------------------------------------------------
# Command line: python -m numlstm generate ...
# ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="numlstm generate",
        description="Sample text from a language model saved with numlstm.generate.save_model.",
    )
    ap.add_argument("--checkpoint", required=True, help="model file (.npz) from save_model")
    ap.add_argument("--prime", required=True, help='context words, e.g. "the company said"')
    ap.add_argument("--words", type=int, default=50, help="words to generate (default 50)")
    ap.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="softmax temperature; 0 = greedy (default 1.0)",
    )
    ap.add_argument("--greedy", action="store_true", help="same as --temperature 0")
    ap.add_argument("--top-k", type=int, default=None, help="sample among the K likeliest words")
    ap.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass P in (0, 1]")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    ap.add_argument("--stop-at-eos", action="store_true", help="stop after an <eos> token")
    ap.add_argument(
        "--strict",
        action="store_true",
        help="unknown prime words are an error (default: map them to <unk>)",
    )
    return ap


def _prepare_prime(prime: str, meta: Mapping[str, Any]) -> str:
    """Clean the prime the way the training text was cleaned (``meta["preprocess"]``)."""
    rule = meta.get("preprocess")
    if rule == "clean_text":
        return clean_text(prime)
    if rule == "lower":
        return prime.lower()
    return prime


def _check_options(args: argparse.Namespace) -> float:
    """Validate the numeric options; return the temperature to use. Messages name the option."""
    if args.words < 0:
        raise ValueError(f"--words must be >= 0, got {args.words}")
    temperature = 0.0 if args.greedy else args.temperature
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(
            f"--temperature must be a finite number > 0 (or 0 for greedy), got {temperature}"
        )
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:  # `not` also rejects NaN
        raise ValueError(f"--top-p must be in (0, 1] (top_p), got {args.top_p}")
    if args.seed is not None and args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    return temperature


class _WordWriter:
    """Prints decoded words as they come, exactly as ``decode(ids).rstrip("\\n")`` + newline.

    Newlines (``<eos>``) are held back until a word follows, so trailing ones collapse into
    the single final newline; every write is flushed so a long run shows progress.
    """

    def __init__(self, id_to_word: Sequence[str], out: Any) -> None:
        self.id_to_word, self.out = id_to_word, out
        self.pending_newlines = 0
        self.line_started = False
        self.wrote = False

    def write(self, ids: Sequence[int]) -> None:
        parts: list[str] = []
        for i in ids:
            word = self.id_to_word[i]
            if word == EOS:
                self.pending_newlines += 1
                self.line_started = False
                continue
            if self.pending_newlines:
                parts.append("\n" * self.pending_newlines)
                self.pending_newlines = 0
            parts.append(word if not self.line_started else " " + word)
            self.line_started = True
        if parts:
            self.out.write("".join(parts))
            self.out.flush()
            self.wrote = True

    def finish(self) -> None:
        self.out.write("\n")
        self.out.flush()


def generate_main(argv: list[str] | None = None) -> int:
    """``python -m numlstm generate``: print the prime followed by the generated words.

    Words are printed (and flushed) as they are generated. Returns the exit code: 0 on
    success, 2 on a usage error, a bad option value, a missing, unreadable or bad checkpoint
    (including one with NaN/inf weights), or (with --strict) a prime word that is not in the
    vocabulary; 130 on Ctrl-C, after ending the line of what was already printed. Errors are
    one line on stderr (``numlstm generate: error: ...``), never a traceback.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help (0) and on usage errors (2)
        return int(e.code or 0) if isinstance(e.code, int | None) else 2
    writer: _WordWriter | None = None
    try:
        try:
            temperature = _check_options(args)
            model, id_to_word, meta = load_model(args.checkpoint)
            word_to_id = {w: i for i, w in enumerate(id_to_word)}
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                prime_ids = encode(
                    _prepare_prime(args.prime, meta),
                    word_to_id,
                    on_unknown="error" if args.strict else "unk",
                )
            for w in caught:
                print(f"numlstm generate: warning: {w.message}", file=sys.stderr)
            stop_id = None
            if args.stop_at_eos:
                if EOS not in word_to_id:
                    raise ValueError(f"--stop-at-eos: the vocabulary has no {EOS!r} token")
                stop_id = word_to_id[EOS]
            ids = iter_generate(
                model,
                prime_ids,
                args.words,
                temperature=temperature,
                top_k=args.top_k,
                top_p=args.top_p,
                seed=args.seed,
                stop_id=stop_id,
            )
            writer = _WordWriter(id_to_word, sys.stdout)
            writer.write(prime_ids)
            for token in ids:
                writer.write((token,))
            writer.finish()
        except KeyboardInterrupt:
            if writer is not None:
                writer.finish()
            print("numlstm generate: interrupted", file=sys.stderr)
            return 130
    except BrokenPipeError:  # e.g. `| head`: the reader is gone; stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except (CheckpointError, ValueError, OSError, FloatingPointError) as e:
        if writer is not None and writer.wrote:
            writer.finish()
        print(f"numlstm generate: error: {e}", file=sys.stderr)
        return 2
    return 0
