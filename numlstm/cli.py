"""Command line: ``python -m numlstm {train,evaluate,generate} ...``.

usage: python -m numlstm COMMAND [options]     (python -m numlstm COMMAND --help for each)

commands:
  train      train a PTB language model (the TensorFlow tutorial's configs)
  evaluate   perplexity of a saved checkpoint on a PTB split
  generate   sample text from a saved checkpoint

examples:
  python -m numlstm train --config small [--cell gru|rnn] [--data-dir DIR] [--out DIR] [--resume]
  python -m numlstm train --config medium --max_max_epoch 1 --hidden_size 400   # any field
  python -m numlstm train --config medium --variational sequence --state-keep-prob 0.8
  python -m numlstm evaluate --checkpoint runs/small-lstm/checkpoint.npz [--split test]
  python -m numlstm generate --checkpoint ... --prime "the company said" --words 50
  mpirun -n 4 python -m numlstm train --config medium     # one run over 4 MPI processes

Data: --data-dir DIR, else $NUMLSTM_DATA_DIR, else ~/.cache/numlstm/ptb (downloaded there once).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .config import CONFIGS, MODEL_OPTIONS, get_config
from .dropout import check_cell
from .io import ptb

DATA_HINT = ("pass --data-dir DIR (a folder with ptb.train.txt, ptb.valid.txt, ptb.test.txt) "
             "or set NUMLSTM_DATA_DIR")  # fmt: skip
# Errors a user can cause (bad values, files, data, memory); all end in one line and exit 2.
# The default learning rate of `train --cell X` where the config's (the tutorial's 1.0, tuned
# for the LSTM) makes that cell diverge; --learning_rate overrides it.
CELL_LEARNING_RATES = {"gru": 0.5, "rnn": 0.25}
USER_ERRORS = (ValueError, TypeError, FloatingPointError, OverflowError, MemoryError, OSError)


def _data(data_dir: str | None, limit_tokens: int | None) -> ptb.PTBData:
    try:
        data = ptb.load_ptb(data_dir)
    except ptb.DataError as e:
        raise ptb.DataError(f"{e}; {DATA_HINT}") from None
    if limit_tokens:
        n = limit_tokens
        data = ptb.PTBData(data.train[:n], data.valid[:n], data.test[:n], data.word_to_id,
                           data.id_to_word)  # fmt: skip
    return data


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum (argparse names the option in its error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


class Stopped(KeyboardInterrupt):
    """A SIGTERM before training installed its own handler (which saves a checkpoint first)."""

    signum = 15


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM during start-up (loading data, building the model) into a clean exit 143
    instead of the default kill; train() installs its own, checkpointing, handler inside."""

    def handler(signum, frame):
        raise Stopped

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _error(command: str, e: BaseException) -> int:
    """One line on stderr, no traceback, exit status 2."""
    what = "out of memory" if isinstance(e, MemoryError) else str(e) or type(e).__name__
    print(f"numlstm {command}: {what}", file=sys.stderr)
    return 2


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder with ptb.{train,valid,test}.txt; default: the "
                   "cache folder ($NUMLSTM_DATA_DIR or ~/.cache/numlstm/ptb), downloading the "
                   "RNNLM simple-examples archive there if needed")  # fmt: skip
    p.add_argument("--limit-tokens", type=_count(0), default=None, metavar="N",
                   help="use only the first N tokens of each split (0: all)")  # fmt: skip


def parse_duration(text: str) -> float:
    """``"90"``/``"90s"``, ``"5m"``, ``"1.5h"`` -> seconds; ``"0"``/``"off"`` -> 0 (disabled)."""
    value = text.strip().lower()
    if value == "off":
        return 0.0
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(value[-1:], None)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        seconds = float("nan")
    if not (seconds >= 0 and seconds < float("inf")):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; use e.g. 300, 90s, 5m, 1h, or off"
        )
    return seconds


