"""The PTB small model of Zaremba et al. (2014), trained with numlstm's pieces, top to bottom.

    python examples/ptb_small.py                      # downloads PTB to ~/.cache/numlstm once
    python examples/ptb_small.py --data-dir DIR       # or use ptb.{train,valid,test}.txt in DIR
    python examples/ptb_small.py --epochs 1 --max-words 2000   # a smoke run of a few seconds

Test perplexity about 115, in about 30 minutes on 2 CPU cores. The training step is the one
`python -m numlstm train --config small` runs (that command adds checkpoints, logs and a plot;
docs/results.md): each batch's rows are split into one block per core, trained side by side in
threads (numlstm.DataParallel, numlstm/fast/parallel.py), with one BLAS thread per block, which
also keeps the speed when another program shares the cores (docs/performance.md). The numbers
are those of `model.loss_and_grads(x, y, state)` on the whole batch, up to float rounding.
"""

import argparse
import dataclasses
import math
import time

import numlstm
from numlstm.config import SmallConfig
from numlstm.io import ptb
from numlstm.train import evaluate

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
parser.add_argument("--data-dir", help="folder with ptb.train.txt, ptb.valid.txt, ptb.test.txt")
parser.add_argument("--epochs", type=int, help="fewer epochs for a quick look (default 13)")
parser.add_argument(
    "--max-words", type=int, help="use only the first N words of each split (default: all)"
)
args = parser.parse_args()

config = SmallConfig()  # 2 layers x 200 units, 20 steps, batch 20, lr 1.0 halved from epoch 5
if args.epochs:
    config = config.replace(max_max_epoch=args.epochs)
try:
    data = ptb.load_ptb(args.data_dir)  # word ids; vocabulary of 10,000 words
except ptb.DataError as e:  # no files and no download: say so in one line, with the way out
    parser.exit(2, f"ptb_small.py: {e}\n(pass --data-dir DIR with ptb.train.txt etc.)\n")
if args.max_words:  # the vocabulary stays the full training set's 10,000 words
    n = args.max_words
    data = dataclasses.replace(data, train=data.train[:n], valid=data.valid[:n], test=data.test[:n])
print(f"train {len(data.train):,} words, valid {len(data.valid):,}, test {len(data.test):,}")

model = numlstm.LanguageModel(
    config.vocab_size, config.hidden_size, config.num_layers, init_scale=config.init_scale, seed=0
)
opt = numlstm.SGD(model.params, lr=config.learning_rate)
parallel = numlstm.DataParallel(model, numlstm.default_threads(config.batch_size))

for epoch in range(config.max_max_epoch):
    opt.lr = config.lr_at(epoch)  # (O4) lr * lr_decay^max(epoch + 1 - max_epoch, 0)
    state = model.init_state(config.batch_size)  # zero state at the start of every epoch
    costs, words, start = 0.0, 0, time.perf_counter()
    batches = ptb.ptb_iterator(data.train, config.batch_size, config.num_steps)
    for step, (x, y) in enumerate(batches):  # x, y: (batch_size, num_steps) word ids
        # Forward through embedding -> 2 LSTM layers -> softmax, then backprop through time.
        # The final state is carried into the next batch (truncated BPTT).
        loss, grads, state = parallel.loss_and_grads(x, y, state)  # = model.loss_and_grads
        numlstm.clip_by_global_norm(grads, config.max_grad_norm)  # (O1, O2)
        opt.step(grads)  # (O3) p <- p - lr * g
        costs += loss  # loss = sum of -log p(word) over the batch / batch_size
        words += config.num_steps
        if step % 500 == 0:
            wps = words * config.batch_size / (time.perf_counter() - start)
            print(
                f"  step {step:5d}  perplexity {math.exp(costs / words):8.2f}  {wps:,.0f} words/s"
            )
    valid = evaluate(model, data.valid, config.batch_size, config.num_steps, parallel=parallel)
    print(
        f"epoch {epoch + 1:2d}  lr {opt.lr:.3f}  train perplexity {math.exp(costs / words):.2f}"
        f"  valid perplexity {valid.perplexity:.2f}  ({time.perf_counter() - start:.0f} s)"
    )

parallel.close()  # BLAS gets its threads back
test = evaluate(model, data.test, batch_size=1, num_steps=1)  # one word at a time, as the tutorial
print(f"test perplexity {test.perplexity:.2f}")
