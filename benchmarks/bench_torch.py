"""The PyTorch side of ``bench_train.py --compare-torch``: one process, one timed run.

Trains and evaluates the PyTorch equivalent of a PTB model on the same random tokens as
``bench_train.py`` (nn.Embedding -> nn.LSTM / nn.GRU -> nn.Linear, dropout as the config,
CrossEntropyLoss(reduction='sum') / B, SGD + clip_grad_norm_; evaluation at batch 1 x 1 step
under ``torch.no_grad()``), and prints one JSON line: words/s of one timed training run and one
timed evaluation run after a warm-up, and the environment PyTorch ran with.

This file never imports numlstm: ``import numlstm`` sets OMP_WAIT_POLICY=PASSIVE, which slows
PyTorch's own OpenMP threads. ``bench_train.py --compare-torch`` starts it with the thread
variables removed from the environment, so that PyTorch runs with its own defaults.

    python benchmarks/bench_torch.py                          # the PTB small LSTM
    python benchmarks/bench_torch.py --cell gru --hidden 650 --layers 2 --num-steps 35 \\
        --keep-prob 0.5 --steps 5 --eval-steps 200 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

# Read before torch is imported: what this process was started with.
START_ENV = dict(os.environ)

import numpy as np  # noqa: E402

B = 20  # batch size of every PTB config
N_BATCHES = 8  # must match bench_train.N_BATCHES: the same random tokens on both sides


def thread_vars(environ: dict[str, str]) -> dict[str, str]:
    """The variables that set threads or OpenMP behaviour (the same rule as bench_train)."""
    return {
        k: v
        for k, v in sorted(environ.items())
        if k.startswith(("OMP_", "KMP_", "GOMP_")) or "THREAD" in k or k == "MKL_DYNAMIC"
    }


def random_batches(vocab: int, num_steps: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """bench_train.random_batches, copied so that this file needs no numlstm: N_BATCHES (x, y)
    pairs of shape (B, T), y = x shifted by one."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (N_BATCHES, B, num_steps + 1)).astype(np.int32)
    return [(np.ascontiguousarray(a[:, :-1]), np.ascontiguousarray(a[:, 1:])) for a in ids]


def eval_ids(vocab: int, n: int) -> np.ndarray:
    """bench_train's evaluation tokens: n + 1 ids from seed 1."""
    return np.random.default_rng(1).integers(0, vocab, n + 1)


def torch_model(torch, args: argparse.Namespace, seed: int = 0):
    """Embedding -> nn.LSTM / nn.GRU (time-major) -> Linear, dropout as in the tutorial:
    on the embedding, between layers (the RNN's own ``dropout``) and on the top output."""
    nn = torch.nn
    V, H, L, p = args.vocab, args.hidden, args.layers, 1.0 - args.keep_prob
    torch.manual_seed(seed)

    class TorchLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(V, H)
            rnn = nn.LSTM if args.cell == "lstm" else nn.GRU
            self.rnn = rnn(H, H, L, dropout=p if L > 1 else 0.0, batch_first=False)
            self.drop = nn.Dropout(p)
            self.fc = nn.Linear(H, V)
            for w in self.parameters():
                nn.init.uniform_(w, -args.init_scale, args.init_scale)

        def forward(self, x, state):
            out, state = self.rnn(self.drop(self.embedding(x)), state)
            return self.fc(self.drop(out)), state

    return TorchLM()


def _detach(state):
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def trainer(torch, args: argparse.Namespace, seed: int = 0):
    """run(steps): that many SGD steps, the state carried across them (truncated BPTT)."""
    model = torch_model(torch, args, seed)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    batches = [
        (
            torch.from_numpy(np.ascontiguousarray(x.T, np.int64)),
            torch.from_numpy(np.ascontiguousarray(y.T, np.int64)),
        )
        for x, y in random_batches(args.vocab, args.num_steps, seed)
    ]  # time-major (T, B)
    holder = [None]

    def run(steps: int) -> None:
        model.train()
        state = holder[0]
        for i in range(steps):
            x, y = batches[i % N_BATCHES]
            logits, state = model(x, _detach(state))  # the state without its history
            loss = loss_fn(logits.reshape(-1, args.vocab), y.reshape(-1)) / B
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            opt.step()
        holder[0] = _detach(state)

    return run


def evaluator(torch, args: argparse.Namespace, seed: int = 0):
    """run(ids): summed loss of predicting ids[1:] one word at a time, batch 1."""
    model = torch_model(torch, args, seed)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")

    def run(ids: np.ndarray) -> float:
        model.eval()
        t_ids = torch.from_numpy(ids.astype(np.int64))
        state, total = None, 0.0
        with torch.no_grad():
            for t in range(len(ids) - 1):
                logits, state = model(t_ids[t : t + 1].view(1, 1), state)
                total += float(loss_fn(logits.view(1, -1), t_ids[t + 1 : t + 2]))
        return total

    return run


def numpy_blas() -> str:
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{info.get('name', '?')} {info.get('version', '')}".strip()
    except Exception:  # older NumPy, or a build without the information
        return "unknown"


def environment(torch) -> dict:
    """What PyTorch ran with: the thread variables this process started with, its thread
    counts, and the math libraries it uses."""
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    return {
        "thread_vars": thread_vars(START_ENV),
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_blas": blas.group(1) if blas else "unknown",
        "mkl_available": torch.backends.mkl.is_available(),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
        "openmp_available": torch.backends.openmp.is_available(),
        "numpy_blas": numpy_blas(),
        "cpu_count": os.cpu_count(),
        # Checked by bench_train: this process must not have imported numlstm.
        "numlstm_imported": "numlstm" in sys.modules,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    # Defaults: the PTB small config (numlstm/config.py), which this file cannot import.
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--num-steps", type=int, default=20, help="BPTT length T")
    p.add_argument("--keep-prob", type=float, default=1.0)
    p.add_argument("--init-scale", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--max-grad-norm", type=float, default=5.0)
    p.add_argument("--steps", type=int, default=20, help="training steps in the timed run")
    p.add_argument("--eval-steps", type=int, default=1000, help="words in the timed eval run")
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)"
    )
    p.add_argument("--json", default="", help="also write the result to this file")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    words = args.steps * B * args.num_steps
    train = trainer(torch, args)
    train(2)  # warm-up: allocations, oneDNN primitive caches
    start = time.perf_counter()
    train(args.steps)
    train_wps = words / (time.perf_counter() - start)

    ids = eval_ids(args.vocab, args.eval_steps)
    evaluate = evaluator(torch, args)
    evaluate(ids[:3])  # warm-up
    start = time.perf_counter()
    evaluate(ids)
    eval_wps = args.eval_steps / (time.perf_counter() - start)

    result = {
        "cell": args.cell,
        "torch_train_wps": train_wps,
        "torch_eval_wps": eval_wps,
        "environment": environment(torch),
    }
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