def train_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="numlstm train",
        description="Train a PTB language model as in the TensorFlow PTB tutorial.",
    )
    p.add_argument("--config", default="small", choices=sorted(CONFIGS))
    # model.CELLS, spelled out: importing the model (and Numba) would slow down --help
    p.add_argument(
        "--cell",
        default="lstm",
        choices=["lstm", "gru", "rnn"],
        help="recurrent layer: LSTM (L1-L6), GRU (G1-G5) or plain tanh RNN (R1-R2)",
    )
    p.add_argument("--out", help="run folder (default runs/<config>-<cell>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.npz "
        "(the config must match, except --max_max_epoch, which may grow)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run already in OUT (without it such a folder is refused)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=parse_duration,
        default="5m",
        metavar="TIME",
        help="also checkpoint every TIME of training, e.g. 90s, 5m, 1h, off "
        "(default 5m; a checkpoint is always written after each epoch and on "
        "Ctrl-C or SIGTERM)",
    )
    p.add_argument("--seed", type=_count(0), default=0)
    p.add_argument("--progress", default="auto", choices=["auto", "bar", "lines", "none"])
    p.add_argument("--threads", type=_count(1), default=None, metavar="N",
                   help="row blocks of each batch trained side by side, one thread each "
                   "(default: one per core; 1: BLAS's own threads)")  # fmt: skip
    p.add_argument("--mpi", action=argparse.BooleanOptionalAction, default=None,
                   help="train in the ranks of an MPI job (pip install 'numlstm[mpi]'; default: "
                   "when started by mpirun/mpiexec with more than one process)")  # fmt: skip
    _add_data_args(p)
    overrides = p.add_argument_group("config overrides (tutorial field names)")
    for f in dataclasses.fields(get_config("small")):
        if f.name in MODEL_OPTIONS:
            continue  # below, with their own types
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        if f.name == "variational":  # docs/dropout.md D5: per sequence (Gal) or per batch (TF)
            overrides.add_argument(*flags, dest=f.name, default=None,
                                   choices=["sequence", "batch"],
                                   help="variational dropout masks: one per sequence "
                                   "(Gal & Ghahramani, Keras) or one per batch (TensorFlow's "
                                   "variational_recurrent), the same at every step")  # fmt: skip
            continue
        overrides.add_argument(*flags, dest=f.name, type=int if f.type == "int" else float,
                               default=None, metavar="V")  # fmt: skip
    options = p.add_argument_group("model options (LSTM; docs/lstmp.md, docs/layers.md 4.3)")
    options.add_argument(
        "--peepholes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="peephole connections from the cell to the gates (P2, P6)",
    )
    options.add_argument(
        "--cell-clip",
        "--cell_clip",
        dest="cell_clip",
        type=float,
        default=None,
        metavar="X",
        help="clip the cell state to [-X, X] (P5)",
    )
    options.add_argument(
        "--num-proj",
        "--num_proj",
        dest="num_proj",
        type=_count(1),
        default=None,
        metavar="P",
        help="project each layer's output to P units (P8; PyTorch proj_size)",
    )
    options.add_argument(
        "--proj-clip",
        "--proj_clip",
        dest="proj_clip",
        type=float,
        default=None,
        metavar="X",
        help="clip the projection to [-X, X] (P8)",
    )
    options.add_argument(
        "--tie-embeddings",
        "--tie_embeddings",
        dest="tie_embeddings",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the softmax's weights are the embedding's transpose (T1)",
    )
    options.add_argument("--embedding-size", "--embedding_size", dest="embedding_size",
                         type=_count(1), default=None, metavar="E",
                         help="embedding width E (default: hidden_size)")  # fmt: skip
    args = p.parse_args(argv)
    from .fast.distributed import MPIUnavailable

    try:
        with _stop_on_sigterm():
            return _train(args)
    except KeyboardInterrupt as e:  # train.Interrupted names the signal; plain Ctrl-C is SIGINT
        return 128 + getattr(e, "signum", 2)
    except (ptb.DataError, MPIUnavailable, *USER_ERRORS) as e:
        return _error("train", e)


