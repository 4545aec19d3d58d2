"""A sentence-level PTB language model: one sentence per row, padded, the loss masked.

    python examples/ptb_sentences.py --data-dir DIR             # the Small config, 13 epochs
    python examples/ptb_sentences.py --epochs 1 --max-words 3000   # a smoke run of seconds

The tutorial's model (examples/ptb_small.py) reads PTB as one continuous stream cut into
20-step pieces, and carries the state from piece to piece: each word is predicted from every
word before it, across sentence boundaries. Here each row of a batch is one whole sentence
(``ptb.sentence_batches``: ``x = <eos> w_1 .. w_k``, ``y = w_1 .. w_k <eos>``), sentences of
similar length are batched together (bucketing) and padded to the longest, the state starts
at zero for every sentence, and the loss counts the valid positions only
(``LanguageModel.loss_and_grads(..., lengths=)``: S3m, dS3m and M1-M3 in the docs). Every word
of a split, ``<eos>`` included, is predicted exactly once, so the per-word perplexity
``exp(sum of -log p / number of words)`` is comparable with the continuous model's; the
difference is the context a word is predicted from. Results: docs/results.md.

Everything else is the Small config as published: 2 x 200 LSTM, SGD lr 1.0 halved each epoch
after the 4th, 13 epochs, clipping at 5, no dropout, batches of 20 (sentences here).
"""

import argparse
import dataclasses
import math
import time

import numpy as np

import numlstm
from numlstm.config import SmallConfig
from numlstm.io import ptb

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
parser.add_argument("--data-dir", help="folder with ptb.train.txt, ptb.valid.txt, ptb.test.txt")
parser.add_argument("--epochs", type=int, help="fewer epochs for a quick look (default 13)")
parser.add_argument(
    "--max-words", type=int, help="use only the first N words of each split (default: all)"
)
parser.add_argument("--threads", type=int, help="row blocks per batch (default: one per core)")
parser.add_argument("--seed", type=int, default=0, help="initialisation and shuffling seed")
args = parser.parse_args()

config = SmallConfig()
if args.epochs:
    config = config.replace(max_max_epoch=args.epochs)
try:
    data = ptb.load_ptb(args.data_dir)
except ptb.DataError as e:
    parser.exit(2, f"ptb_sentences.py: {e}\n(pass --data-dir DIR with ptb.train.txt etc.)\n")
if args.max_words:
    n = args.max_words
    data = dataclasses.replace(data, train=data.train[:n], valid=data.valid[:n], test=data.test[:n])
eos = data.word_to_id["<eos>"]
print(f"train {len(data.train):,} words, valid {len(data.valid):,}, test {len(data.test):,}")

model = numlstm.LanguageModel(
    config.vocab_size, config.hidden_size, config.num_layers, init_scale=config.init_scale,
    seed=args.seed,
)  # fmt: skip
opt = numlstm.SGD(model.params, lr=config.learning_rate)
threads = args.threads or numlstm.default_threads(config.batch_size)
parallel = numlstm.DataParallel(model, threads) if threads > 1 else None
shuffle = np.random.default_rng(args.seed)


def runner(rows: int):
    """The DataParallel for a full batch; the model itself for a last batch with fewer rows
    than threads (a block needs at least one row)."""
    return parallel if parallel is not None and rows >= threads else model


def perplexity(ids: np.ndarray) -> float:
    """Per-word perplexity of a split, read sentence by sentence (no dropout, no shuffling)."""
    total, words = 0.0, 0
    for x, y, lengths in ptb.sentence_batches(ids, eos, config.batch_size):
        state = model.init_state(x.shape[0])  # every sentence starts from the zero state
        loss, _ = runner(x.shape[0]).loss(x, y, state, lengths=lengths)
        total += loss * x.shape[0]  # loss = sum of -log p over the valid positions / rows
        words += int(lengths.sum())
    return math.exp(total / words)


start_all = time.perf_counter()
for epoch in range(config.max_max_epoch):
    opt.lr = config.lr_at(epoch)  # (O4)
    total, words, start = 0.0, 0, time.perf_counter()
    # Shuffled sentences, bucketed by length (batches of similar length, little padding), and
    # the batches' order shuffled too, anew each epoch.
    for x, y, lengths in ptb.sentence_batches(data.train, eos, config.batch_size,
                                              shuffle_rng=shuffle):  # fmt: skip
        state = model.init_state(x.shape[0])  # nothing is carried between sentences
        loss, grads, _ = runner(x.shape[0]).loss_and_grads(x, y, state, lengths=lengths)
        numlstm.clip_by_global_norm(grads, config.max_grad_norm)  # (O1, O2)
        opt.step(grads)  # (O3)
        total += loss * x.shape[0]
        words += int(lengths.sum())
    seconds = time.perf_counter() - start
    valid = perplexity(data.valid)
    print(f"epoch {epoch + 1:2d}  lr {opt.lr:.3f}  train perplexity {math.exp(total / words):.2f}"
          f"  valid perplexity {valid:.2f}  ({seconds:.0f} s, {words / seconds:,.0f} words/s)",
          flush=True)  # fmt: skip

minutes = (time.perf_counter() - start_all) / 60
print(f"test perplexity {perplexity(data.test):.2f}  (valid {perplexity(data.valid):.2f}; "
      f"{minutes:.1f} min)")  # fmt: skip
if parallel is not None:
    parallel.close()
