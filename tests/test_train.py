"""Training loop, configs, checkpoints/resume and the command line, on a slice of real PTB."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import numlstm
from numlstm import train
from numlstm.config import Config, get_config
from numlstm.io import ptb
from numlstm.io.saving import load_model

REPO = Path(__file__).resolve().parents[1]
PTB_DIR = Path(os.environ.get("NUMLSTM_PTB_DIR", REPO.parent / "shared" / "data" / "ptb"))

needs_ptb = pytest.mark.skipif(
    not (PTB_DIR / "ptb.train.txt").exists(), reason=f"real PTB files not found in {PTB_DIR}"
)


@pytest.fixture(scope="module")
def ptb_slice() -> ptb.PTBData:
    """The real vocabulary (10,000 words) with the first tokens of each split."""
    if not (PTB_DIR / "ptb.train.txt").exists():
        pytest.skip(f"real PTB files not found in {PTB_DIR}")
    d = ptb.load_ptb(PTB_DIR)
    return ptb.PTBData(d.train[:12000], d.valid[:3000], d.test[:600], d.word_to_id, d.id_to_word)


def test_configs_match_the_tutorial():
    small, medium, large, test = (get_config(n) for n in ("small", "medium", "large", "test"))
    assert (small.num_layers, small.hidden_size, small.num_steps, small.max_max_epoch) == (
        2, 200, 20, 13)  # fmt: skip
    assert [c.max_grad_norm for c in (small, medium, large, test)] == [5, 5, 10, 1]
    assert [c.keep_prob for c in (small, medium, large, test)] == [1.0, 0.5, 0.35, 1.0]
    assert [c.init_scale for c in (small, medium, large, test)] == [0.1, 0.05, 0.04, 0.1]
    assert [c.hidden_size for c in (medium, large, test)] == [650, 1500, 2]
    assert [c.max_epoch for c in (small, medium, large, test)] == [4, 6, 14, 1]
    assert [c.max_max_epoch for c in (medium, large, test)] == [39, 55, 1]
    assert [c.lr_decay for c in (small, medium)] == [0.5, 0.8]
    assert large.lr_decay == pytest.approx(1 / 1.15)
    assert all(c.batch_size == 20 and c.vocab_size == 10000 for c in (small, medium, large, test))
    with pytest.raises(ValueError, match="unknown config"):
        get_config("huge")


def test_learning_rate_schedule_is_the_tutorials():
    small = get_config("small")
    assert [small.lr_at(e) for e in range(7)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]
    medium = get_config("medium")
    assert medium.lr_at(5) == 1.0 and medium.lr_at(6) == pytest.approx(0.8)


def _tiny(**changes) -> Config:
    base = Config(num_layers=1, hidden_size=16, num_steps=10, max_epoch=1, max_max_epoch=2,
                  batch_size=10, learning_rate=1.0, max_grad_norm=5.0)  # fmt: skip
    return base.replace(**changes)


@needs_ptb
def test_test_config_trains_to_a_clearly_lower_perplexity(ptb_slice, tmp_path):
    config = get_config("test")
    untrained = numlstm.LanguageModel(10000, config.hidden_size, config.num_layers, seed=0,
                                      init_scale=config.init_scale)  # fmt: skip
    before = train.evaluate(untrained, ptb_slice.valid, config.batch_size, config.num_steps)
    summary = train.train(config, ptb_slice, tmp_path, progress="none", log=lambda s: None)
    after = summary["history"][-1]["valid_perplexity"]
    assert before.perplexity > 9000  # about uniform over 10,000 words at init
    assert after < 0.25 * before.perplexity, (before.perplexity, after)
    assert math.isfinite(summary["test_perplexity"])


@needs_ptb
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_tiny_model_learns_on_real_ptb(ptb_slice, tmp_path, cell):
    # The plain RNN with a lower rate than the tutorial's 1.0 (docs/rnn.md §7): at this size
    # (H = 16) 0.5 trains; with the 0.25 of `train --cell rnn` (chosen at H = 200) the three
    # short epochs end at a valid perplexity just above 1,000.
    config = _tiny(max_max_epoch=3, **({"learning_rate": 0.5} if cell == "rnn" else {}))
    summary = train.train(config, ptb_slice, tmp_path, cell=cell, progress="none",
                          log=lambda s: None)  # fmt: skip
    valid = [h["valid_perplexity"] for h in summary["history"]]
    train_ppl = [h["train_perplexity"] for h in summary["history"]]
    assert train_ppl[-1] < 0.6 * train_ppl[0], train_ppl
    assert valid[-1] < 1000, valid  # uniform guessing would be 10,000
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,lr,train_perplexity,valid_perplexity")
    assert len(log) == 1 + config.max_max_epoch
    assert json.loads((tmp_path / "summary.json").read_text())["cell"] == cell
    assert (tmp_path / "perplexity.png").read_bytes()[:4] == b"\x89PNG"


@needs_ptb
def test_dropout_run_is_reproducible_and_resume_after_ctrl_c_matches(ptb_slice, tmp_path,
                                                                       monkeypatch):  # fmt: skip
    config = _tiny(keep_prob=0.5)
    quiet = dict(progress="none", log=lambda s: None)
    straight = train.train(config, ptb_slice, tmp_path / "a", **quiet)
    model_a, _, _ = load_model(tmp_path / "a" / train.CHECKPOINT)

    # Interrupt in the middle of the second epoch with a real SIGINT, then resume.
    real_step = train.train_step
    calls = {"n": 0}
    per_epoch = ptb.epoch_size(len(ptb_slice.train), config.batch_size, config.num_steps)

    def step_then_interrupt(*args, **kwargs):
        out = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == per_epoch + 3:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(train, "train_step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train.train(config, ptb_slice, tmp_path / "b", **quiet)
    meta = numlstm.io.checkpoint.read_meta(tmp_path / "b" / train.CHECKPOINT)["training"]
    assert (meta["epoch"], meta["step"]) == (1, 3)
    # a mid-epoch checkpoint is still a saved model that generation can load
    assert load_model(tmp_path / "b" / train.CHECKPOINT)[0].hidden_size == config.hidden_size
    monkeypatch.setattr(train, "train_step", real_step)
    resumed = train.train(config, ptb_slice, tmp_path / "b", resume=True, **quiet)
    model_b, _, _ = load_model(tmp_path / "b" / train.CHECKPOINT)

    for name, p in model_a.params.items():
        np.testing.assert_allclose(model_b.params[name], p, rtol=1e-5, atol=1e-6, err_msg=name)
    assert resumed["test_perplexity"] == pytest.approx(straight["test_perplexity"], rel=1e-4)
    assert [h["train_perplexity"] for h in resumed["history"]] == pytest.approx(
        [h["train_perplexity"] for h in straight["history"]], rel=1e-4)  # fmt: skip


@needs_ptb
def test_resume_refuses_a_different_config(ptb_slice, tmp_path):
    quiet = dict(progress="none", log=lambda s: None)
    train.train(_tiny(max_max_epoch=1), ptb_slice, tmp_path, **quiet)
    with pytest.raises(ValueError, match="different config"):
        train.train(_tiny(hidden_size=8), ptb_slice, tmp_path, resume=True, **quiet)


def test_vocab_mismatch_is_a_clear_error(tmp_path):
    ids = np.arange(200, dtype=np.int32) % 50
    data = ptb.PTBData(ids, ids, ids, {str(i): i for i in range(50)}, [str(i) for i in range(50)])
    with pytest.raises(ValueError, match="--vocab_size 50"):
        train.train(_tiny(), data, tmp_path, progress="none", log=lambda s: None)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "numlstm", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@needs_ptb
def test_command_line_train_evaluate_and_errors(tmp_path):
    out = tmp_path / "run"
    r = _cli("train", "--config", "test", "--data-dir", str(PTB_DIR), "--limit-tokens", "4000",
             "--out", str(out), "--progress", "none", "--hidden-size", "4",
             cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "hidden_size=4" in r.stdout and "Test Perplexity:" in r.stdout
    ckpt = out / "checkpoint.npz"
    r = _cli("evaluate", "--checkpoint", str(ckpt), "--data-dir", str(PTB_DIR), "--split", "valid",
             "--limit-tokens", "500", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "valid perplexity:" in r.stdout
    r = _cli("generate", "--checkpoint", str(ckpt), "--prime", "The company said", "--words", "5",
             "--seed", "1", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "the company said" in r.stdout
    r = _cli("evaluate", "--checkpoint", str(tmp_path / "nope.npz"), "--data-dir", str(PTB_DIR),
             cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "nope.npz" in r.stderr
    r = _cli("train", "--config", "test", "--data-dir", str(tmp_path / "missing"), cwd=tmp_path)
    assert r.returncode == 2 and "missing" in r.stderr
