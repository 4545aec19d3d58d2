"""Tests for numlstm.io.ptb: reading, vocabulary, batching, download and cache."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from numlstm.io import ptb
from numlstm.io.ptb import DataError

REPO_ROOT = Path(__file__).resolve().parent.parent
WORD_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")


def _real_dir() -> Path | None:
    env = os.environ.get("NUMLSTM_PTB_DIR")
    d = Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "ptb"
    return d if (d / "ptb.train.txt").is_file() else None


def _reference_producer(raw, batch_size, num_steps):
    """Independent re-implementation of the tutorial's ptb_producer, by explicit indexing."""
    raw = np.asarray(raw)
    batch_len = len(raw) // batch_size
    n_batches = (batch_len - 1) // num_steps
    rows = np.arange(batch_size)[:, None] * batch_len
    cols = np.arange(num_steps)[None, :]
    for i in range(n_batches):
        idx = rows + i * num_steps + cols
        yield raw[idx], raw[idx + 1]


# ----------------------------------------------------------------------------------------------
# Real data
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_dir() -> Path:
    d = _real_dir()
    if d is None:
        pytest.skip("real PTB data not found (set NUMLSTM_PTB_DIR)")
    return d


@pytest.fixture(scope="module")
def word_data(real_dir):
    return ptb.load_ptb(real_dir)


@pytest.fixture(scope="module")
def char_data(real_dir):
    if not (real_dir / "ptb.char.train.txt").is_file():
        pytest.skip("char-level PTB files not found")
    return ptb.load_ptb(real_dir, level="char")


def test_real_checksums_match_table(real_dir):
    for name, expected in ptb.PTB_FILES.items():
        path = real_dir / name
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == expected, name


def test_real_word_counts(word_data):
    d = word_data
    assert (len(d.train), len(d.valid), len(d.test)) == (929_589, 73_760, 82_430)
    assert d.vocab_size == 10_000
    assert len(d.word_to_id) == 10_000
    for arr in (d.train, d.valid, d.test):
        assert arr.dtype == np.int32 and arr.ndim == 1
        assert arr.min() >= 0 and arr.max() < 10_000
    assert d.id_to_word[0] == "the" and d.word_to_id["the"] == 0
    eos = d.word_to_id["<eos>"]
    assert "<unk>" in d.word_to_id
    assert [d.id_to_word[i] for i in range(10)] == sorted(
        d.id_to_word[:10], key=lambda w: -int(np.sum(d.train == d.word_to_id[w]))
    )
    # one <eos> per line
    assert int(np.sum(d.train == eos)) == 42_068
    assert int(np.sum(d.valid == eos)) == 3_370
    assert int(np.sum(d.test == eos)) == 3_761
    assert d.train[-1] == eos
    first = "aer banknote berlitz calloway centrust".split()
    assert [d.id_to_word[i] for i in d.train[:5]] == first
    assert all(d.id_to_word[d.word_to_id[w]] == w for w in d.word_to_id)


def test_real_raw_data_tuple(real_dir, word_data):
    train, valid, test, vocab = ptb.ptb_raw_data(real_dir)
    assert vocab == 10_000
    np.testing.assert_array_equal(train, word_data.train)
    np.testing.assert_array_equal(test, word_data.test)
    assert len(valid) == 73_760


def test_real_char_counts(char_data):
    d = char_data
    # symbols + one <eos> per line; the stray trailing "\n " adds nothing.
    assert (len(d.train), len(d.valid), len(d.test)) == (5_017_482, 393_042, 442_423)
    assert d.vocab_size == 50  # 49 symbols + <eos>
    assert d.id_to_word[0] == "_"
    eos = d.word_to_id["<eos>"]
    assert int(np.sum(d.train == eos)) == 42_068
    assert int(np.sum(d.valid == eos)) == 3_370
    assert int(np.sum(d.test == eos)) == 3_761
    assert d.train[-1] == eos and d.valid[-1] == eos and d.test[-1] == eos
    assert int(np.sum(d.valid != eos)) == 389_672
    assert len(np.unique(d.test)) == 48  # 47 symbols + <eos>
    assert [d.id_to_word[i] for i in d.train[:5]] == ["a", "e", "r", "_", "b"]


