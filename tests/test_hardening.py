"""Hardening checks that need more than one row of ``test_hostile.py``: interrupted writes,
local HTTP servers that misbehave, streaming output and Ctrl-C, memory of a long prime, and
state that must stay untouched when an optimiser step is refused."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from numlstm import generate as gen
from numlstm.fast.sparse import IndexedRows
from numlstm.io import ptb
from numlstm.io.checkpoint import load_checkpoint, remove_stale_temp_files, save_checkpoint
from numlstm.io.ptb import DataError
from numlstm.io.saving import load_model, save_model
from numlstm.model import LanguageModel
from numlstm.optim import SGD, Adam

WORDS = ["<unk>", "<eos>", "the", "a", "cat", "sat"]
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ checkpoint temp files


def _temp_like_save_checkpoint(directory: Path, name: str) -> Path:
    """A temp file named exactly as save_checkpoint names its own."""
    tmp = tempfile.NamedTemporaryFile(
        dir=directory, delete=False, prefix=f".{name}.", suffix=".tmp"
    )
    tmp.close()
    return Path(tmp.name)


def test_remove_stale_temp_files_only_exact_pattern(tmp_path):
    stale = [_temp_like_save_checkpoint(tmp_path, "model.npz") for _ in range(2)]
    keep = [
        tmp_path / "model.npz",
        _temp_like_save_checkpoint(tmp_path, "other.npz"),
        _temp_like_save_checkpoint(tmp_path, "model.npz.bak"),
        tmp_path / ".model.npz.abcdefgh.tmp.keep",
        tmp_path / ".model.npz.abc.tmp",  # wrong length of the random part
        tmp_path / "x.model.npz.abcdefgh.tmp",
    ]
    for p in keep:
        p.touch()
    (tmp_path / ".model.npz.dir45678.tmp").mkdir()  # a folder with a matching name
    target = tmp_path / "elsewhere"
    target.touch()
    (tmp_path / ".model.npz.link5678.tmp").symlink_to(target)  # a link with a matching name

    assert remove_stale_temp_files(tmp_path, "model.npz") == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in keep) and target.exists()
    assert (tmp_path / ".model.npz.dir45678.tmp").is_dir()
    assert (tmp_path / ".model.npz.link5678.tmp").is_symlink()
    assert remove_stale_temp_files(tmp_path, "model.npz") == []  # a second caller: nothing left
    assert remove_stale_temp_files(tmp_path / "missing", "model.npz") == []


def test_remove_stale_temp_files_min_age_and_bad_name(tmp_path):
    fresh = _temp_like_save_checkpoint(tmp_path, "m.npz")
    assert remove_stale_temp_files(tmp_path, "m.npz", min_age=3600) == []
    old = time.time() - 7200
    os.utime(fresh, (old, old))
    assert remove_stale_temp_files(tmp_path, "m.npz", min_age=3600) == [fresh]
    for bad in ["", "a/b.npz", "..", 3]:
        with pytest.raises(ValueError, match="name"):
            remove_stale_temp_files(tmp_path, bad)
    with pytest.raises(ValueError, match="min_age"):
        remove_stale_temp_files(tmp_path, "m.npz", min_age=float("nan"))


def test_sigkill_during_write_leaves_a_temp_file_that_is_then_removed(tmp_path):
    script = textwrap.dedent(
        """
        import sys, time
        import numpy as np
        from numlstm.io import checkpoint
        real = checkpoint._write_npz
        def slow(fileobj, members, compress):
            real(fileobj, members, compress)
            fileobj.flush()
            print("writing", flush=True)
            time.sleep(60)
        checkpoint._write_npz = slow
        checkpoint.save_checkpoint(sys.argv[1], {"w": np.ones(1000)}, {})
        """
    )
    save_checkpoint(tmp_path / "ck.npz", {"w": np.zeros(3)}, {"v": 1})  # a previous good one
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "ck.npz")],
        stdout=subprocess.PIPE, cwd=ROOT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.stdout.close()
    orphans = sorted(tmp_path.glob(".ck.npz.*.tmp"))
    assert len(orphans) == 1
    assert remove_stale_temp_files(tmp_path, "ck.npz") == orphans
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]
    arrays, meta = load_checkpoint(tmp_path / "ck.npz")  # the previous checkpoint is intact
    assert meta == {"v": 1} and arrays["w"].tolist() == [0, 0, 0]


# ------------------------------------------------------------------ checkpoint reading


def test_checkpoint_round_trip_layouts(tmp_path):
    arrays = {
        "f": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "be": np.arange(5, dtype=">i4"),
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 3), np.float32),
        "c": np.array([1 + 2j, 3j]),
        "b": np.array([True, False]),
    }
    for compress in (False, True):
        path = save_checkpoint(tmp_path / f"m{compress}.npz", arrays, {"k": [1]}, compress=compress)
        got, meta = load_checkpoint(path)
        assert meta == {"k": [1]} and list(got) == list(arrays)
        for k, a in arrays.items():
            assert got[k].dtype == np.asarray(a).dtype and np.array_equal(got[k], a)


def test_load_model_allow_nonfinite(tmp_path):
    m = LanguageModel(len(WORDS), 4, 1, seed=0)
    m.params["l0.Wx"][0, 0] = np.inf
    path = save_model(tmp_path / "inf.npz", m, WORDS)
    with pytest.raises(ValueError, match="'l0.Wx'"):
        load_model(path)
    m2, _, _ = load_model(path, allow_nonfinite=True)
    assert np.isinf(m2.params["l0.Wx"][0, 0])


# ------------------------------------------------------------------ optimisers


def test_refused_steps_change_nothing():
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(4, 3)).astype(np.float32), "b": np.ones(3, np.float32)}
    before = {k: v.copy() for k, v in params.items()}
    grads = {"w": np.ones((4, 3), np.float32), "b": np.array([1, np.nan, 1], np.float32)}
    with pytest.raises(FloatingPointError, match="'b'"):
        SGD(params, 0.1).step(grads)
    sparse = {
        "w": IndexedRows(np.array([1]), np.array([[np.inf, 0, 0]], np.float32), (4, 3)),
        "b": np.ones(3, np.float32),
    }
    with pytest.raises(FloatingPointError, match="'w'"):
        SGD(params, 0.1).step(sparse)
    with pytest.raises(FloatingPointError, match="inf"):
        SGD(params, 0.1).step({"w": np.ones((4, 3), np.float32), "b": np.ones(3, np.float32)},
                              norm=float("inf"))  # fmt: skip
    adam = Adam(params)
    with pytest.raises(FloatingPointError):
        adam.step(grads)
    assert adam.t == 0 and all(not m.any() for m in adam.m.values())
    for k in params:
        assert np.array_equal(params[k], before[k])
    # a finite step still works, with or without the caller's norm
    good = {"w": np.ones((4, 3), np.float32), "b": np.ones(3, np.float32)}
    SGD(params, 0.5).step(good, norm=3.6)
    assert np.allclose(params["b"], 0.5)


# ------------------------------------------------------------------ generate


def _model_file(tmp_path: Path, vocab: int = len(WORDS)) -> Path:
    words = WORDS + [f"w{i}" for i in range(vocab - len(WORDS))]
    return save_model(tmp_path / "m.npz", LanguageModel(vocab, 4, 1, seed=0), words)


def test_long_prime_memory_is_bounded_and_logits_match():
    V = 5000
    m = LanguageModel(V, 4, 1, seed=0)
    prime = np.random.default_rng(0).integers(0, V, 8000)
    full_bytes = prime.size * V * 4  # what the (T, V) logits of the whole prime would take
    gen.generate(m, prime[:10], 1, seed=0)  # warm up (compilation, workspaces)
    tracemalloc.start()
    try:
        gen.generate(m, prime, 1, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < full_bytes / 4, (peak, full_bytes)
    z, _ = gen._run_prime(m, prime[:3000])
    ref = m.logits(prime[None, :3000], m.init_state(1))[0][0, -1]
    np.testing.assert_allclose(z, ref, rtol=1e-4, atol=1e-5)


class _Recorder:
    """stdout stand-in that records every write and flush."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def write(self, s: str) -> int:
        self.events.append(("write", s))
        return len(s)

    def flush(self) -> None:
        self.events.append(("flush", ""))

    def text(self) -> str:
        return "".join(s for kind, s in self.events if kind == "write")


