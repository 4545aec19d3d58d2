"""Hostile inputs, one row each: what is run, and the error (or exit code) it must give.

Every row is a :class:`Case`. ``run`` is either

* a callable ``run(env)`` (``env.tmp`` is a fresh folder, ``env.mp`` pytest's monkeypatch);
  the case passes when it raises ``expect`` (an exception type) whose message contains
  ``fragment``; or
* a CLI argv for ``python -m numlstm`` (run in-process through ``numlstm.cli.main``), where
  ``{tmp}`` stands for the fresh folder; the case passes when it returns exit code ``expect``
  (an int), prints ``fragment`` on stderr and no traceback.

``setup(env)`` (optional) prepares files first, e.g. ``setup=nan_model`` writes
``{tmp}/nan.npz``. Every case runs under a 30 s alarm, so a case that would hang fails.

To add a case, append a ``Case(...)`` to ``CASES`` (or to a new list added to it); reuse the
file builders below (``tiny_model``, ``crafted_model``, ``raw_npz``, ...).
"""

from __future__ import annotations

import io
import json
import os
import signal
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy_format

import numlstm
from numlstm import cli
from numlstm.generate import generate
from numlstm.gradcheck import gradcheck
from numlstm.io import ptb
from numlstm.io.checkpoint import CheckpointError, load_checkpoint, read_meta, save_checkpoint
from numlstm.io.ptb import DataError
from numlstm.io.saving import load_model, save_model
from numlstm.model import LanguageModel
from numlstm.optim import SGD, Adam, clip_factor

WORDS = ["<unk>", "<eos>", "the", "a", "cat", "sat"]
ALARM_S = 30


@dataclass
class Env:
    tmp: Path
    mp: pytest.MonkeyPatch


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Env], object] | Sequence[str]
    expect: type[BaseException] | int
    fragment: str
    setup: Callable[[Env], object] | None = None


# ---------------------------------------------------------------------------------- builders


def tiny_model(seed: int = 0) -> LanguageModel:
    return LanguageModel(len(WORDS), 4, 1, seed=seed)


def cli_case(argv: str, fragment: str, status: int = 2) -> Case:
    """A command-line row: ``argv`` split on spaces, run in-process through cli.main."""
    return Case(f"cli {argv}", argv.split(), status, fragment)


def nan_state() -> list:
    state = tiny_model().init_state(2)
    state[0][0][0, 0] = np.nan
    return state


def model_file(env: Env, name: str = "m.npz") -> Path:
    """A valid saved model at ``env.tmp / name``."""
    return save_model(env.tmp / name, tiny_model(), WORDS)


def crafted_model(env: Env, name: str = "bad.npz", *, arrays=None, **meta_changes) -> Path:
    """A valid model's arrays and meta re-saved (checksums intact) with changed meta/arrays;
    ``model=...`` entries given as ``model_<key>`` update the saved config."""
    good, meta = load_checkpoint(model_file(env))
    meta = json.loads(json.dumps(meta))
    for key, value in meta_changes.items():
        if key.startswith("model_"):
            meta["model"][key[len("model_") :]] = value
        else:
            meta[key] = value
    return save_checkpoint(env.tmp / name, {**good, **(arrays or {})}, meta)


def load_crafted(**meta_changes) -> Callable[[Env], object]:
    """A case: ``load_model`` of ``crafted_model(env, **meta_changes)``."""
    return lambda env: load_model(crafted_model(env, **meta_changes))


def nan_model(env: Env) -> Path:
    m = tiny_model()
    m.params["softmax_b"][2] = np.nan
    return save_model(env.tmp / "nan.npz", m, WORDS)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    npy_format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    """Just the .npy header of an array of this shape and dtype (no data)."""
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def meta_member(arrays: dict[str, dict], meta: dict | None = None, raw: bytes | None = None):
    blob = raw
    if blob is None:
        header = {"format": "numlstm-checkpoint", "format_version": 1, "meta": meta or {}}
        blob = json.dumps({**header, "arrays": arrays}).encode()
    return npy_bytes(np.frombuffer(blob, np.uint8))


