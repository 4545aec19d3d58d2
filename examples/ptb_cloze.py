"""Cloze on PTB: predict a blanked-out word from both sides, or from its left only.

    python examples/ptb_cloze.py --data-dir DIR --direction both   # bidirectional LSTM
    python examples/ptb_cloze.py --data-dir DIR --direction left   # left context only
    python examples/ptb_cloze.py --epochs 1 --max-words 3000       # a smoke run of seconds

Each PTB sentence ``w_1 .. w_n <eos>`` is one row of a padded batch (``ptb.sentence_batches``,
``lengths`` marking each row's end). One word ``w_k`` of each sentence is replaced by a
``<blank>`` token, and the model must name it:

* ``--direction both``: a bidirectional LSTM layer (V2 in docs/rnn.md, built from
  ``numlstm.bidirectional_forward``): the forward direction reads ``w_1 .. w_{k-1} <blank>``,
  the backward direction reads ``<eos> w_n .. w_{k+1} <blank>`` (``reverse_sequence`` within
  each row's length, so the padding never enters); their outputs at position k are
  concatenated, 2H features, and a softmax over the vocabulary predicts ``w_k``.
* ``--direction left``: one forward LSTM of 2H units, its output at position k, 2H features:
  the same softmax input width, more recurrent weights than the two H-unit directions, and no
  view of the words right of the blank.

Same data, blanks, embedding, optimiser, epochs and seed; the only difference is what the
layer can see. Training draws a new blank in every sentence each epoch; validation and test
use one fixed blank per sentence (the same for both models). Reported: the cloze perplexity
``exp(mean -log p(w_k))`` and top-1 accuracy. Results: docs/results.md.

The forward and backward passes are the library's layer functions composed by hand: embedding
(E1/dE1), dropout (D1), the LSTM (L1-L6) or the bidirectional layer (V1, V2), then the softmax
(S1-S3) of the blank positions only, and back through the same pieces.
"""

import argparse
import dataclasses
import math
import time

import numpy as np

import numlstm
from numlstm.io import ptb

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
parser.add_argument("--data-dir", help="folder with ptb.train.txt, ptb.valid.txt, ptb.test.txt")
parser.add_argument("--direction", choices=("both", "left"), default="both")
parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
parser.add_argument("--hidden", type=int, default=200, help="H: units per direction for 'both'"
                    " (the left model gets 2H), default 200")  # fmt: skip
parser.add_argument("--max-words", type=int, help="use only the first N words of each split")
parser.add_argument("--batch-size", type=int, default=32, help="sentences per batch (32)")
parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (2e-3)")
parser.add_argument("--keep-prob", type=float, default=0.5, help="dropout keep probability on "
                    "the embedding and the features (0.5)")  # fmt: skip
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

try:
    data = ptb.load_ptb(args.data_dir)
except ptb.DataError as e:
    parser.exit(2, f"ptb_cloze.py: {e}\n(pass --data-dir DIR with ptb.train.txt etc.)\n")
if args.max_words:
    n = args.max_words
    data = dataclasses.replace(data, train=data.train[:n], valid=data.valid[:n], test=data.test[:n])
V, E = data.vocab_size, args.hidden
EOS, BLANK = data.word_to_id["<eos>"], data.vocab_size  # <blank>: an extra embedding row
H = args.hidden if args.direction == "both" else 2 * args.hidden  # per direction
F = 2 * args.hidden  # the softmax's input width, the same for both models
rng = np.random.default_rng(args.seed)
f32 = np.float32


def uniform(*shape: int, scale: float = 0.1) -> np.ndarray:
    return rng.uniform(-scale, scale, shape).astype(f32)


params = {"embedding": uniform(V + 1, E)}
for d in ("fw", "bw") if args.direction == "both" else ("fw",):
    params[f"{d}.Wx"], params[f"{d}.Wh"] = uniform(E, 4 * H), uniform(H, 4 * H)
    params[f"{d}.b"] = np.zeros(4 * H, f32)
params["softmax_w"], params["softmax_b"] = uniform(F, V), np.zeros(V, f32)
print(f"{args.direction}: {sum(p.size for p in params.values()):,} parameters "
      f"(recurrent {sum(p.size for k, p in params.items() if '.' in k):,})")  # fmt: skip


def sentences(ids: np.ndarray, shuffle: np.random.Generator | None):
    """(tokens (B, T) = w_1 .. w_n <eos> padded, lengths (B,)) per batch, bucketed by length."""
    for _, y, lengths in ptb.sentence_batches(ids, EOS, args.batch_size, shuffle_rng=shuffle):
        yield y, lengths  # y holds each sentence's words, its <eos> last


def blanks(lengths: np.ndarray, draw: np.random.Generator) -> np.ndarray:
    """One position k per row among the words (not the final <eos>; a sentence that is only
    <eos>, length 1, blanks that)."""
    words = np.maximum(lengths - 1, 1)
    return (draw.random(lengths.size) * words).astype(np.int64)