def test_real_iterator(word_data):
    train = word_data.train
    batch_size, num_steps = 20, 35
    n = ptb.epoch_size(len(train), batch_size, num_steps)
    assert n == ((len(train) // batch_size) - 1) // num_steps == 1327
    batches = list(ptb.ptb_iterator(train, batch_size, num_steps))
    assert len(batches) == n
    batch_len = len(train) // batch_size
    data = train[: batch_len * batch_size].reshape(batch_size, batch_len)
    np.testing.assert_array_equal(batches[0][0], data[:, :num_steps])
    np.testing.assert_array_equal(batches[0][1], data[:, 1 : num_steps + 1])
    for (x, y), (rx, ry) in zip(
        batches, _reference_producer(train, batch_size, num_steps), strict=True
    ):
        assert x.shape == y.shape == (batch_size, num_steps)
        np.testing.assert_array_equal(x, rx)
        np.testing.assert_array_equal(y, ry)
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])


def test_ensure_ptb_user_dir(real_dir):
    assert ptb.ensure_ptb(real_dir) == real_dir
    assert ptb.ensure_ptb(str(real_dir), download=False) == real_dir


# ----------------------------------------------------------------------------------------------
# Reading on tiny files
# ----------------------------------------------------------------------------------------------


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def test_read_words_eos(tmp_path):
    p = _write(tmp_path / "a.txt", " a b \n c \n")
    assert ptb.read_words(p) == ["a", "b", "<eos>", "c", "<eos>"]
    # char-file style ending "\n " gives no extra token
    q = _write(tmp_path / "c.txt", "a _ b \n c \n ")
    assert ptb.read_words(q) == ["a", "_", "b", "<eos>", "c", "<eos>"]


def test_read_words_unterminated(tmp_path):
    p = _write(tmp_path / "a.txt", "a b\nc d")
    with pytest.raises(DataError, match="newline"):
        ptb.read_words(p)
    assert ptb.read_words(p, allow_unterminated=True) == ["a", "b", "<eos>", "c", "d"]


def test_build_vocab_ordering(tmp_path):
    p = _write(tmp_path / "train.txt", "b a c\nc b d\nc zz\n")
    vocab = ptb.build_vocab(p)
    # counts: c 3, <eos> 3, b 2, a 1, d 1, zz 1
    assert list(vocab) == ["<eos>", "c", "b", "a", "d", "zz"]
    assert list(vocab.values()) == list(range(6))


@pytest.mark.parametrize("content", [b"", b"   \n\n \t \n"])
def test_empty_or_blank_file(tmp_path, content):
    p = _write(tmp_path / "e.txt", content)
    with pytest.raises(DataError, match="e.txt"):
        ptb.read_words(p)


def test_non_utf8(tmp_path):
    p = _write(tmp_path / "bad.txt", b"ok line\nsecond \xff line\n")
    with pytest.raises(DataError) as ei:
        ptb.read_words(p)
    msg = str(ei.value)
    assert "bad.txt" in msg and "line 2" in msg and "offset 15" in msg


def test_truncated_utf8(tmp_path):
    p = _write(tmp_path / "t.txt", "caf\u00e9\n".encode()[:-2])
    with pytest.raises(DataError, match="truncated"):
        ptb.read_words(p)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.txt"):
        ptb.read_words(tmp_path / "nope.txt")
    with pytest.raises(DataError):
        ptb.build_vocab(tmp_path)  # a directory


def test_oov_raises_and_unk_maps(tmp_path):
    train = _write(tmp_path / "train.txt", "a b <unk>\nb a\n")
    valid = _write(tmp_path / "valid.txt", "a b\nb zebra a\n")
    vocab = ptb.build_vocab(train)
    with pytest.raises(DataError) as ei:
        ptb.file_to_word_ids(valid, vocab)
    msg = str(ei.value)
    assert "'zebra'" in msg and "valid.txt" in msg and "line 2" in msg
    ids = ptb.file_to_word_ids(valid, vocab, unk="<unk>")
    assert ids.dtype == np.int32
    expected = [vocab[w] for w in ["a", "b", "<eos>", "b", "<unk>", "a", "<eos>"]]
    assert ids.tolist() == expected
    with pytest.raises(DataError, match="<nope>"):
        ptb.file_to_word_ids(valid, vocab, unk="<nope>")


