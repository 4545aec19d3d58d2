"""Run folders: nothing overwritten, one writer, resumes that are the same run, real signals."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from numlstm import train
from numlstm.config import Config
from numlstm.io import ptb, run_folder
from numlstm.io.run_folder import RunFolderError
from numlstm.io.saving import load_model, save_model

REPO = Path(__file__).resolve().parents[1]
PTB_DIR = Path(os.environ.get("NUMLSTM_PTB_DIR", REPO.parent / "shared" / "data" / "ptb"))
QUIET = dict(progress="none", log=lambda s: None)


@pytest.fixture(scope="module")
def data() -> ptb.PTBData:
    if not (PTB_DIR / "ptb.train.txt").exists():
        pytest.skip(f"real PTB files not found in {PTB_DIR}")
    d = ptb.load_ptb(PTB_DIR)
    return ptb.PTBData(d.train[:6000], d.valid[:1500], d.test[:300], d.word_to_id, d.id_to_word)


def _tiny(**changes) -> Config:
    base = Config(num_layers=1, hidden_size=12, num_steps=10, max_epoch=1, max_max_epoch=1,
                  batch_size=10, keep_prob=0.5)  # fmt: skip
    return base.replace(**changes)


def _columns(history: list[dict]) -> list[tuple]:
    """The per-epoch numbers that must not depend on interruptions (not the timings)."""
    return [(h["epoch"], h["lr"], h["train_perplexity"], h["valid_perplexity"]) for h in history]


def test_a_run_folder_is_not_overwritten_without_a_flag(data, tmp_path):
    first = train.train(_tiny(), data, tmp_path, **QUIET)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    with pytest.raises(RunFolderError, match="already holds a run.*--resume.*--overwrite"):
        train.train(_tiny(), data, tmp_path, **QUIET)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before  # untouched
    again = train.train(_tiny(), data, tmp_path, overwrite=True, **QUIET)
    assert _columns(again["history"]) == _columns(first["history"])


def test_resume_names_the_fields_that_differ(data, tmp_path):
    train.train(_tiny(), data, tmp_path, **QUIET)
    with pytest.raises(RunFolderError, match=r"hidden_size: 12 -> 8; keep_prob: 0.5 -> 1.0"):
        train.train(_tiny(hidden_size=8, keep_prob=1.0), data, tmp_path, resume=True, **QUIET)
    with pytest.raises(RunFolderError, match="holds an LSTM run, not a GRU"):
        train.train(_tiny(), data, tmp_path, cell="gru", resume=True, **QUIET)


def test_a_finished_run_can_be_extended_and_matches_a_longer_run(data, tmp_path):
    straight = train.train(_tiny(max_max_epoch=2), data, tmp_path / "a", **QUIET)
    train.train(_tiny(max_max_epoch=1), data, tmp_path / "b", **QUIET)
    extended = train.train(_tiny(max_max_epoch=2), data, tmp_path / "b", resume=True, **QUIET)
    assert _columns(extended["history"]) == _columns(straight["history"])
    assert extended["test_perplexity"] == straight["test_perplexity"]
    assert [s["ended"] for s in extended["segments"]] == ["finished", "finished"]
    with pytest.raises(RunFolderError, match="already trained 2 epochs"):
        train.train(_tiny(max_max_epoch=1), data, tmp_path / "b", resume=True, **QUIET)


def test_resume_refuses_different_data(data, tmp_path):
    train.train(_tiny(max_max_epoch=1), data, tmp_path, **QUIET)
    changed = ptb.PTBData(data.train[:5000], data.valid, data.test, data.word_to_id,
                          data.id_to_word)  # fmt: skip
    with pytest.raises(RunFolderError, match="different data.*train: 6000 tokens then, 5000 now"):
        train.train(_tiny(max_max_epoch=2), changed, tmp_path, resume=True, **QUIET)
    remapped = data.train.copy()
    remapped[100] = (remapped[100] + 1) % 10000
    changed = ptb.PTBData(remapped, data.valid, data.test, data.word_to_id, data.id_to_word)
    with pytest.raises(RunFolderError, match="train: same length .* different ids"):
        train.train(_tiny(max_max_epoch=2), changed, tmp_path, resume=True, **QUIET)


@pytest.mark.parametrize(
    "edit, fragment",
    [
        ({"step": 10_000}, "inconsistent training position"),
        ({"step": -1}, "inconsistent training position"),
        ({"epoch": -2}, "inconsistent training position"),
        ({"iters": 7}, "inconsistent training position"),
        ({"history": []}, "inconsistent training position"),
        ({"costs": float("nan")}, "inconsistent training position"),
        ({"step": 1.5}, "inconsistent training position"),
    ],
)
def test_edited_training_metadata_is_refused(data, tmp_path, edit, fragment):
    config = _tiny(max_max_epoch=2)
    train.train(_tiny(max_max_epoch=1), data, tmp_path, **QUIET)
    path = tmp_path / "checkpoint.npz"
    model, vocab, meta = load_model(path)
    meta["training"].update(edit)
    save_model(path, model, vocab, {k: v for k, v in meta.items() if k not in
                                    ("kind", "model", "vocab")})  # fmt: skip
    with pytest.raises(RunFolderError, match=fragment):
        train.train(config, data, tmp_path, resume=True, **QUIET)


def test_one_training_per_folder(data, tmp_path):
    with run_folder.lock(tmp_path):
        with pytest.raises(RunFolderError, match=f"another training \\(pid {os.getpid()}\\)"):
            train.train(_tiny(), data, tmp_path, **QUIET)
    train.train(_tiny(), data, tmp_path, **QUIET)  # the lock is free again


def test_stale_temp_files_are_removed_and_nothing_else(data, tmp_path):
    stale = [tmp_path / ".checkpoint.npz.abc12345.tmp", tmp_path / ".summary.json.999.tmp"]
    keep = [tmp_path / "notes.tmp", tmp_path / ".other.npz.x.tmp", tmp_path / "mine.txt"]
    for p in stale + keep:
        p.write_text("x")
    train.train(_tiny(), data, tmp_path, **QUIET)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in keep)


def test_an_unwritable_folder_is_refused_before_training(data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunFolderError, match="cannot write to the run folder"):
        train.train(_tiny(), data, blocker / "run", **QUIET)


def test_bad_checkpoint_interval_is_refused(data, tmp_path):
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="checkpoint_every"):
            train.train(_tiny(), data, tmp_path, checkpoint_every=bad, **QUIET)


def test_progress_lines_print_on_short_epochs():
    for total in (1, 9, 10, 49, 109, 110, 1327):
        printed = [s for s in range(total) if train._is_tenth(s, total)]
        assert 1 <= len(printed) <= 11, (total, printed)
        if total >= 10:
            assert len(printed) >= 10, (total, printed)


# --------------------------------------------------------------------------------------------
# Real signals: a run stopped and resumed any number of times is the same run
# --------------------------------------------------------------------------------------------

ARGS = ["--config", "test", "--hidden_size", "24", "--num_steps", "10", "--batch_size", "10",
        "--max_max_epoch", "3", "--max_epoch", "1", "--keep_prob", "0.5", "--limit-tokens",
        "30000", "--progress", "lines"]  # fmt: skip


def _start(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "numlstm", "train", *ARGS, "--data-dir", str(PTB_DIR),
           "--out", str(out), *extra]  # fmt: skip
    # This checkout's numlstm, not whichever one is installed (a worktree beside an editable
    # install of another checkout would test the other code).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    return subprocess.Popen(cmd, cwd=out.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip


def _log_numbers(path: Path) -> list[tuple[str, ...]]:
    with path.open() as f:
        return [(r["epoch"], r["lr"], r["train_perplexity"], r["valid_perplexity"])
                for r in csv.DictReader(f)]  # fmt: skip


@pytest.mark.skipif(not (PTB_DIR / "ptb.train.txt").exists(), reason="real PTB files not found")
def test_signals_at_random_moments_resume_to_the_same_run(tmp_path):
    straight = _start(tmp_path / "straight")
    out, err = straight.communicate(timeout=240)
    assert straight.returncode == 0, err

    rng = random.Random(12345)
    run, codes, deadline = tmp_path / "stopped", [], time.monotonic() + 420
    signals = [signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGKILL]
    for k in range(12):
        p = _start(run, "--resume", "--checkpoint-every", "0.3s")
        assert p.stdout.readline()  # the config line: imports are done, training starts
        if k < len(signals):
            # Wait for the first progress line of an epoch: on a loaded machine loading the
            # data and the kernels can outlast the sleep, and a signal that always landed in
            # start-up would never test a stop in training (start-up stops have their own tests).
            line = p.stdout.readline()
            while line and not line.startswith("Epoch:"):
                line = p.stdout.readline()
            time.sleep(rng.uniform(0.1, 1.5))
            p.send_signal(signals[k])
        p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        codes.append(p.returncode)
        if p.returncode == 0:
            break
    print("exit codes:", codes)
    assert codes[-1] == 0, codes
    # Each signal stopped a run: -9 killed; 143 (SIGTERM) and 130 (SIGINT) after a checkpoint.
    # A signal may land after the run finished (0) when the machine is fast: then no stop.
    assert all(c in (-9, 143, 130) for c in codes[:-1]), codes
    assert len(codes) >= 3, codes

    a = json.loads((tmp_path / "straight" / "summary.json").read_text())
    b = json.loads((run / "summary.json").read_text())
    assert _log_numbers(run / "log.csv") == _log_numbers(tmp_path / "straight" / "log.csv")
    # every step's gradient norm, once each, bit for bit (kills between the file's write and
    # the checkpoint's included: io/grad_norm_log.py)
    grad_norms = (run / "grad_norm.csv").read_bytes()
    assert grad_norms == (tmp_path / "straight" / "grad_norm.csv").read_bytes()
    assert grad_norms.count(b"\n") == 1 + 3 * b["grad_norm"]["steps_per_epoch"]
    assert b["grad_norm"]["notes"] == []
    assert b["test_perplexity"] == a["test_perplexity"]
    assert b["finished"] and b["segments"][-1]["ended"] == "finished"
    ended = [s["ended"] for s in b["segments"]]
    assert any(e.startswith("stopped by SIG") for e in ended) or any(
        e.startswith("killed") for e in ended), ended  # fmt: skip
    assert not list(run.glob(".*.tmp"))
    model_a, _, _ = load_model(tmp_path / "straight" / "checkpoint.npz")
    model_b, _, _ = load_model(run / "checkpoint.npz")
    for name, p in model_a.params.items():
        np.testing.assert_array_equal(model_b.params[name], p, err_msg=name)