def raw_npz(path: Path, members: dict[str, bytes], compress: bool = False) -> Path:
    """A zip with exactly these members (name -> bytes), nothing checked."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def entry(shape: list[int], dtype: str = "<f8") -> dict:
    return {"dtype": dtype, "shape": shape, "sha256": "0" * 64}


def huge_npy_header(env: Env) -> Path:
    """Metadata and .npy header both declare 10**12 float64; the member holds 8 bytes."""
    data = npy_header((10**12,)) + b"\0" * 8
    return raw_npz(
        env.tmp / "huge.npz", {"__meta__.npy": meta_member({"w": entry([10**12])}), "w.npy": data}
    )


def deep_json(env: Env) -> Path:
    raw = b'{"format": "numlstm-checkpoint", "format_version": 1, "meta": ' + b"[" * 100_000
    return raw_npz(env.tmp / "deep.npz", {"__meta__.npy": meta_member({}, raw=raw)})


def deflate_bomb(env: Env) -> Path:
    """An array whose .npy header says 4 floats, followed by 20 MB of deflated zeros."""
    data = npy_header((4,)) + bytes(32 + 20 * 2**20)
    members = {"__meta__.npy": meta_member({"w": entry([4])}), "w.npy": data}
    return raw_npz(env.tmp / "bomb.npz", members, compress=True)


def duplicate_member(env: Env) -> Path:
    path = env.tmp / "dup.npz"
    w = npy_bytes(np.ones(2))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("__meta__.npy", meta_member({"w": entry([2])}))
        zf.writestr("w.npy", w)
        with pytest.warns(UserWarning):
            zf.writestr("w.npy", w)
    return path


def fifo(env: Env) -> Path:
    path = env.tmp / "fifo.npz"
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(path)
    return path


def edited_cache(env: Env) -> None:
    """A cache holding the word files, one of them edited after download."""
    d = env.tmp / "cache"
    d.mkdir()
    texts = {"ptb.train.txt": " a b \n", "ptb.valid.txt": " a \n", "ptb.test.txt": " b \n"}
    for name, text in texts.items():
        (d / name).write_text(text)
    sha = {n: __import__("hashlib").sha256(t.encode()).hexdigest() for n, t in texts.items()}
    env.mp.setenv("NUMLSTM_DATA_DIR", str(d))
    assert ptb.ensure_ptb(file_sha256=sha, download=False) == d  # intact: accepted
    (d / "ptb.valid.txt").write_text(" b \n")  # same size, other content
    ptb.ensure_ptb(file_sha256=sha, download=False)


def data_dir_env(value: Callable[[Path], Path]) -> Callable[[Env], object]:
    """ensure_ptb() with NUMLSTM_DATA_DIR set to ``value(tmp)`` and a (never reached) URL."""

    def run(env: Env) -> object:
        env.mp.setenv("NUMLSTM_DATA_DIR", str(value(env.tmp)))
        return ptb.ensure_ptb(url=(env.tmp / "none.tgz").as_uri())

    return run


def a_file(tmp: Path) -> Path:
    (tmp / "plain").write_text("x")
    return tmp / "plain"


def read_only_dir(tmp: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    d = tmp / "ro"
    d.mkdir(mode=0o500)
    return d / "ptb"


def sgd_step_with(bad: float) -> Callable[[Env], object]:
    def run(env: Env) -> object:
        p = {"w": np.ones(3, np.float32)}
        return SGD(p, 0.1).step({"w": np.array([1.0, bad, 0.0], np.float32)})

    return run


def set_attr(obj_factory: Callable[[], object], name: str, value: object):
    return lambda env: setattr(obj_factory(), name, value)


def _params() -> dict[str, np.ndarray]:
    return {"w": np.ones(3, np.float32)}


# ---------------------------------------------------------------------------------- the table

CKPT = "{tmp}/m.npz"
NAN = "{tmp}/nan.npz"
GEN = ["generate", "--checkpoint", CKPT, "--prime", "the cat"]

CASES: list[Case] = [
    # -- checkpoint.py / saving.py: nothing declared is believed before it is checked
    Case("ckpt config vocab_size 2e8", load_crafted(model_vocab_size=200_000_000),
         CheckpointError, "vocab_size=200000000"),
    Case("ckpt config num_layers 1e6", load_crafted(model_num_layers=10**6),
         CheckpointError, "num_layers=1000000"),
    Case("ckpt config hidden_size mismatch", load_crafted(model_hidden_size=5),
         CheckpointError, "hidden_size=5"),
    Case("ckpt config unknown key", load_crafted(model_evil=1),
         CheckpointError, "unknown key"),
    Case("ckpt config bool num_layers", load_crafted(model_num_layers=True),
         CheckpointError, "num_layers must be a positive integer"),
    Case("ckpt config nan forget_bias", load_crafted(model_forget_bias=float("nan")),
         CheckpointError, "forget_bias"),
    Case("ckpt vocab duplicates", load_crafted(vocab=["a"] * len(WORDS)),
         CheckpointError, "more than once"),
    Case("ckpt npy header 1e12 elements", lambda e: load_checkpoint(huge_npy_header(e)),
         CheckpointError, "declares 8000000000000 data bytes"),
    Case("ckpt JSON nested 100000 deep", lambda e: read_meta(deep_json(e)),
         CheckpointError, "nested too deeply"),
    Case("ckpt deflate bomb behind a small npy header", lambda e: load_checkpoint(deflate_bomb(e)),
         CheckpointError, "archive member holds"),
    Case("ckpt duplicate zip member", lambda e: load_checkpoint(duplicate_member(e)),
         CheckpointError, "appears twice"),
    Case("ckpt FIFO", lambda e: load_checkpoint(fifo(e)), CheckpointError, "regular file"),
    Case("ckpt FIFO read_meta", lambda e: read_meta(fifo(e)), CheckpointError, "regular file"),
    Case("ckpt directory", lambda e: load_checkpoint(e.tmp), CheckpointError, "a directory"),
    Case("ckpt NaN weights", lambda e: load_model(nan_model(e)),
         CheckpointError, "parameter 'softmax_b' holds NaN or inf"),
    # -- generate.py
    Case("generate NaN weights (internal sampler)",
         lambda e: generate(load_model(nan_model(e), allow_nonfinite=True)[0], [2], 3, seed=0),
         ValueError, "NaN"),
    Case("generate greedy NaN weights",
         lambda e: generate(load_model(nan_model(e), allow_nonfinite=True)[0], [2], 3,
                            temperature=0),
         ValueError, "NaN"),
    Case("cli generate NaN checkpoint", ["generate", "--checkpoint", NAN, "--prime", "the"], 2,
         "numlstm generate: error:", setup=nan_model),
    Case("cli generate checkpoint is a directory",
         ["generate", "--checkpoint", "{tmp}", "--prime", "the"], 2, "a directory"),
    Case("cli generate checkpoint is a FIFO",
         ["generate", "--checkpoint", "{tmp}/fifo.npz", "--prime", "the"], 2, "regular file",
         setup=fifo),
    Case("cli generate --words -5", [*GEN, "--words", "-5"], 2, "--words", setup=model_file),
    Case("cli generate --temperature nan", [*GEN, "--temperature", "nan"], 2, "--temperature",
         setup=model_file),
    Case("cli generate --temperature inf", [*GEN, "--temperature", "inf"], 2, "--temperature",
         setup=model_file),
    Case("cli generate --temperature -1", [*GEN, "--temperature", "-1"], 2, "--temperature",
         setup=model_file),
    Case("cli generate --top-k 0", [*GEN, "--top-k", "0"], 2, "--top-k", setup=model_file),
    Case("cli generate --top-p 0", [*GEN, "--top-p", "0"], 2, "--top-p", setup=model_file),
    Case("cli generate --top-p nan", [*GEN, "--top-p", "nan"], 2, "--top-p", setup=model_file),
    Case("cli generate --top-p 1.5", [*GEN, "--top-p", "1.5"], 2, "--top-p", setup=model_file),
    Case("cli generate --seed -1", [*GEN, "--seed", "-1"], 2, "--seed", setup=model_file),
    # -- cli.py evaluate reads checkpoints through load_model
    Case("cli evaluate checkpoint is a FIFO",
         ["evaluate", "--checkpoint", "{tmp}/fifo.npz", "--data-dir", "{tmp}"], 2,
         "regular file", setup=fifo),
    # -- optim.py
    Case("SGD lr nan", lambda e: SGD(_params(), float("nan")), ValueError, "lr"),
    Case("SGD lr -1", lambda e: SGD(_params(), -1.0), ValueError, "lr"),
    Case("SGD lr assigned inf", set_attr(lambda: SGD(_params(), 0.1), "lr", float("inf")),
         ValueError, "lr"),
    Case("SGD lr str", lambda e: SGD(_params(), "0.1"), TypeError, "lr"),
    Case("Adam lr nan", lambda e: Adam(_params(), lr=float("nan")), ValueError, "lr"),
    Case("Adam beta1 1.0", lambda e: Adam(_params(), beta1=1.0), ValueError, "beta1"),
    Case("Adam beta2 nan", lambda e: Adam(_params(), beta2=float("nan")), ValueError, "beta2"),
    Case("Adam eps 0", lambda e: Adam(_params(), eps=0.0), ValueError, "eps"),
    Case("Adam eps assigned -1", set_attr(lambda: Adam(_params()), "eps", -1.0),
         ValueError, "eps"),
    Case("SGD step NaN gradient", sgd_step_with(np.nan), FloatingPointError, "'w'"),
    Case("SGD step inf gradient", sgd_step_with(np.inf), FloatingPointError, "'w'"),
    Case("SGD step grad_scale nan",
         lambda e: SGD(_params(), 0.1).step({"w": np.ones(3, np.float32)}, float("nan")),
         ValueError, "grad_scale"),
    Case("Adam step NaN gradient",
         lambda e: Adam(_params()).step({"w": np.array([np.nan, 0, 0], np.float32)}),
         FloatingPointError, "'w'"),
    Case("clip_factor max_norm -1", lambda e: clip_factor(10.0, -1.0), ValueError, "max_norm"),
    Case("clip_factor max_norm 0", lambda e: clip_factor(10.0, 0.0), ValueError, "max_norm"),
    Case("clip_factor max_norm nan", lambda e: clip_factor(10.0, float("nan")), ValueError,
         "max_norm"),
    Case("clip_factor max_norm inf", lambda e: clip_factor(10.0, float("inf")), ValueError,
         "max_norm"),
    # -- gradcheck.py
    Case("gradcheck f returns an array",
         lambda e: gradcheck(lambda: np.ones(3), {"x": np.ones(2)}, {"x": np.zeros(2)}),
         TypeError, "f must return a scalar loss (a float), got an array of shape (3,)"),
    Case("gradcheck f returns None",
         lambda e: gradcheck(lambda: None, {"x": np.ones(2)}, {"x": np.zeros(2)}),
         TypeError, "got NoneType"),
    # -- ptb.py cache
    Case("ptb NUMLSTM_DATA_DIR is a file", data_dir_env(a_file), DataError, "NUMLSTM_DATA_DIR"),
    Case("ptb NUMLSTM_DATA_DIR under a file", data_dir_env(lambda t: a_file(t) / "ptb"),
         DataError, "NUMLSTM_DATA_DIR"),
    Case("ptb NUMLSTM_DATA_DIR not creatable", data_dir_env(lambda t: Path("/sys/numlstm-x")),
         DataError, "NUMLSTM_DATA_DIR"),
    Case("ptb NUMLSTM_DATA_DIR read-only parent", data_dir_env(read_only_dir), DataError,
         "NUMLSTM_DATA_DIR"),
    Case("ptb edited cached file", edited_cache, DataError, "edited or damaged"),
    # -- command line (cli.py): argparse types, Config.validate, data location
    cli_case('',
             "commands:"),
    cli_case('bogus',
             "unknown command 'bogus'"),
    cli_case('train --seed -1',
             "argument --seed: must be >= 0"),
    cli_case('train --seed x',
             "argument --seed: 'x' is not an integer"),
    cli_case('train --threads 0',
             "argument --threads: must be >= 1"),
    cli_case('train --threads -3',
             "argument --threads: must be >= 1"),
    cli_case('train --limit-tokens -5',
             "argument --limit-tokens: must be >= 0"),
    cli_case('train --checkpoint-every soon',
             "argument --checkpoint-every: 'soon' is not"),
    cli_case('train --checkpoint-every -5m',
             "argument --checkpoint-every"),
    cli_case('train --max_grad_norm -1',
             "max_grad_norm must be > 0"),
    cli_case('train --max_grad_norm 0',
             "max_grad_norm must be > 0"),
    cli_case('train --max_grad_norm nan',
             "max_grad_norm must be a finite number"),
    cli_case('train --max_max_epoch -1',
             "max_max_epoch must be >= 1"),
    cli_case('train --max_epoch -1',
             "max_epoch must be >= 0"),
    cli_case('train --lr_decay -1',
             "lr_decay must be > 0"),
    cli_case('train --lr_decay nan',
             "lr_decay must be a finite number"),
    cli_case('train --lr_decay inf',
             "lr_decay must be a finite number"),
    cli_case('train --learning_rate nan',
             "learning_rate must be a finite number"),
    cli_case('train --learning_rate inf',
             "learning_rate must be a finite number"),
    cli_case('train --learning_rate -1',
             "learning_rate must be > 0"),
    cli_case('train --init_scale 1e30',
             "init_scale must be <= 100"),
    cli_case('train --init_scale nan',
             "init_scale must be a finite number"),
    cli_case('train --keep_prob 1.5',
             "keep_prob must be in (0, 1]"),
    cli_case('train --keep_prob 0',
             "keep_prob must be > 0"),
    cli_case('train --keep-prob nan',
             "keep_prob must be a finite number"),
    cli_case('train --state-keep-prob 0',
             "state_keep_prob must be a number in (0, 1]"),
    cli_case('train --input-keep-prob 1.5',
             "input_keep_prob must be a number in (0, 1]"),
    cli_case('train --output-keep-prob nan',
             "output_keep_prob must be a number in (0, 1]"),
    cli_case('train --embedding-keep-prob -0.5',
             "embedding_keep_prob must be a number in (0, 1]"),
    cli_case('train --variational time',
             "argument --variational: invalid choice: 'time'"),
    cli_case('train --cell gru --state-keep-prob 0.5',
             "state_keep_prob=0.5 < 1 (state dropout, D4) is supported for cell='lstm' only"),
    cli_case('train --cell rnn --state-keep-prob 0.5',
             "not cell='rnn': use input_keep_prob and output_keep_prob for a plain RNN"),
    cli_case('train --cell elman',
             "argument --cell: invalid choice: 'elman'"),
    cli_case('train --hidden_size 100000000',
             "GiB for the parameters alone"),
    cli_case('train --num_layers 100000',
             "num_layers must be <= 64"),
    cli_case('train --num_steps 0',
             "num_steps must be >= 1"),
    cli_case('train --batch_size 0',
             "batch_size must be >= 1"),
    cli_case('train --vocab_size 1',
             "vocab_size must be >= 2"),
    cli_case('train --cell-clip -1',
             "cell_clip must be > 0"),
    cli_case('train --cell-clip nan',
             "cell_clip must be a finite number"),
    cli_case('train --proj-clip inf --num-proj 5',
             "proj_clip must be a finite number"),
    cli_case('train --proj-clip 0 --num-proj 5',
             "proj_clip must be > 0"),
    cli_case('train --proj-clip 1',
             "proj_clip clips the projection: it needs num_proj"),
    cli_case('train --num-proj 0',
             "argument --num-proj/--num_proj: must be >= 1"),
    cli_case('train --num-proj x',
             "--num_proj: 'x' is not an integer"),
    cli_case('train --embedding-size 0',
             "argument --embedding-size/--embedding_size: must be >= 1"),
    cli_case('train --tie-embeddings --num-proj 50',
             "tie_embeddings needs the top layer's output width"),
    cli_case('train --tie-embeddings --embedding-size 64',
             "200 != 64"),
    cli_case('train --cell gru --peepholes',
             "peepholes: the LSTMP options need --cell lstm"),
    cli_case('train --cell gru --num-proj 10 --cell-clip 3',
             "cell_clip, num_proj: the LSTMP options need --cell lstm"),
    cli_case('train --cell rnn --peepholes',
             "peepholes: the LSTMP options need --cell lstm"),
    cli_case('train --cell rnn --tie-embeddings --embedding-size 64',
             "200 != 64"),
    cli_case('train --data-dir /nonexistent/ptb',
             "pass --data-dir DIR"),
    cli_case('evaluate --checkpoint /nonexistent/c.npz',
             "/nonexistent/c.npz"),
    cli_case('evaluate --checkpoint x.npz --batch-size 0',
             "--batch-size: must be >="),
    # -- layers and model (lstm.py, gru.py, model.py)
    Case("lstm batch-major x", lambda e: numlstm.lstm_forward(
        np.zeros((3, 5, 4)), np.zeros((3, 6)), np.zeros((3, 6)), np.zeros((4, 24)),
        np.zeros((6, 24)), np.zeros(24)), ValueError, "x looks batch-major"),
    Case("gru batch-major x", lambda e: numlstm.gru_forward(
        np.zeros((3, 5, 4)), np.zeros((3, 6)), np.zeros((4, 18)), np.zeros((6, 18)),
        np.zeros(18), np.zeros(18)), ValueError, "x looks batch-major"),
    Case("gru reset_after string", lambda e: numlstm.gru_forward(
        np.zeros((2, 3, 4)), np.zeros((3, 6)), np.zeros((4, 18)), np.zeros((6, 18)),
        np.zeros(18), np.zeros(18), reset_after="False"), TypeError,
        "reset_after must be True or False"),
    Case("lstm lengths float", lambda e: numlstm.lstm_forward(
        np.zeros((3, 2, 4)), np.zeros((2, 6)), np.zeros((2, 6)), np.zeros((4, 24)),
        np.zeros((6, 24)), np.zeros(24), lengths=np.array([3.0, 1.0])), TypeError,
        "lengths must hold integers"),
    Case("gru lengths longer than x", lambda e: numlstm.gru_forward(
        np.zeros((3, 2, 4)), np.zeros((2, 6)), np.zeros((4, 18)), np.zeros((6, 18)),
        np.zeros(18), np.zeros(18), lengths=np.array([4, 1])), ValueError,
        "lengths[0] = 4 is outside [0, T] = [0, 3]"),
    Case("rnn lengths of the wrong shape", lambda e: numlstm.rnn_forward(
        np.zeros((3, 2, 4)), np.zeros((2, 6)), np.zeros((4, 6)), np.zeros((6, 6)),
        np.zeros(6), lengths=np.array([3, 1, 2])), ValueError,
        "lengths must have shape (B,) = (2,)"),
    Case("reverse_sequence negative length", lambda e: numlstm.reverse_sequence(
        np.zeros((3, 2)), np.array([1, -1])), ValueError, "lengths[1] = -1"),
    Case("model rnn with peepholes", lambda e: LanguageModel(50, 8, 1, cell="rnn",
         peepholes=True), ValueError, "peepholes: LSTMP options need cell='lstm', got 'rnn'"),
    Case("model reset_after string", lambda e: LanguageModel(50, 8, 1, cell="gru",
         reset_after="False"), TypeError, "reset_after must be True or False"),
    Case("model init_scale nan", lambda e: LanguageModel(50, 8, 1, init_scale=float("nan")),
         ValueError, "init_scale must be a finite number"),
    Case("model NaN in the passed state", lambda e: tiny_model().loss(
        np.zeros((2, 3), int), np.zeros((2, 3), int), nan_state()), ValueError,
        "state[0] contains NaN or inf"),
    Case("model float64 masks on a float32 model", lambda e: tiny_model().loss_and_grads(
        np.zeros((2, 3), int), np.zeros((2, 3), int), tiny_model().init_state(2), 0.5,
        masks=[np.ones((3, 2, 4))] * 2), TypeError, "masks[0] must be float32 like the model"),
    Case("model mask of the wrong shape", lambda e: tiny_model().loss_and_grads(
        np.zeros((2, 3), int), np.zeros((2, 3), int), tiny_model().init_state(2), 0.5,
        masks=[np.ones((3, 1, 4), np.float32)] * 2), ValueError, "masks[0] must be an array"),
]  # fmt: skip


# ---------------------------------------------------------------------------------- the runner


def _alarm(signum, frame):
    raise TimeoutError(f"hostile case still running after {ALARM_S} s (hangs?)")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    env = Env(tmp_path, monkeypatch)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(ALARM_S)
    try:
        if case.setup is not None:
            case.setup(env)
        if callable(case.run):
            assert isinstance(case.expect, type), "a callable case expects an exception type"
            with pytest.raises(case.expect) as info:
                case.run(env)
            assert case.fragment in str(info.value)
        else:
            argv = [a.replace("{tmp}", str(tmp_path)) for a in case.run]
            monkeypatch.chdir(tmp_path)  # a run folder, if one were made, lands here
            try:
                code = cli.main(argv)
            except SystemExit as exit_:  # argparse's own errors name the option
                code = exit_.code
            err = capsys.readouterr().err
            assert code == case.expect, err
            assert case.fragment in err
            assert "Traceback" not in err
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_case_names_are_unique() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