def test_load_ptb_tiny_dir(tmp_path):
    _write(tmp_path / "ptb.train.txt", " x y x \n y x \n")
    _write(tmp_path / "ptb.valid.txt", " y \n")
    _write(tmp_path / "ptb.test.txt", " x \n")
    d = ptb.load_ptb(tmp_path)
    assert d.id_to_word == ["x", "<eos>", "y"]
    assert d.vocab_size == 3
    assert d.train.tolist() == [0, 2, 0, 1, 2, 0, 1]
    assert d.valid.tolist() == [2, 1] and d.test.tolist() == [0, 1]
    with pytest.raises(AttributeError):
        d.train = d.test  # frozen
    with pytest.raises(ValueError, match="level"):
        ptb.load_ptb(tmp_path, level="byte")
    with pytest.raises(DataError, match="ptb.char.train.txt"):
        ptb.load_ptb(tmp_path, level="char")


# ----------------------------------------------------------------------------------------------
# Iterator
# ----------------------------------------------------------------------------------------------


def test_iterator_small():
    raw = np.arange(23, dtype=np.int64)
    it = list(ptb.ptb_iterator(raw, 3, 2))
    # batch_len 7, epoch_size (7-1)//2 == 3
    assert len(it) == ptb.epoch_size(23, 3, 2) == 3
    for (x, y), (rx, ry) in zip(it, _reference_producer(raw, 3, 2), strict=True):
        assert x.dtype == np.int32 and y.dtype == np.int32
        assert x.flags.c_contiguous and y.flags.c_contiguous
        assert x.shape == (3, 2)
        np.testing.assert_array_equal(x, rx)
        np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(it[0][0], [[0, 1], [7, 8], [14, 15]])
    np.testing.assert_array_equal(it[2][1], [[5, 6], [12, 13], [19, 20]])
    # batch_size 1 (a view would be contiguous already): still int32, independent of input
    x, y = next(ptb.ptb_iterator(list(range(10)), 1, 4))
    assert x.dtype == np.int32 and x.flags.c_contiguous and x.tolist() == [[0, 1, 2, 3]]


def test_iterator_epoch_size_zero():
    with pytest.raises(ValueError, match="decrease batch_size or num_steps") as ei:
        ptb.ptb_iterator(np.arange(10), 5, 2)  # batch_len 2 -> (2-1)//2 == 0
    assert "batch_size=5" in str(ei.value) and "num_steps=2" in str(ei.value)
    assert ptb.epoch_size(3, 5, 2) == 0  # clamped, never negative
    assert ptb.epoch_size(11, 5, 1) == 1


@pytest.mark.parametrize(
    ("batch_size", "num_steps", "exc"),
    [(0, 2, ValueError), (-1, 2, ValueError), (2, 0, ValueError), (2.0, 2, TypeError),
     (2, "3", TypeError), (True, 2, TypeError)],
)  # fmt: skip
def test_iterator_bad_sizes(batch_size, num_steps, exc):
    with pytest.raises(exc):
        ptb.ptb_iterator(np.arange(100), batch_size, num_steps)


def test_iterator_bad_data():
    with pytest.raises(ValueError, match="1-D"):
        ptb.ptb_iterator(np.zeros((4, 25), dtype=np.int32), 2, 2)
    with pytest.raises(TypeError, match="integer"):
        ptb.ptb_iterator(np.arange(100, dtype=np.float32), 2, 2)
    with pytest.raises(ValueError, match="non-negative"):
        ptb.ptb_iterator(np.arange(-1, 99), 2, 2)
    x, y = next(ptb.ptb_iterator(np.arange(100, dtype=np.uint16), 2, 2))
    assert (
        x.dtype == np.int32
        and x.tolist() == [[0, 1], [50, 51]]
        and y.tolist() == [[1, 2], [51, 52]]
    )


# ----------------------------------------------------------------------------------------------
# Download and cache
# ----------------------------------------------------------------------------------------------


def _tiny_corpus(seed: int, lines: int) -> bytes:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(50)]
    out = []
    for _ in range(lines):
        out.append(" " + " ".join(rng.choice(words, size=8)) + " \n")
    return "".join(out).encode()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