def _train(args: argparse.Namespace) -> int:
    from .fast.distributed import launcher_rank
    from .train import train  # imported here so that `--help` is instant

    # Under mpirun, rank 0 alone prints (launcher_rank reads the environment: no MPI import).
    print_ = print if launcher_rank() == 0 else (lambda *a, **k: None)

    config = get_config(args.config)
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(config)}
    if args.cell in CELL_LEARNING_RATES and changes["learning_rate"] is None:
        # The tutorial's lr 1.0 is tuned for the LSTM. The GRU diverges with it (valid
        # perplexity 419,279 after one epoch) and trains well with 0.5 (docs/results.md); the
        # plain RNN diverges with 1.0 and learns little with 0.5 (docs/rnn.md section 7).
        changes["learning_rate"] = CELL_LEARNING_RATES[args.cell]
        print_(f"{args.cell.upper()}: learning_rate {changes['learning_rate']:g} (the "
               f"tutorial's 1.0 makes the {args.cell.upper()} diverge)")  # fmt: skip
    config = config.replace(**{k: v for k, v in changes.items() if v is not None}).validate()
    lstmp = config.lstmp_options_on()
    if args.cell != "lstm" and lstmp:  # before the data is loaded
        raise ValueError(f"{', '.join(lstmp)}: the LSTMP options need --cell lstm")
    check_cell(config.dropout(), args.cell)  # before loading any data
    out = args.out or f"runs/{args.config}-{args.cell}"
    print_(f"config {args.config}: {config}")
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
    train(config, _data(data_dir, args.limit_tokens), out, cell=args.cell, seed=args.seed,
          resume=args.resume, progress=args.progress, threads=args.threads,
          checkpoint_every=args.checkpoint_every, overwrite=args.overwrite, mpi=args.mpi,
          data_source={"data_dir": data_dir, "limit_tokens": args.limit_tokens or 0})  # fmt: skip
    return 0


def evaluate_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="numlstm evaluate", description="Perplexity of a checkpoint on a PTB split."
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--batch-size", type=_count(1), default=1)
    p.add_argument("--num-steps", type=_count(1), default=1)
    _add_data_args(p)
    args = p.parse_args(argv)
    try:
        return _evaluate(args)
    except KeyboardInterrupt:
        return 130
    except (ptb.DataError, *USER_ERRORS) as e:
        return _error("evaluate", e)


def _evaluate(args: argparse.Namespace) -> int:
    from .io.saving import load_model
    from .train import evaluate

    model, vocab, meta = load_model(args.checkpoint)
    # Score the data the model was trained on unless told otherwise: the checkpoint remembers
    # --data-dir and --limit-tokens (numlstm train records them).
    source = (meta.get("training") or {}).get("data_source") or {}
    data_dir = args.data_dir or (source.get("data_dir") if isinstance(source, dict) else None)
    limit = args.limit_tokens if args.limit_tokens is not None else source.get("limit_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        limit = None
    if data_dir is not None and not args.data_dir:
        print(f"data: {data_dir} (recorded in the checkpoint)"
              + (f", first {limit:,} tokens of each split" if limit else ""))  # fmt: skip
    data = _data(data_dir, limit)
    if vocab != data.id_to_word:
        raise ValueError("the checkpoint's vocabulary differs from the data's: it was trained on "
                         f"other data ({DATA_HINT})")  # fmt: skip
    result = evaluate(model, getattr(data, args.split), args.batch_size, args.num_steps)
    print(f"{args.split} perplexity: {result.perplexity:.3f} "
          f"({result.words_per_second:,.0f} words/s, {result.seconds:.1f} s)")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = ("train", "evaluate", "generate")
    if not argv or argv[0] in ("-h", "--help"):
        # --help is an answer (stdout, success); no command at all is a usage error.
        print(__doc__.strip(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] not in commands:
        print(f"numlstm: unknown command {argv[0]!r}; choose one of {', '.join(commands)} "
              "(python -m numlstm --help)", file=sys.stderr)  # fmt: skip
        return 2
    if argv[0] == "generate":
        from .generate import generate_main

        return generate_main(argv[1:])
    return {"train": train_main, "evaluate": evaluate_main}[argv[0]](argv[1:])
