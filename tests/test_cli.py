"""The command line under hostile and mistaken input: one line naming the problem, exit 2.

Each row of CASES is (argv, expected exit status, a fragment the message must contain). Add a
row for every new way a user can get it wrong; the set should only grow.
"""

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

CASES = [
    ([], 2, "commands:"),
    (["bogus"], 2, "unknown command 'bogus'"),
    (["train", "--seed", "-1"], 2, "argument --seed: must be >= 0"),
    (["train", "--seed", "x"], 2, "argument --seed: 'x' is not an integer"),
    (["train", "--threads", "0"], 2, "argument --threads: must be >= 1"),
    (["train", "--threads", "-3"], 2, "argument --threads: must be >= 1"),
    (["train", "--limit-tokens", "-5"], 2, "argument --limit-tokens: must be >= 0"),
    (["train", "--checkpoint-every", "soon"], 2, "argument --checkpoint-every: 'soon' is not"),
    (["train", "--checkpoint-every", "-5m"], 2, "argument --checkpoint-every"),
    (["train", "--max_grad_norm", "-1"], 2, "max_grad_norm must be > 0"),
    (["train", "--max_grad_norm", "0"], 2, "max_grad_norm must be > 0"),
    (["train", "--max_grad_norm", "nan"], 2, "max_grad_norm must be a finite number"),
    (["train", "--max_max_epoch", "-1"], 2, "max_max_epoch must be >= 1"),
    (["train", "--max_epoch", "-1"], 2, "max_epoch must be >= 0"),
    (["train", "--lr_decay", "-1"], 2, "lr_decay must be > 0"),
    (["train", "--lr_decay", "nan"], 2, "lr_decay must be a finite number"),
    (["train", "--lr_decay", "inf"], 2, "lr_decay must be a finite number"),
    (["train", "--learning_rate", "nan"], 2, "learning_rate must be a finite number"),
    (["train", "--learning_rate", "inf"], 2, "learning_rate must be a finite number"),
    (["train", "--learning_rate", "-1"], 2, "learning_rate must be > 0"),
    (["train", "--init_scale", "1e30"], 2, "init_scale must be <= 100"),
    (["train", "--init_scale", "nan"], 2, "init_scale must be a finite number"),
    (["train", "--keep_prob", "1.5"], 2, "keep_prob must be in (0, 1]"),
    (["train", "--keep_prob", "0"], 2, "keep_prob must be > 0"),
    (["train", "--hidden_size", "100000000"], 2, "GiB for the parameters alone"),
    (["train", "--num_layers", "100000"], 2, "num_layers must be <= 64"),
    (["train", "--num_steps", "0"], 2, "num_steps must be >= 1"),
    (["train", "--batch_size", "0"], 2, "batch_size must be >= 1"),
    (["train", "--vocab_size", "1"], 2, "vocab_size must be >= 2"),
    (["train", "--data-dir", "/nonexistent/ptb"], 2, "pass --data-dir DIR"),
    (["evaluate", "--checkpoint", "/nonexistent/c.npz"], 2, "/nonexistent/c.npz"),
    (["evaluate", "--checkpoint", "x.npz", "--batch-size", "0"], 2, "--batch-size: must be >="),
]


@pytest.mark.parametrize("argv, status, fragment", CASES, ids=lambda v: str(v)[:60])
def test_mistakes_end_in_one_line_and_a_status(argv, status, fragment, capsys, tmp_path,
                                               monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)  # a run folder, if one were made, lands here
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == status, err
    assert fragment in err, err
    assert "Traceback" not in err
    if argv[:1] == ["train"]:
        assert not (tmp_path / "runs").exists()  # refused before anything was written


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