@pytest.fixture
def archive(tmp_path):
    """A fake simple-examples.tgz with the 3 word files and junk members."""
    files = {
        "ptb.train.txt": _tiny_corpus(0, 400),
        "ptb.valid.txt": _tiny_corpus(1, 40),
        "ptb.test.txt": _tiny_corpus(2, 40),
    }
    path = tmp_path / "srv" / "simple-examples.tgz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, "./simple-examples/rnnlm-0.2b/README", b"unrelated\n")
        _add(tf, "../evil.txt", b"evil\n")
        _add(tf, "../data/ptb.char.test.txt", b"evil\n")
        _add(tf, "./simple-examples/other/ptb.char.valid.txt", b"not under data/\n")
        link = tarfile.TarInfo("./simple-examples/data/ptb.char.train.txt")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../../evil.txt"
        tf.addfile(link)
        for name, data in files.items():
            _add(tf, f"./simple-examples/data/{name}", data)
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    return path, files, sha


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("NUMLSTM_DATA_DIR", str(d))
    return d


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMLSTM_DATA_DIR", str(tmp_path / "x"))
    assert ptb.default_data_dir() == tmp_path / "x"
    monkeypatch.delenv("NUMLSTM_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ptb.default_data_dir() == tmp_path / "xdg" / "numlstm" / "ptb"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert ptb.default_data_dir() == Path.home() / ".cache" / "numlstm" / "ptb"


def test_download_file_url_and_cache(tmp_path, archive, cache, capsys):
    path, files, sha = archive
    got = ptb.ensure_ptb(url=path.as_uri(), file_sha256=sha)
    assert got == cache
    assert "downloading" in capsys.readouterr().err
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)
    for name, data in files.items():
        assert (cache / name).read_bytes() == data
    assert not list(tmp_path.rglob("evil.txt"))
    assert not list(tmp_path.rglob("ptb.char.*"))
    # second call: no download (the archive is gone, and nothing is printed)
    path.unlink()
    assert ptb.ensure_ptb(url=path.as_uri(), file_sha256=sha) == cache
    assert capsys.readouterr().err == ""
    train, valid, test, vocab = ptb.ptb_raw_data(cache)  # tiny files: not the real checksums
    assert len(train) == 400 * 9 and len(valid) == len(test) == 40 * 9
    assert vocab == 51


def test_download_missing_archive(tmp_path, cache):
    with pytest.raises(DataError, match="could not download"):
        ptb.ensure_ptb(url=(tmp_path / "none.tgz").as_uri())


def test_download_disabled(cache):
    with pytest.raises(DataError) as ei:
        ptb.ensure_ptb(download=False)
    assert str(cache) in str(ei.value) and "--data-dir" in str(ei.value)


def test_user_dir_missing_files(tmp_path):
    _write(tmp_path / "ptb.train.txt", "a\n")
    with pytest.raises(DataError) as ei:
        ptb.ensure_ptb(tmp_path)
    assert "ptb.valid.txt" in str(ei.value) and "ptb.test.txt" in str(ei.value)
    with pytest.raises(DataError, match="does not exist"):
        ptb.ensure_ptb(tmp_path / "nowhere")


def test_download_bad_file_sha(archive, cache):
    path, _, sha = archive
    bad = dict(sha, **{"ptb.valid.txt": "0" * 64})
    with pytest.raises(DataError) as ei:
        ptb.ensure_ptb(url=path.as_uri(), file_sha256=bad)
    msg = str(ei.value)
    assert "ptb.valid.txt" in msg and "0" * 64 in msg and sha["ptb.valid.txt"] in msg
    assert not (cache / "ptb.valid.txt").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp files left


def test_download_bad_archive_sha(archive, cache):
    path, _, sha = archive
    with pytest.raises(DataError, match="sha256"):
        ptb.ensure_ptb(url=path.as_uri(), file_sha256=sha, archive_sha256="f" * 64)
    assert list(cache.iterdir()) == []
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    assert ptb.ensure_ptb(url=path.as_uri(), file_sha256=sha, archive_sha256=good) == cache


def test_download_truncated_archive(archive, cache):
    path, _, sha = archive
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        ptb.ensure_ptb(url=path.as_uri(), file_sha256=sha)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]
    path.write_bytes(b"this is not a gzip file")
    with pytest.raises(DataError, match="corrupt or truncated"):
        ptb.ensure_ptb(url=path.as_uri(), file_sha256=sha)


def test_download_bad_scheme(cache):
    with pytest.raises(ValueError, match="scheme"):
        ptb.ensure_ptb(url="ftp://127.0.0.1/simple-examples.tgz")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def test_download_http_localhost(archive, cache, monkeypatch):
    path, files, sha = archive
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    handler = functools.partial(_QuietHandler, directory=str(path.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        url = f"http://127.0.0.1:{port}/{path.name}"
        assert ptb.ensure_ptb(url=url, file_sha256=sha) == cache
        for name, data in files.items():
            assert (cache / name).read_bytes() == data
        with pytest.raises(DataError, match="could not download"):
            ptb.ensure_ptb(url=f"http://127.0.0.1:{port}/missing.tgz", level="char")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
