"""The command line: help, refusals that need a real run, the GRU default, what evaluate
remembers. The table of mistaken and hostile arguments is in test_hostile.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from numlstm import cli

REPO = Path(__file__).resolve().parents[1]
PTB_DIR = Path(os.environ.get("NUMLSTM_PTB_DIR", REPO.parent / "shared" / "data" / "ptb"))
needs_ptb = pytest.mark.skipif(
    not (PTB_DIR / "ptb.train.txt").exists(), reason=f"real PTB files not found in {PTB_DIR}"
)

TRAIN = ["train", "--config", "test", "--data-dir", str(PTB_DIR), "--progress", "none"]


def test_help_is_an_answer_on_stdout(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "commands:" in out and "NUMLSTM_DATA_DIR" in out


@needs_ptb
def test_unwritable_out_is_refused_before_training(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = cli.main([*TRAIN, "--limit-tokens", "3000", "--out", str(blocker / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write to the run folder" in err, err


@needs_ptb
def test_a_diverging_run_stops_and_says_what_to_change(capsys, tmp_path):
    code = cli.main([*TRAIN, "--limit-tokens", "6000", "--out", str(tmp_path / "run"),
                     "--hidden_size", "32", "--learning_rate", "1e30",
                     "--max_grad_norm", "1e30"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert "training diverged" in err and "--learning_rate" in err, err


@needs_ptb
def test_gru_gets_the_learning_rate_that_trains(capsys, tmp_path):
    code = cli.main([*TRAIN, "--cell", "gru", "--limit-tokens", "3000",
                     "--out", str(tmp_path / "run")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "learning_rate=0.5" in out and "GRU: learning_rate 0.5" in out


@needs_ptb
def test_evaluate_uses_the_data_the_run_was_trained_on(capsys, tmp_path):
    run = tmp_path / "run"
    assert cli.main([*TRAIN, "--limit-tokens", "3000", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    trained_valid = float(out.split("Valid Perplexity: ")[-1].split()[0])
    # No --data-dir, no --limit-tokens: both come from the checkpoint.
    assert cli.main(["evaluate", "--checkpoint", str(run / "checkpoint.npz"), "--split", "valid",
                     "--batch-size", "20", "--num-steps", "2"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "recorded in the checkpoint" in out and "first 3,000 tokens" in out
    assert float(out.split("valid perplexity: ")[1].split()[0]) == pytest.approx(
        trained_valid, rel=1e-4)  # fmt: skip