def forward_backward(tokens, lengths, k, keep_prob, drop, train):
    """Loss (sum of -log p over the rows, / rows) and, if ``train``, every gradient."""
    B, T = tokens.shape
    rows = np.arange(B)
    target = tokens[rows, k].astype(np.int32)
    ids = tokens.copy()
    ids[rows, k] = BLANK
    emb, emb_cache = numlstm.embedding_forward(ids.T.copy(), params["embedding"])  # (E1)
    emb, m_emb = numlstm.dropout_forward(emb, keep_prob, drop)  # (D1)
    fw = (np.zeros((B, H), f32), np.zeros((B, H), f32), params["fw.Wx"], params["fw.Wh"],
          params["fw.b"])  # fmt: skip
    if args.direction == "both":
        bw = (np.zeros((B, H), f32), np.zeros((B, H), f32), params["bw.Wx"], params["bw.Wh"],
              params["bw.b"])  # fmt: skip
        hs, _, _, cache = numlstm.bidirectional_forward("lstm", emb, fw, bw, lengths)  # (V2)
    else:
        hs, _, _, cache = numlstm.lstm_forward(emb, *fw, lengths=lengths)  # (L1-L6)
    feat, m_feat = numlstm.dropout_forward(np.ascontiguousarray(hs[k, rows]), keep_prob, drop)
    if not train:
        loss = numlstm.softmax_xent_loss(feat, params["softmax_w"], params["softmax_b"],
                                         target, B)  # fmt: skip
        return loss, feat @ params["softmax_w"] + params["softmax_b"], target
    loss, dfeat, dW, db = numlstm.softmax_xent_forward_backward(
        feat, params["softmax_w"], params["softmax_b"], target, B
    )  # (S1-S3, dS1-dS3)
    dhs = np.zeros_like(hs)
    dhs[k, rows] = numlstm.dropout_backward(dfeat, m_feat)  # only the blanks get a gradient
    grads = {"softmax_w": dW, "softmax_b": db}
    if args.direction == "both":
        dx, g_fw, g_bw = numlstm.bidirectional_backward(dhs, cache)  # (dV2)
        grads.update({"bw.Wx": g_bw[2], "bw.Wh": g_bw[3], "bw.b": g_bw[4]})
    else:
        zero = np.zeros((B, H), f32)
        dx, *g_fw = numlstm.lstm_backward(dhs, zero, zero, cache)
    grads.update({"fw.Wx": g_fw[2], "fw.Wh": g_fw[3], "fw.b": g_fw[4]})
    demb = numlstm.dropout_backward(dx, m_emb)  # (dD1)
    grads["embedding"] = numlstm.embedding_backward(demb, emb_cache)  # (dE1)
    return loss, grads, target


def evaluate(ids: np.ndarray) -> tuple[float, float]:
    """Cloze perplexity and accuracy with one fixed blank per sentence (the same draw for
    every model: a generator seeded by a constant, not by --seed)."""
    fixed = np.random.default_rng(12345)
    total, right, count = 0.0, 0, 0
    for tokens, lengths in sentences(ids, None):
        k = blanks(lengths, fixed)
        loss, logits, target = forward_backward(tokens, lengths, k, 1.0, None, train=False)
        total += loss * tokens.shape[0]
        right += int((logits.argmax(axis=1) == target).sum())
        count += tokens.shape[0]
    return math.exp(total / count), right / count


opt = numlstm.Adam(params, lr=args.lr)
start_all = time.perf_counter()
for epoch in range(args.epochs):
    total, count, start = 0.0, 0, time.perf_counter()
    for tokens, lengths in sentences(data.train, rng):
        k = blanks(lengths, rng)  # a new blank in every sentence, every epoch
        loss, grads, _ = forward_backward(tokens, lengths, k, args.keep_prob, rng, train=True)
        numlstm.clip_by_global_norm(grads, 5.0)  # (O1, O2)
        opt.step(grads)  # (O5-O8)
        total += loss * tokens.shape[0]
        count += tokens.shape[0]
    valid_ppl, valid_acc = evaluate(data.valid)
    print(f"epoch {epoch + 1:2d}  train cloze perplexity {math.exp(total / count):8.2f}"
          f"  valid {valid_ppl:8.2f}, accuracy {valid_acc:.3f}"
          f"  ({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip

test_ppl, test_acc = evaluate(data.test)
valid_ppl, valid_acc = evaluate(data.valid)
minutes = (time.perf_counter() - start_all) / 60
print(f"{args.direction}: valid cloze perplexity {valid_ppl:.2f}, accuracy {valid_acc:.3f};"
      f" test {test_ppl:.2f}, accuracy {test_acc:.3f} ({minutes:.1f} min)")  # fmt: skip
