"""Command line: ``python -m numlstm {train,evaluate,generate} ...``.

python -m numlstm train --config small [--cell gru] [--data-dir DIR] [--out DIR] [--resume]
python -m numlstm train --config medium --max_max_epoch 1 --hidden_size 400   # any field
python -m numlstm evaluate --checkpoint runs/small-lstm/checkpoint.npz [--split test]
python -m numlstm generate --checkpoint ... --prime "the company said" --words 50
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from .config import CONFIGS, get_config
from .io import ptb


def _data(args: argparse.Namespace) -> ptb.PTBData:
    data = ptb.load_ptb(args.data_dir)
    if args.limit_tokens:
        n = args.limit_tokens
        data = ptb.PTBData(data.train[:n], data.valid[:n], data.test[:n], data.word_to_id,
                           data.id_to_word)  # fmt: skip
    return data


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder with ptb.{train,valid,test}.txt; default: the "
                   "cache folder ($NUMLSTM_DATA_DIR or ~/.cache/numlstm/ptb), downloading the "
                   "RNNLM simple-examples archive there if needed")  # fmt: skip
    p.add_argument("--limit-tokens", type=int, default=0, metavar="N",
                   help="use only the first N tokens of each split (quick trials)")  # fmt: skip


def train_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="numlstm train",
        description="Train a PTB language model as in the TensorFlow PTB tutorial.",
    )
    p.add_argument("--config", default="small", choices=sorted(CONFIGS))
    p.add_argument("--cell", default="lstm", choices=["lstm", "gru"])
    p.add_argument("--out", help="run folder (default runs/<config>-<cell>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", default="auto", choices=["auto", "bar", "lines", "none"])
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="row blocks of each batch trained side by side, one thread each "
                   "(default: one per core; 1: BLAS's own threads)")  # fmt: skip
    _add_data_args(p)
    overrides = p.add_argument_group("config overrides (tutorial field names)")
    for f in dataclasses.fields(get_config("small")):
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        overrides.add_argument(*flags, dest=f.name, type=int if f.type == "int" else float,
                               default=None, metavar="V")  # fmt: skip
    args = p.parse_args(argv)

    from .train import train  # imported here so that `--help` is instant

    config = get_config(args.config)
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(config)}
    config = config.replace(**{k: v for k, v in changes.items() if v is not None})
    out = args.out or f"runs/{args.config}-{args.cell}"
    print(f"config {args.config}: {config}")
    try:
        train(config, _data(args), out, cell=args.cell, seed=args.seed, resume=args.resume,
              progress=args.progress, threads=args.threads)  # fmt: skip
    except KeyboardInterrupt:
        return 130
    except (ptb.DataError, ValueError) as e:
        print(f"numlstm train: {e}", file=sys.stderr)
        return 2
    return 0


def evaluate_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="numlstm evaluate", description="Perplexity of a checkpoint on a PTB split."
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--num-steps", type=int, default=1)
    _add_data_args(p)
    args = p.parse_args(argv)

    from .io.checkpoint import CheckpointError
    from .io.saving import load_model
    from .train import evaluate

    try:
        model, vocab, _ = load_model(args.checkpoint)
        data = _data(args)
        if vocab != data.id_to_word:
            raise ValueError("the checkpoint's vocabulary differs from the data's: it was "
                             "trained on other data")  # fmt: skip
        result = evaluate(model, getattr(data, args.split), args.batch_size, args.num_steps)
    except (CheckpointError, ptb.DataError, ValueError) as e:
        print(f"numlstm evaluate: {e}", file=sys.stderr)
        return 2
    print(f"{args.split} perplexity: {result.perplexity:.3f} "
          f"({result.words_per_second:,.0f} words/s, {result.seconds:.1f} s)")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"train": train_main, "evaluate": evaluate_main}
    if not argv or argv[0] not in (*commands, "generate"):
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "generate":
        from .generate import generate_main

        return generate_main(argv[1:])
    return commands[argv[0]](argv[1:])