def test_cli_streams_words_and_matches_decode(tmp_path, monkeypatch):
    path = _model_file(tmp_path)
    model, id_to_word, _ = load_model(path)
    out = _Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    argv = ["--checkpoint", str(path), "--prime", "the cat", "--words", "40", "--seed", "5"]
    assert gen.generate_main(argv) == 0
    ids = gen.generate(model, [2, 4], 40, seed=5)
    assert out.text() == gen.decode([2, 4, *ids], id_to_word).rstrip("\n") + "\n"
    writes = [s for kind, s in out.events if kind == "write"]
    assert len(writes) > 20  # one write per word (and flushed), not one at the end
    assert out.events[-1] == ("flush", "")


def test_cli_ctrl_c_mid_generation_exits_130_with_the_words_so_far(tmp_path, monkeypatch, capsys):
    path = _model_file(tmp_path)
    real_step, calls = gen._Stepper.step, []

    def step(self, token, state):
        calls.append(token)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_step(self, token, state)

    monkeypatch.setattr(gen._Stepper, "step", step)
    argv = ["--checkpoint", str(path), "--prime", "the cat", "--words", "1000000000"]
    assert gen.generate_main(argv) == 130
    captured = capsys.readouterr()
    assert "interrupted" in captured.err and "Traceback" not in captured.err
    words = captured.out.split()
    assert words[:2] == ["the", "cat"] and captured.out.endswith("\n")
    assert len(captured.out.replace("\n", " ").split()) <= 2 + 5


