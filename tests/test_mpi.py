"""Training over MPI (numlstm/fast/distributed.py) against one process, with 2 ranks under mpiexec.

Each MPI test starts ``mpiexec -n 2 python tests/mpi_worker.py ...`` (a tiny 2-layer LSTM on a
slice of PTB, dropout and clipping on) and compares with the same work in this process. Skipped,
with the reason, where mpi4py or mpiexec is missing (pip install -e ".[mpi]") or the PTB files
are not found.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from numlstm.fast import distributed

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "mpi_worker.py"
PTB_DIR = Path(os.environ.get("NUMLSTM_PTB_DIR", REPO.parent / "shared" / "data" / "ptb"))
sys.path.insert(0, str(REPO / "tests"))

import mpi_worker  # noqa: E402


def _mpiexec() -> str | None:
    """The mpiexec next to this Python (the [mpi] extra's), else one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def _has_mpi4py() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("mpi4py") is not None
    except ImportError:
        return False


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(
    not _has_mpi4py() or MPIEXEC is None,
    reason="mpi4py or mpiexec not installed (pip install -e '.[mpi]')",
)
needs_ptb = pytest.mark.skipif(not (PTB_DIR / "ptb.train.txt").exists(),
                               reason=f"real PTB files not found in {PTB_DIR}")  # fmt: skip
# Keeps a broken collective from hanging the test suite.
TIMEOUT = 120


def _clean_env() -> dict[str, str]:
    """This environment without any launcher's variables (the tests run under pytest, which
    may itself run under a launcher)."""
    drop = (*distributed.SIZE_VARS, *distributed.RANK_VARS)
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PMI_")}


def _mpirun(*args: str, ranks: int = 2) -> subprocess.CompletedProcess:
    cmd = [MPIEXEC, "-n", str(ranks), sys.executable, str(WORKER), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=_clean_env())


def _one_process(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(WORKER), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=_clean_env())


def _summary(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.splitlines()[0])


# --------------------------------------------------------------------------------------------
# Without MPI: nothing changes, nothing is imported
# --------------------------------------------------------------------------------------------


def test_requested_reads_the_launcher_environment():
    assert not distributed.requested(None, {})
    assert not distributed.requested(None, {"PMI_SIZE": "1"})
    assert distributed.requested(None, {"PMI_SIZE": "2"})
    assert distributed.requested(None, {"OMPI_COMM_WORLD_SIZE": "4"})
    assert not distributed.requested(False, {"OMPI_COMM_WORLD_SIZE": "4"})
    assert distributed.requested(True, {})
    assert distributed.launcher_rank({"PMI_RANK": "3"}) == 3
    with pytest.raises(TypeError, match="mpi must be"):
        distributed.requested("yes", {})


def test_choose_embedding_mode_counts_bytes():
    # PTB small (V 10000, H 200, float32): 400 rows per rank gathered beat the 8 MB allreduce
    # until their bytes reach twice the dense gradient's.
    assert distributed.choose_embedding_mode(800, 10000, 200, 4) == "gather"
    assert distributed.choose_embedding_mode(19_000, 10000, 200, 4) == "gather"
    assert distributed.choose_embedding_mode(20_000, 10000, 200, 4) == "dense"


@needs_ptb
def test_training_without_a_launcher_never_imports_mpi4py(tmp_path):
    code = (
        f"import sys; sys.path.insert(0, {str(REPO / 'tests')!r}); import mpi_worker as w\n"
        "from numlstm import train as t\n"
        f"t.train(w.CONFIG.replace(max_max_epoch=1), w.data(), {str(tmp_path / 'run')!r},\n"
        "        progress='none', threads=1, log=lambda s: None, checkpoint_every=None)\n"
        "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=TIMEOUT, env=_clean_env())  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------
# 2 ranks = 1 process
# --------------------------------------------------------------------------------------------


@needs_mpi
@needs_ptb
@pytest.mark.parametrize(
    "dtype, threads, mode, tol",
    [
        # measured worst differences: float64 2.2e-16, float32 2.4e-7 (parameters near 0.1-1)
        ("float64", 1, "auto", 1e-13),
        ("float32", 1, "dense", 2e-6),
        ("float32", 2, "gather", 2e-6),  # 2 threads inside each rank
    ],
)
def test_twenty_steps_on_two_ranks_equal_one_process(tmp_path, dtype, threads, mode, tol):
    out = tmp_path / "steps.npz"
    proc = _mpirun("steps", str(out), dtype, str(threads), mode)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = np.load(out)
    ref = mpi_worker.run_steps(mpi_worker.data(), dtype)
    assert got["losses"].shape == (mpi_worker.STEPS,)
    np.testing.assert_allclose(got["losses"], ref["losses"], rtol=tol, atol=0)
    for key in ref:
        if key.startswith(("param.", "state.")):
            assert got[key].dtype == ref[key].dtype == np.dtype(dtype)
            np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=tol, err_msg=key)
    if mode != "auto":
        assert str(got["modes"][0]) == mode
    # The runs really trained: the parameters moved far more than the tolerance.
    start = mpi_worker.LanguageModel(10000, mpi_worker.H, 2, dtype=dtype, seed=3).params
    moved = max(float(np.max(np.abs(ref[f"param.{k}"] - a))) for k, a in start.items())
    assert moved > 100 * tol


@needs_mpi
@pytest.mark.parametrize("threads", [1, 2])
def test_padded_batch_on_two_ranks_equals_one_process(tmp_path, threads):
    """``lengths=`` through DistributedStep (each rank its rows) equals the one-process step."""
    out = tmp_path / "lengths.npz"
    proc = _mpirun("lengths", str(out), "float64", str(threads))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = np.load(out)
    model, x, y, lengths = mpi_worker.lengths_batch("float64")
    state0 = model.init_state(mpi_worker.B)
    loss, grads, state = model.loss_and_grads(x, y, state0, 0.5, np.random.default_rng(6),
                                              lengths=lengths)  # fmt: skip
    assert float(got["loss"]) == pytest.approx(loss, rel=1e-12)
    for k, g in grads.items():
        np.testing.assert_allclose(got[f"grad.{k}"], g, rtol=1e-12, atol=1e-15, err_msg=k)
    np.testing.assert_allclose(got["state"], state[0][1], rtol=1e-12, atol=1e-15)
    ev = model.loss(x, y, state0, lengths=lengths)[0]
    assert float(got["eval"]) == pytest.approx(ev, rel=1e-12)


@needs_mpi
@pytest.mark.parametrize("threads,mode", [(1, "dense"), (2, "gather")])
def test_every_model_option_on_two_ranks_equals_one_process(tmp_path, threads, mode):
    """LSTMP layers and tied embeddings through DistributedStep: the tied gradient's two terms
    (dT1) summed over the ranks, with either way of combining the embedding's rows."""
    out = tmp_path / "options.npz"
    proc = _mpirun("options", str(out), "float64", str(threads), mode)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = np.load(out)
    model, x, y, lengths = mpi_worker.options_batch("float64")
    state0 = model.init_state(mpi_worker.B)
    loss, grads, state = model.loss_and_grads(x, y, state0, 0.5, np.random.default_rng(6),
                                              lengths=lengths)  # fmt: skip
    assert "softmax_w" not in grads and "l1.W_proj" in grads
    assert float(got["loss"]) == pytest.approx(loss, rel=1e-12)
    for k, g in grads.items():
        np.testing.assert_allclose(got[f"grad.{k}"], g, rtol=1e-11, atol=1e-15, err_msg=k)
    np.testing.assert_allclose(got["state"], state[0][1], rtol=1e-12, atol=1e-15)
    ev = model.loss(x, y, state0, lengths=lengths)[0]
    assert float(got["eval"]) == pytest.approx(ev, rel=1e-12)


@needs_mpi
@pytest.mark.parametrize("dropout", ["fresh", "sequence", "batch"])
def test_dropout_sites_on_two_ranks_equal_one_process(tmp_path, dropout):
    """Every DropoutWrapper site and each variational mode through DistributedStep: each rank
    takes its rows of the whole batch's masks (a batch-shared mask whole), so the step equals
    the one-process step (docs/dropout.md section 5)."""
    out = tmp_path / "dropout.npz"
    proc = _mpirun("lengths", str(out), "float64", "2", dropout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = np.load(out)
    model, x, y, lengths = mpi_worker.lengths_batch("float64")
    loss, grads, state = model.loss_and_grads(
        x, y, model.init_state(mpi_worker.B), mpi_worker.dropout_for(dropout),
        np.random.default_rng(6), lengths=lengths)  # fmt: skip
    assert float(got["loss"]) == pytest.approx(loss, rel=1e-12)
    for k, g in grads.items():
        np.testing.assert_allclose(got[f"grad.{k}"], g, rtol=1e-11, atol=1e-14, err_msg=k)
    np.testing.assert_allclose(got["state"], state[0][1], rtol=1e-12, atol=1e-15)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The one-process run every MPI run below must reproduce (float64)."""
    run = tmp_path_factory.mktemp("one") / "run"
    return {**_summary(_one_process("train", str(run), "float64")), "dir": run}


def _assert_same_run(got: dict, ref: dict) -> None:
    assert len(got["history"]) == len(ref["history"]) == mpi_worker.CONFIG.max_max_epoch
    for g, r in zip(got["history"], ref["history"], strict=True):
        for key in ("train_perplexity", "valid_perplexity", "lr"):
            assert g[key] == pytest.approx(r[key], rel=1e-12), key
    assert got["test"] == pytest.approx(ref["test"], rel=1e-12)


def _assert_same_norms(run: Path, ref: dict) -> None:
    """grad_norm.csv: one row per step, written once (by rank 0), each the whole batch's norm."""
    from numlstm.io.grad_norm_log import read_rows

    got, want = read_rows(run / "grad_norm.csv"), read_rows(ref["dir"] / "grad_norm.csv")
    assert [r[:2] for r in got] == [r[:2] for r in want]
    assert len(want) == mpi_worker.CONFIG.max_max_epoch * len(set(r[1] for r in want))
    np.testing.assert_allclose([r[2] for r in got], [r[2] for r in want], rtol=1e-12)


@needs_mpi
@needs_ptb
def test_train_on_two_ranks_equals_one_process(tmp_path, uninterrupted):
    run = tmp_path / "run"
    _assert_same_run(_summary(_mpirun("train", str(run), "float64")), uninterrupted)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["segments"][0]["mpi_ranks"] == 2
    assert (run / "log.csv").read_text().count("\n") == 1 + mpi_worker.CONFIG.max_max_epoch
    _assert_same_norms(run, uninterrupted)
    assert not list(run.glob("*.tmp"))


@needs_mpi
@needs_ptb
def test_resume_on_one_rank_after_two(tmp_path, uninterrupted):
    run = tmp_path / "run"
    stopped = _mpirun("train", str(run), "float64", "--stop-after", "30")
    assert stopped.returncode != 0 and "interrupted" in stopped.stdout, stopped.stderr
    saved = json.loads((run / "summary.json").read_text())
    assert not saved["finished"] and saved["segments"][0]["end"] == {"epoch": 0, "step": 30}
    _assert_same_run(_summary(_one_process("train", str(run), "float64", "--resume")),
                     uninterrupted)  # fmt: skip
    _assert_same_norms(run, uninterrupted)


@needs_mpi
@needs_ptb
def test_resume_on_two_ranks_after_one(tmp_path, uninterrupted):
    run = tmp_path / "run"
    stopped = _one_process("train", str(run), "float64", "--stop-after", "50")
    assert stopped.returncode == 3 and "interrupted" in stopped.stdout, stopped.stderr
    # epoch 2, mid-epoch: the carried state of all 6 rows is in the checkpoint
    saved = json.loads((run / "summary.json").read_text())
    assert saved["segments"][0]["end"]["step"] > 0
    got = _summary(_mpirun("train", str(run), "float64", "--resume"))
    _assert_same_run(got, uninterrupted)
    _assert_same_norms(run, uninterrupted)


# --------------------------------------------------------------------------------------------
# Failures end the job
# --------------------------------------------------------------------------------------------


def _rank_pids(root: int) -> dict[int, int]:
    """{rank: pid} of the worker processes below ``root``, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(WORKER).encode() not in cmdline:
            continue
        values = dict(v.split(b"=", 1) for v in env if b"=" in v)
        rank = values.get(b"PMI_RANK") or values.get(b"OMPI_COMM_WORLD_RANK")
        if rank is not None and _descends_from(int(entry.name), root):
            found[int(rank)] = int(entry.name)
    return found


def _descends_from(pid: int, root: int) -> bool:
    while pid > 1:
        if pid == root:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


@needs_mpi
@needs_ptb
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_a_killed_rank_ends_the_run_and_the_checkpoint_survives(tmp_path):
    """Rank 1 is killed (SIGKILL) while both train; the launcher must end rank 0 too (no hang:
    the test's timeout bounds it) and the checkpoint rank 0 wrote must still load."""
    from numlstm.io.saving import load_model

    run = tmp_path / "run"
    cfg = ["--big"]  # more epochs, so that the run is still training when rank 1 dies
    cmd = [MPIEXEC, "-n", "2", sys.executable, str(WORKER), "train", str(run), "float64", *cfg]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_clean_env())  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT
        # wait for the first checkpoint (after epoch 1), then kill rank 1
        while not (run / "checkpoint.npz").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
        pids = _rank_pids(proc.pid)
        assert sorted(pids) == [0, 1], pids
        os.kill(pids[1], signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert "BAD TERMINATION" in out + err or "killed" in (out + err).lower(), out + err
    assert "interrupted" not in out
    model, _, meta = load_model(run / "checkpoint.npz")  # intact: written atomically
    assert meta["training"]["epoch"] >= 1
    assert _rank_pids(proc.pid) == {}  # no rank left behind


@needs_mpi
@needs_ptb
def test_an_error_in_one_rank_aborts_every_rank(tmp_path):
    """An exception that only rank 1 raises must not leave rank 0 waiting in a collective:
    the guard calls MPI_Abort, which ends the job."""
    start = time.monotonic()
    proc = _mpirun("train", str(tmp_path / "run"), "float64", "--fail-after", "20")
    assert proc.returncode != 0
    assert "rank 1 failed on purpose" in proc.stderr
    assert "aborting all ranks" in proc.stderr
    assert time.monotonic() - start < TIMEOUT
