"""grad_norm.csv: every step's global gradient norm before clipping, for the whole run, the same
whether or not the run was stopped and resumed (numlstm/io/grad_norm_log.py)."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from numlstm import LanguageModel, train
from numlstm.config import Config
from numlstm.io import grad_norm_log, ptb
from numlstm.io.checkpoint import load_checkpoint, read_meta, save_checkpoint
from numlstm.io.grad_norm_log import GRAD_NORM_CSV, GRAD_NORM_PNG, GradNormLog
from numlstm.optim import global_norm

REPO = Path(__file__).resolve().parents[1]
PTB_DIR = Path(os.environ.get("NUMLSTM_PTB_DIR", REPO.parent / "shared" / "data" / "ptb"))
QUIET = dict(progress="none", log=lambda s: None, threads=1)


@pytest.fixture(scope="module")
def data() -> ptb.PTBData:
    if not (PTB_DIR / "ptb.train.txt").exists():
        pytest.skip(f"real PTB files not found in {PTB_DIR}")
    d = ptb.load_ptb(PTB_DIR)
    return ptb.PTBData(d.train[:4000], d.valid[:800], d.test[:200], d.word_to_id, d.id_to_word)


def _tiny(**changes) -> Config:
    # max_grad_norm 3.5: part of the steps are clipped, so the clipped fraction is tested.
    base = Config(num_layers=1, hidden_size=12, num_steps=10, max_epoch=1, max_max_epoch=2,
                  batch_size=10, keep_prob=0.5, max_grad_norm=3.5)  # fmt: skip
    return base.replace(**changes)


def _rows(folder: Path) -> list[tuple[int, int, float]]:
    return grad_norm_log.read_rows(folder / GRAD_NORM_CSV)


def _per_epoch(data: ptb.PTBData, config: Config) -> int:
    return ptb.epoch_size(len(data.train), config.batch_size, config.num_steps)


def _interrupt_at(monkeypatch, n: int) -> None:
    """A real SIGINT to this process after the n-th training step (as tests/test_train.py)."""
    real_step, calls = train.train_step, [0]

    def step_then_interrupt(*args, **kwargs):
        out = real_step(*args, **kwargs)
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(train, "train_step", step_then_interrupt)


def _run_stopped_after(monkeypatch, data, tmp_path, n: int) -> None:
    """The tiny run in tmp_path, stopped by a real SIGINT after its n-th step; train_step is
    the real one again afterwards."""
    _interrupt_at(monkeypatch, n)
    with pytest.raises(KeyboardInterrupt):
        train.train(_tiny(), data, tmp_path, **QUIET)
    monkeypatch.undo()


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory) -> Path:
    """An uninterrupted run: the reference every stopped run must reproduce."""
    out = tmp_path_factory.mktemp("straight")
    train.train(_tiny(), data, out, **QUIET)
    return out


def test_one_row_per_step_with_the_norm_of_that_steps_gradients(data, tmp_path, monkeypatch):
    config = _tiny()
    seen: list[float] = []

    def spy(grads):  # the norm train_step clips with, step by step
        seen.append(global_norm(grads))
        return seen[-1]

    monkeypatch.setattr(train, "global_norm", spy)
    summary = train.train(config, data, tmp_path, **QUIET)
    rows = _rows(tmp_path)
    n = _per_epoch(data, config)
    assert [(e, s) for e, s, _ in rows] == [(e, s) for e in (1, 2) for s in range(1, n + 1)]
    assert [r[2] for r in rows] == seen  # repr-exact: the floats read back bit for bit
    assert (tmp_path / GRAD_NORM_CSV).read_text().splitlines()[1] == f"1,1,{seen[0]!r}"

    # Step 1 recomputed independently: same initialisation and dropout stream, dense gradients,
    # the norm summed here in float64.
    model = LanguageModel(config.vocab_size, config.hidden_size, config.num_layers, seed=0,
                          init_scale=config.init_scale, forget_bias=0.0)  # fmt: skip
    x, y = next(ptb.ptb_iterator(data.train, config.batch_size, config.num_steps))
    rng = np.random.default_rng(1)  # train's dropout generator: seed + 1
    _, grads, _ = model.loss_and_grads(x, y, model.init_state(config.batch_size),
                                       config.keep_prob, rng)  # fmt: skip
    dense = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    assert rows[0][2] == pytest.approx(dense, rel=1e-9)
    assert rows[0][2] == global_norm(grads)

    # The per-epoch summary in summary.json, recomputed from the file.
    on_disk = json.loads((tmp_path / "summary.json").read_text())["grad_norm"]
    assert on_disk == summary["grad_norm"]
    assert on_disk["notes"] == [] and on_disk["max_grad_norm"] == 3.5
    for entry, e in zip(on_disk["epochs"], (1, 2), strict=True):
        norms = np.array([r[2] for r in rows if r[0] == e])
        assert entry == {"epoch": e, "steps": n, "mean": float(norms.mean()),
                         "median": float(np.median(norms)), "max": float(norms.max()),
                         "clipped_fraction": float(np.mean(norms > 3.5))}  # fmt: skip
        assert 0 < entry["clipped_fraction"] < 1  # the threshold is inside the range
    # log.csv keeps its columns (a run in progress resumes with this code)
    with (tmp_path / "log.csv").open() as f:
        assert next(csv.reader(f)) == ["epoch", "lr", "train_perplexity", "valid_perplexity",
                                       "seconds", "train_wps"]  # fmt: skip


def test_sigint_and_resume_give_the_same_file(data, straight, tmp_path, monkeypatch):
    n = _per_epoch(data, _tiny())
    _interrupt_at(monkeypatch, n + 3)  # epoch 2, step 3
    with pytest.raises(KeyboardInterrupt):
        train.train(_tiny(), data, tmp_path, **QUIET)
    meta = read_meta(tmp_path / train.CHECKPOINT)["training"]
    assert (meta["epoch"], meta["step"]) == (1, 3)
    # the file holds exactly the steps the checkpoint counts
    assert _rows(tmp_path) == _rows(straight)[: n + 3]
    arrays, _ = load_checkpoint(tmp_path / train.CHECKPOINT)
    assert arrays[grad_norm_log.ARRAY].tolist() == [r[2] for r in _rows(straight)[n : n + 3]]
    monkeypatch.undo()
    train.train(_tiny(), data, tmp_path, resume=True, **QUIET)
    assert (tmp_path / GRAD_NORM_CSV).read_bytes() == (straight / GRAD_NORM_CSV).read_bytes()


def test_a_kill_between_the_files_write_and_the_checkpoint_duplicates_nothing(
    data, straight, tmp_path, monkeypatch
):
    """The file is written before the checkpoint; a crash in between leaves rows beyond the
    checkpoint in the file, which the resume drops (they are trained again)."""
    saves = [0]
    real_save = train.save_model

    def save_then_crash(*args, **kwargs):
        saves[0] += 1
        if saves[0] == 3:  # the first two saves happen, the third never does
            raise SystemExit("killed")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(train, "save_model", save_then_crash)
    with pytest.raises(SystemExit):
        train.train(_tiny(), data, tmp_path, checkpoint_every=1e-9, **QUIET)
    meta = read_meta(tmp_path / train.CHECKPOINT)["training"]
    assert len(_rows(tmp_path)) == meta["step"] + 1  # one row more than the checkpoint counts
    monkeypatch.undo()
    train.train(_tiny(), data, tmp_path, resume=True, **QUIET)
    assert (tmp_path / GRAD_NORM_CSV).read_bytes() == (straight / GRAD_NORM_CSV).read_bytes()


def _make_old(path: Path) -> None:
    """Rewrite a checkpoint as numlstm wrote it before the norms were recorded."""
    arrays, meta = load_checkpoint(path)
    del arrays[grad_norm_log.ARRAY]
    del meta["training"]["grad_norm"]
    save_checkpoint(path, arrays, meta)


def test_an_old_checkpoint_without_the_norms_resumes(data, straight, tmp_path, monkeypatch):
    n = _per_epoch(data, _tiny())
    _run_stopped_after(monkeypatch, data, tmp_path, n + 3)
    _make_old(tmp_path / train.CHECKPOINT)
    (tmp_path / GRAD_NORM_CSV).unlink()  # an old run folder has no such file
    messages: list[str] = []
    summary = train.train(_tiny(), data, tmp_path, resume=True,
                          **{**QUIET, "log": messages.append})  # fmt: skip
    # the same run ...
    reference = json.loads((straight / "summary.json").read_text())
    assert [h["valid_perplexity"] for h in summary["history"]] == [
        h["valid_perplexity"] for h in reference["history"]]  # fmt: skip
    # ... whose norms are recorded from the resume on, and said to be absent before it
    assert _rows(tmp_path) == _rows(straight)[n + 3 :]
    notes = summary["grad_norm"]["notes"]
    assert len(notes) == 1 and "before epoch 2, step 4 are absent" in notes[0]
    assert any("before epoch 2, step 4 are absent" in m for m in messages)
    assert summary["grad_norm"]["recorded_from"] == {"epoch": 2, "step": 4}
    assert [e["steps"] for e in summary["grad_norm"]["epochs"]] == [n - 3]
    # and once more: the note and the start survive a second resume
    summary = train.train(_tiny(max_max_epoch=3), data, tmp_path, resume=True, **QUIET)
    assert summary["grad_norm"]["notes"] == notes
    assert [e["steps"] for e in summary["grad_norm"]["epochs"]] == [n - 3, n]
    assert _rows(tmp_path)[: n - 3] == _rows(straight)[n + 3 :]


def test_a_damaged_file_is_reported_and_training_goes_on(data, straight, tmp_path, monkeypatch):
    n = _per_epoch(data, _tiny())
    _run_stopped_after(monkeypatch, data, tmp_path, n + 3)
    lines = (tmp_path / GRAD_NORM_CSV).read_text().splitlines(keepends=True)
    (tmp_path / GRAD_NORM_CSV).write_text("".join(lines[:5] + lines[6:]))  # a row lost
    messages: list[str] = []
    summary = train.train(_tiny(), data, tmp_path, resume=True,
                          **{**QUIET, "log": messages.append})  # fmt: skip
    assert any(m.startswith("warning: the norms of epochs 1-1 are absent") for m in messages)
    assert "does not hold the" in summary["grad_norm"]["notes"][0]
    assert _rows(tmp_path) == _rows(straight)[n:]  # epoch 1 dropped, not trusted


def test_a_damaged_record_in_the_checkpoint_is_not_trusted(tmp_path):
    path, messages = tmp_path / GRAD_NORM_CSV, []
    path.write_text("epoch,step,norm\n" + "".join(f"1,{s},1.5\n" for s in range(1, 5)))
    good = {"epoch": 1, "step": 2, "grad_norm": {"start": {"epoch": 0, "step": 0}, "notes": []}}
    restored = grad_norm_log.restore(path, good, np.array([2.0, 3.0]), 4, messages.append)
    assert restored.norms == [1.5] * 4 + [2.0, 3.0] and restored.steps[-2:] == [1, 2]
    assert messages == [] and restored.notes == []
    for start in ({"epoch": "0", "step": 0}, {"epoch": 2, "step": 0}, {"epoch": 0, "step": -1},
                  {"epoch": 0, "step": 4}, None):  # fmt: skip
        bad = {**good, "grad_norm": {"start": start, "notes": []}}
        restored = grad_norm_log.restore(path, bad, np.array([2.0, 3.0]), 4, messages.append)
        assert len(restored) == 0 and restored.start == (1, 2), start
        assert "record of where they start was damaged" in restored.notes[-1], start
    for current in (np.array([2.0]), np.array([2.0, np.nan]), np.array([2, 3])):
        restored = grad_norm_log.restore(path, good, current, 4, messages.append)
        assert restored.norms == [1.5] * 4, current  # the file's epoch, not the bad array
        assert "steps 1-2 of epoch 2 are absent" in restored.notes[-1], current


def test_the_plot_is_drawn_with_matplotlib(straight, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    png = (straight / GRAD_NORM_PNG).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    # without matplotlib nothing is written and the message says why
    grad_log = GradNormLog()
    grad_log.append(1, 1, 2.0)
    messages: list[str] = []
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    train.plot_grad_norms(grad_log, tmp_path / "g.png", 10, 5.0, log=messages.append)
    assert not (tmp_path / "g.png").exists() and "matplotlib is not installed" in messages[0]


def test_running_median_equals_the_direct_one():
    values = np.random.default_rng(0).lognormal(size=257)
    for window in (1, 2, 5, 50):
        half = window // 2
        direct = [np.median(values[max(0, k - half) : k + half + 1]) for k in range(len(values))]
        np.testing.assert_array_equal(grad_norm_log.running_median(values, window), direct)
    with pytest.raises(ValueError, match="window"):
        grad_norm_log.running_median(values, 0)


def test_read_rows_names_the_bad_line(tmp_path):
    path = tmp_path / GRAD_NORM_CSV
    path.write_text("epoch,step,norm\n1,1,2.5\n1,x,3\n")
    with pytest.raises(ValueError, match="line 3"):
        grad_norm_log.read_rows(path)
    path.write_text("epoch,norm\n")
    with pytest.raises(ValueError, match="header"):
        grad_norm_log.read_rows(path)
