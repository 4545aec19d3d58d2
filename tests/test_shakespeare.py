"""Tests for numlstm.io.text and a short real training run of examples/shakespeare.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from numlstm.generate import generate_main, load_model
from numlstm.io.text import build_word_vocab, clean_text, words_to_ids

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data" / "shakespeare" / "input.txt"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("First Citizen:\nBefore we proceed any further, hear me speak.",
         "first citizen before we proceed any further hear me speak"),
        ("O'er the hills -- to-morrow!  'Tis   WELL", "o'er the hills -- to-morrow 'tis well"),
        ("end.Next\t\n\r\nline", "end next line"),  # punctuation becomes a space
        ("snake_case (42) [x] & \"quoted\"; ok?", "snake case 42 x quoted ok"),
        ("  \n\t ", ""),
    ],
)  # fmt: skip
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


def test_build_word_vocab_min_count_and_unk():
    words = "b a c a b a d <unk> e e".split()
    w2i, i2w = build_word_vocab(words, min_count=2)
    assert i2w == ["<unk>", "a", "b", "e"]  # unk first, then count desc, ties by word
    assert w2i == {w: i for i, w in enumerate(i2w)}
    _, everything = build_word_vocab(words, min_count=1)
    assert everything == ["<unk>", "a", "b", "e", "c", "d"]
    np.testing.assert_array_equal(words_to_ids(["a", "c", "e", "zz"], w2i), [1, 0, 3, 0])
    assert words_to_ids(["a"], w2i).dtype == np.int32
    with pytest.raises(ValueError, match="min_count"):
        build_word_vocab(words, min_count=0)


def load_example():
    spec = importlib.util.spec_from_file_location("shakespeare", REPO / "examples/shakespeare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not DATA.is_file(), reason=f"{DATA} not found")
def test_short_training_run_learns(tmp_path, capsys):
    argv = ["--data", str(DATA), "--max-words", "20000", "--min-count", "2", "--hidden", "48",
            "--batch-size", "16", "--steps", "20", "--iters", "160", "--log-every", "40",
            "--sample-every", "80", "--sample-words", "5", "--out", str(tmp_path)]  # fmt: skip
    with pytest.warns(UserWarning, match="'wherefore'"):  # too rare in the first 20,000 words
        result = load_example().main(argv)
    losses = result["losses"]
    assert len(losses) == 160 and np.isfinite(losses).all()
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    assert last < first - 0.5, (first, last)  # nats per word; typically 6.6 -> 5.6
    out = capsys.readouterr().out
    assert "thou art more" in out and "to be or not to" in out
    assert (tmp_path / "loss.png").stat().st_size > 0
    _, id_to_word, meta = load_model(tmp_path / "shakespeare.npz")
    assert meta["preprocess"] == "clean_text" and meta["iters"] == 160
    assert result["valid_ppl"] < len(id_to_word)  # better than a uniform guess
    # the CLI cleans the prime like the training text: capitals and punctuation are fine
    ckpt = str(tmp_path / "shakespeare.npz")
    assert generate_main(["--checkpoint", ckpt, "--prime", "Thou art, more", "--seed", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("thou art more ") and captured.err == ""