def test_cli_ctrl_c_during_start_up_exits_130(tmp_path, monkeypatch, capsys):
    path = _model_file(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gen, "load_model", interrupted)
    assert gen.generate_main(["--checkpoint", str(path), "--prime", "the"]) == 130
    captured = capsys.readouterr()
    assert captured.out == "" and "interrupted" in captured.err


def test_cli_sigint_in_a_real_process(tmp_path):
    path = _model_file(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "numlstm", "generate", "--checkpoint", str(path), "--prime",
         "the", "--words", "1000000000", "--seed", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    watchdog = threading.Timer(60, proc.kill)  # words that never arrive must not hang the test
    watchdog.start()
    try:
        first = proc.stdout.read(40)  # words arrive while it runs
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        proc.kill()
    assert first.startswith(b"the")
    assert proc.returncode == 130, err
    assert b"Traceback" not in err and (first + rest).endswith(b"\n")


# ------------------------------------------------------------------ ptb downloads


@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _serve(handler_cls):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/simple-examples.tgz"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class _CutChunk(_Handler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"100\r\n" + b"x" * 10)  # a 256-byte chunk cut after 10 bytes
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)


class _Trickle(_Handler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(100):  # one byte every 0.1 s: each read succeeds, the whole never ends
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass


class _TrickleHeaders(_Handler):
    def do_GET(self):
        try:
            self.wfile.write(b"HTTP/1.0 200 OK\r\n")
            for _ in range(100):
                self.wfile.write(b"X-Slow: y\r\n")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass


@pytest.mark.parametrize(
    ("handler", "kwargs", "fragment", "limit_s"),
    [
        (_CutChunk, {}, "IncompleteRead", 10.0),
        (_Trickle, {"download_timeout": 1.0}, "deadline", 4.0),
        (_TrickleHeaders, {"download_timeout": 1.0}, "deadline", 4.0),
    ],
    ids=["chunk-cut-mid-chunk", "body-one-byte-at-a-time", "headers-one-line-at-a-time"],
)
def test_download_misbehaving_servers(tmp_path, monkeypatch, no_proxy, handler, kwargs,
                                      fragment, limit_s):  # fmt: skip
    monkeypatch.setenv("NUMLSTM_DATA_DIR", str(tmp_path / "cache"))
    server, url = _serve(handler)
    try:
        t0 = time.monotonic()
        with pytest.raises(DataError, match=fragment):
            ptb.ensure_ptb(url=url, **kwargs)
        assert time.monotonic() - t0 < limit_s
    finally:
        server.shutdown()
        server.server_close()
    assert list((tmp_path / "cache").iterdir()) == []  # no partial archive left


def test_download_timeout_must_be_positive(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMLSTM_DATA_DIR", str(tmp_path))
    for bad in (0, -1, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="download_timeout"):
            ptb.ensure_ptb(download_timeout=bad)


def test_cached_files_verified_against_checksums_once_per_version(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    d.mkdir()
    for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"):
        (d / name).write_text(" a b \n")
    monkeypatch.setenv("NUMLSTM_DATA_DIR", str(d))
    import hashlib

    sha = dict.fromkeys(["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"],
                        hashlib.sha256(b" a b \n").hexdigest())  # fmt: skip
    assert ptb.ensure_ptb(file_sha256=sha, download=False) == d
    with pytest.raises(DataError, match=r"rm .*ptb\.train\.txt"):  # the default: real PTB sums
        ptb.ensure_ptb(download=False)
    # an edit that keeps size and mtime is still seen (ctime changes)
    st = (d / "ptb.test.txt").stat()
    (d / "ptb.test.txt").write_text(" a c \n")
    os.utime(d / "ptb.test.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DataError, match="ptb.test.txt"):
        ptb.ensure_ptb(file_sha256=sha, download=False)
