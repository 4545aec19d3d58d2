"""Train a word-level LSTM on tiny-shakespeare and sample from it.

    python examples/shakespeare.py --out out/shakespeare
    python -m numlstm generate --checkpoint out/shakespeare/shakespeare.npz --prime "thou art"

Words come from ``numlstm.io.text.clean_text`` (lower-case, punctuation dropped); the last
``--valid-frac`` of the text is held out. Batches are contiguous as in PTB (``ptb_iterator``),
so the state is carried from one batch to the next within an epoch.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from numlstm import Adam, DataParallel, LanguageModel, clip_by_global_norm, default_threads
from numlstm.generate import decode, encode, generate, save_model
from numlstm.io.ptb import ptb_iterator
from numlstm.io.text import build_word_vocab, clean_text, words_to_ids

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
MD5 = "6fb458f1232090904fb40fe944165e91"
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared/data/shakespeare/input.txt"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "numlstm/shakespeare"
PRIMES = ("thou art more", "to be or not to", "wherefore art thou")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help=f"text file (default: {SHARED} or the cache)")
    ap.add_argument("--download", action="store_true", help=f"fetch the text to {CACHE}")
    ap.add_argument("--max-words", type=int, default=0, help="use only the first N words (0: all)")
    ap.add_argument("--valid-frac", type=float, default=0.05, help="held-out tail of the text")
    ap.add_argument("--min-count", type=int, default=3, help="rarer words become <unk>")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--steps", type=int, default=50, help="BPTT length T")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    ap.add_argument("--clip", type=float, default=5.0, help="max global gradient norm")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--sample-every", type=int, default=200, help="0: only at the end")
    ap.add_argument("--sample-words", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("out/shakespeare"))
    return ap.parse_args(argv)


def find_data(args: argparse.Namespace) -> Path:
    """The text file to train on: --data, the shared copy, the cache, or a fresh download."""
    if args.data is not None:
        if not args.data.is_file():
            sys.exit(f"error: {args.data} does not exist")
        return args.data
    for path in (SHARED.resolve(), CACHE / "input.txt"):
        if path.is_file():
            return path
    if not args.download:
        sys.exit(
            f"error: tiny-shakespeare not found. Pass --data PATH, or --download to fetch "
            f"the public-domain text from\n  {URL}\ninto {CACHE}"
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    part = CACHE / "input.txt.part"
    print(f"downloading {URL}", flush=True)
    try:
        urllib.request.urlretrieve(URL, part)
    except OSError as e:  # URLError is an OSError
        part.unlink(missing_ok=True)
        sys.exit(f"error: could not download {URL}: {e}")
    if hashlib.md5(part.read_bytes()).hexdigest() != MD5:
        part.unlink()
        sys.exit(f"error: download of {URL} has the wrong md5 (expected {MD5})")
    return part.replace(CACHE / "input.txt")


def print_samples(model, word_to_id, id_to_word, n: int, seed: int) -> None:
    """Continue each of PRIMES by n words (temperature 0.8, a fixed seed per prime)."""
    for i, prime in enumerate(PRIMES):
        ids = encode(prime, word_to_id)
        ids += generate(model, ids, n, temperature=0.8, seed=seed + i)
        print("   ", decode(ids, id_to_word))


def evaluate(model: LanguageModel, ids: np.ndarray, args: argparse.Namespace) -> float:
    """Perplexity of an id stream, state carried across its batches."""
    state, total, count = model.init_state(args.batch_size), 0.0, 0
    for x, y in ptb_iterator(ids, args.batch_size, args.steps):
        loss, state = model.loss(x, y, state)
        total, count = total + loss, count + args.steps
    return math.exp(total / count)


def plot_losses(losses: list[float], path: Path, k: int) -> None:
    """Per-iteration loss and its running mean over k iterations, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the loss plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(losses, lw=0.5, alpha=0.5, label="iteration")
    k = max(1, min(k, len(losses)))
    mean = np.convolve(losses, np.ones(k) / k, "valid")
    ax.plot(np.arange(k - 1, len(losses)), mean, label=f"mean of {k}")
    ax.set(xlabel="iteration", ylabel="cross-entropy per word (nats)", title="tiny-shakespeare")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print(f"saved {path}")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    path = find_data(args)
    words = clean_text(path.read_text(encoding="utf-8")).split()
    if args.max_words:
        words = words[: args.max_words]
    n_valid = int(len(words) * args.valid_frac)
    train_words, valid_words = words[: len(words) - n_valid], words[len(words) - n_valid :]
    word_to_id, id_to_word = build_word_vocab(train_words, args.min_count)
    train, valid = words_to_ids(train_words, word_to_id), words_to_ids(valid_words, word_to_id)
    print(
        f"{path}: {len(train):,} training / {len(valid):,} held-out words, "
        f"vocabulary {len(id_to_word):,} (min count {args.min_count})"
    )

    model = LanguageModel(len(id_to_word), args.hidden, args.layers, seed=args.seed)
    opt = Adam(model.params, lr=args.lr)
    print(
        f"LSTM {args.layers} x {args.hidden}, {model.num_parameters():,} parameters; "
        f"batch {args.batch_size} x {args.steps} steps, Adam lr {args.lr}"
    )

    # Each batch's rows in one block per core, one thread and one BLAS thread each (the step of
    # `numlstm train`, fast/parallel.py): same numbers as model.loss_and_grads up to rounding,
    # and it keeps its speed when another program shares the cores (docs/performance.md).
    parallel = DataParallel(model, default_threads(args.batch_size))
    losses: list[float] = []  # mean cross-entropy per word (nats) of every iteration
    start, it, epoch = time.perf_counter(), 0, 0
    while it < args.iters:
        state = model.init_state(args.batch_size)  # each epoch starts at the top of the text
        for x, y in ptb_iterator(train, args.batch_size, args.steps):
            loss, grads, state = parallel.loss_and_grads(x, y, state)
            clip_by_global_norm(grads, args.clip)
            opt.step(grads)
            losses.append(loss / args.steps)
            it += 1
            if it % args.log_every == 0 or it == 1:
                recent = float(np.mean(losses[-args.log_every :]))
                print(
                    f"iter {it:5d}  epoch {epoch}  loss {recent:.3f}  "
                    f"ppl {math.exp(recent):8.1f}  {time.perf_counter() - start:6.1f} s"
                )
            if args.sample_every and it % args.sample_every == 0 and it < args.iters:
                print_samples(model, word_to_id, id_to_word, args.sample_words, args.seed)
            if it == args.iters:
                break
        epoch += 1
    seconds = time.perf_counter() - start
    parallel.close()

    valid_ppl = evaluate(model, valid, args) if len(valid) > args.batch_size * args.steps else None
    final = float(np.mean(losses[-args.log_every :]))
    print(
        f"done: {it} iterations in {seconds:.1f} s; training loss {losses[0]:.3f} -> {final:.3f}"
        + (f", held-out perplexity {valid_ppl:.1f}" if valid_ppl else "")
    )

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"preprocess": "clean_text", "iters": it, "train_loss": final, "valid_ppl": valid_ppl}
    print(f"saved {save_model(args.out / 'shakespeare.npz', model, id_to_word, meta)}")
    plot_losses(losses, args.out / "loss.png", args.log_every)
    print_samples(model, word_to_id, id_to_word, args.sample_words, args.seed)
    return {"losses": losses, "valid_ppl": valid_ppl, "seconds": seconds, "model": model}


if __name__ == "__main__":
    main()
