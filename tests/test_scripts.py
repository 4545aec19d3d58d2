"""Every script in examples/ and benchmarks/ runs at a tiny size and prints what it should.

Each runs as a subprocess of this Python (exit status 0 within a timeout), writes only under
tmp_path, and is checked on its output: a table row, a perplexity line, a file it wrote. The
timings the benchmarks print are never checked. Scripts that need the PTB or tiny-shakespeare
text, PyTorch, mpiexec or git are skipped with the reason when it is missing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from numlstm.fast import distributed

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
PTB_DIR = Path(os.environ.get("NUMLSTM_PTB_DIR", DATA / "ptb"))
SHAKESPEARE = DATA / "shakespeare" / "input.txt"
TIMEOUT = 300  # seconds per script: generous, a cold Numba cache compiles for a while

needs_ptb = pytest.mark.skipif(
    not (PTB_DIR / "ptb.train.txt").exists(), reason=f"real PTB files not found in {PTB_DIR}"
)
needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch not installed (optional comparison)"
)


def _env() -> dict[str, str]:
    """This environment for a script: the repository's numlstm first on the path, no MPI
    launcher's variables (pytest may itself run under one), and BLAS on one thread. Why one
    thread: on the shared 2-core machine these tests run on, OpenBLAS's two threads made one
    PTB-small step of ptb_small.py take ~2 s instead of ~0.1 s; these tests check that the
    scripts run, not how fast."""
    drop = (*distributed.SIZE_VARS, *distributed.RANK_VARS)
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PMI_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return env


def run(script: str, *args: object, cwd: Path, launcher: tuple[str, ...] = ()) -> str:
    """stdout of ``[launcher] python REPO/script args`` run in ``cwd``; fails on a non-zero exit."""
    cmd = [*launcher, sys.executable, str(REPO / script), *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout


def one(pattern: str, text: str) -> re.Match:
    """The single line of ``text`` matching ``pattern`` (re.M)."""
    found = list(re.finditer(pattern, text, re.M))
    assert len(found) == 1, f"{len(found)} lines match {pattern!r} in:\n{text}"
    return found[0]


def test_every_script_has_a_test():
    """A new script in examples/ or benchmarks/ must get a smoke test here."""
    tested = {
        "examples/ptb_small.py", "examples/shakespeare.py", "examples/ptb_sentences.py",
        "examples/ptb_cloze.py", "benchmarks/bench_layers.py", "benchmarks/bench_layers_torch.py",
        "benchmarks/bench_train.py", "benchmarks/bench_torch.py", "benchmarks/profile_step.py",
        "benchmarks/bench_mpi.py", "benchmarks/mpi_cost_model.py",
        "benchmarks/compare_commits.py", "benchmarks/bench_busy.py",
    }  # fmt: skip
    scripts = {p.relative_to(REPO).as_posix() for d in ("examples", "benchmarks")
               for p in (REPO / d).glob("*.py")}  # fmt: skip
    assert scripts == tested


# --------------------------------------------------------------------------------------------
# examples/
# --------------------------------------------------------------------------------------------


@needs_ptb
def test_ptb_small_example(tmp_path):
    out = run("examples/ptb_small.py", "--data-dir", PTB_DIR, "--epochs", "1",
              "--max-words", "2000", cwd=tmp_path)  # fmt: skip
    assert out.splitlines()[0] == "train 2,000 words, valid 2,000, test 2,000"
    valid = float(one(r"^epoch  1  lr 1\.000  .* valid perplexity\s+([\d.]+)", out)[1])
    test = float(one(r"^test perplexity ([\d.]+)$", out)[1])
    # A few steps from a uniform start: finite, and below twice the vocabulary (10,000).
    for ppl in (valid, test):
        assert math.isfinite(ppl) and 1.0 < ppl < 20000.0


@needs_ptb
def test_ptb_sentences_example(tmp_path):
    out = run("examples/ptb_sentences.py", "--data-dir", PTB_DIR, "--epochs", "1",
              "--max-words", "3000", "--threads", "2", cwd=tmp_path)  # fmt: skip
    assert out.splitlines()[0] == "train 3,000 words, valid 3,000, test 3,000"
    train, valid = map(float, one(r"^epoch  1  lr 1\.000  train perplexity ([\d.]+)  valid "
                                  r"perplexity ([\d.]+)", out).groups())  # fmt: skip
    test, valid_again = map(
        float, one(r"^test perplexity ([\d.]+)  \(valid ([\d.]+);", out).groups()
    )
    assert valid_again == valid  # evaluation is deterministic: no dropout, no shuffling
    for ppl in (train, valid, test):  # a few steps from a uniform start over 10,000 words
        assert math.isfinite(ppl) and 1.0 < ppl < 30000.0


@needs_ptb
@pytest.mark.parametrize("direction", ["both", "left"])
def test_ptb_cloze_example(tmp_path, direction):
    out = run("examples/ptb_cloze.py", "--data-dir", PTB_DIR, "--epochs", "2", "--hidden", "16",
              "--max-words", "3000", "--direction", direction, cwd=tmp_path)  # fmt: skip
    # both: two 16-unit directions; left: one of 32 units; each with a 32-wide softmax input
    recurrent = 2 * 4 * 16 * 32 if direction == "both" else 4 * 32 * 48
    biases = 2 * 4 * 16 if direction == "both" else 4 * 32
    assert f"(recurrent {recurrent + biases:,})" in out.splitlines()[0]
    epochs = re.findall(r"^epoch  (\d)  train cloze perplexity", out, re.M)
    assert epochs == ["1", "2"]
    m = one(rf"^{direction}: valid cloze perplexity ([\d.]+), accuracy ([\d.]+); "
            r"test ([\d.]+), accuracy ([\d.]+)", out)  # fmt: skip
    ppl_valid, acc_valid, ppl_test, acc_test = map(float, m.groups())
    for ppl in (ppl_valid, ppl_test):  # the blank's word among 10,000
        assert math.isfinite(ppl) and 1.0 < ppl < 30000.0
    assert 0.0 <= acc_valid <= 1.0 and 0.0 <= acc_test <= 1.0


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason=f"{SHAKESPEARE} not found")
def test_shakespeare_example(tmp_path):
    out_dir = tmp_path / "out"
    out = run("examples/shakespeare.py", "--data", SHAKESPEARE, "--max-words", "5000",
              "--iters", "4", "--hidden", "16", "--steps", "10", "--batch-size", "4",
              "--log-every", "2", "--sample-every", "0", "--sample-words", "3",
              "--out", out_dir, cwd=tmp_path)  # fmt: skip
    assert "4,750 training / 250 held-out words" in out
    assert re.search(r"^done: 4 iterations in [\d.]+ s; training loss [\d.]+ -> [\d.]+", out, re.M)
    assert (out_dir / "shakespeare.npz").stat().st_size > 0
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out_dir / "loss.png").stat().st_size > 0
    samples = [line.strip() for line in out.splitlines() if line.startswith("    ")]
    assert samples[0].startswith("thou art more ") and len(samples[0].split()) == 3 + 3


# --------------------------------------------------------------------------------------------
# benchmarks/
# --------------------------------------------------------------------------------------------


def test_bench_layers(tmp_path):
    out = run("benchmarks/bench_layers.py", "--shapes", "small", "--cells", "lstm",
              "--repeats", "1", "--min-time", "0.01", cwd=tmp_path)  # fmt: skip
    for impl in ("numlstm", "numpy"):
        one(rf"^\| small  \| 20 \| 20 \| 200 \| lstm \| {impl} +\| +[\d.]+ \| +[\d,]+ \|", out)
    # Both implementations computed the same thing (float32 gradients).
    assert float(one(r"small lstm: ([\d.e+-]+)", out)[1]) < 1e-3


@pytest.mark.parametrize("layer", ["lstm", "bilstm", "lstmp"])
def test_bench_layers_torch_numlstm_side(tmp_path, layer):
    out = run("benchmarks/bench_layers_torch.py", "--layer", layer, "--T", 4, "--B", 3, "--D", 5,
              "--H", 6, "--lengths", "none,full,mixed", "--rounds", 1, "--repeats", 1,
              "--calls", 1, "--no-torch", cwd=tmp_path)  # fmt: skip
    for kind in ("none", "full", "mixed"):
        one(rf"^{kind}\s+numlstm\s+[\d.]+\s+[\d,]+\s+[\d.]+$", out)
    assert "torch" not in out.split("\n", 1)[1]  # only numlstm was timed


@needs_torch
def test_bench_layers_torch_compares_the_same_numbers(tmp_path):
    out = run("benchmarks/bench_layers_torch.py", "--layer", "bilstm", "--T", 4, "--B", 3, "--D",
              5, "--H", 6, "--lengths", "none,mixed", "--rounds", 1, "--repeats", 1, "--calls", 1,
              cwd=tmp_path)  # fmt: skip
    # the script stops when the sides disagree; here both agree to float32 rounding
    for kind in ("none", "mixed"):
        worst = float(one(rf"^lengths {kind}: sum \|hs\| and sum \|dx\| agree to (\S+) ", out)[1])
        assert worst < 1e-5
        one(rf"^{kind}\s+torch time / numlstm time: [\d.]+$", out)


def test_bench_train(tmp_path):
    out = run("benchmarks/bench_train.py", "--configs", "test", "--cells", "lstm,gru",
              "--steps", "2", "--eval-steps", "20", "--repeats", "1",
              "--json", tmp_path / "r.json", cwd=tmp_path)  # fmt: skip
    for cell in ("lstm", "gru"):
        one(rf"^\| test \| {cell} \| [\d,]+ \| [\d,]+ \| \d+% \|", out)
    results = json.loads((tmp_path / "r.json").read_text())
    rows = results["rows"]
    assert [(r["config"], r["cell"]) for r in rows] == [("test", "lstm"), ("test", "gru")]
    for r in rows:
        assert r["numlstm_train_wps"] > 0 and len(r["efficiency_runs"]) == 1
        assert r["fast_eval_eval_wps"] > 0 and r["loss_loop_eval_wps"] > 0
    mine = Path(results["environment"]["numlstm"]["numlstm_file"])
    assert mine == REPO / "numlstm" / "__init__.py"


def test_bench_train_variants_are_rows_of_the_changed_config(tmp_path):
    out = run("benchmarks/bench_train.py", "--configs", "test", "--cells", "lstm",
              "--steps", "2", "--eval-steps", "20", "--repeats", "1",
              "--variants", "plain; state: state_keep_prob=0.8, variational=sequence; "
              "proj: hidden_size=4, num_proj=2",
              "--json", tmp_path / "r.json", cwd=tmp_path)  # fmt: skip
    one(r"^\| plain \| test \| lstm \| [\d,]+ \| [\d,]+ \| \d+% \|", out)
    one(r"^\| proj \| test \| lstm \| [\d,]+ \| - \| - \|", out)  # no roofline for P != H
    one(r"^  proj test lstm: no roofline \(the GEMM shapes differ with num_proj\)$", out)
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["plain", "state", "proj"]
    assert all(r["numlstm_train_wps"] > 0 and r["fast_eval_eval_wps"] > 0 for r in rows)


def test_bench_train_variants_parse_to_typed_config_fields():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_train
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    variants = bench_train.parse_variants(
        "plain; both: tie_embeddings=true, state_keep_prob=0.75, variational=sequence, "
        "num_proj=none; wide: hidden_size=400, num_proj=200"
    )
    assert variants == [
        ("plain", {}),
        ("both", {"tie_embeddings": True, "state_keep_prob": 0.75, "variational": "sequence",
                  "num_proj": None}),
        ("wide", {"hidden_size": 400, "num_proj": 200}),
    ]  # fmt: skip
    cfg = bench_train.get_config("test").replace(hidden_size=4, tie_embeddings=True, num_proj=4)
    model = bench_train.numlstm_model(cfg, "lstm")  # the options reach the model
    assert "softmax_w" not in model.params and "l0.W_proj" in model.params
    for bad, says in (
        ("x: hidden=3", "no field 'hidden'"),
        ("x: hidden_size", "not field=value"),
        ("x: tie_embeddings=maybe", "true or false"),
        ("x: num_proj=1.5", "not a valid int"),
        ("a; a", "names repeat"),
    ):
        with pytest.raises(ValueError, match=says):
            bench_train.parse_variants(bad)


@needs_torch
def test_bench_train_compare_torch_runs_each_side_in_a_clean_process(tmp_path):
    """_env sets OMP_NUM_THREADS etc. as a harness would: neither side may see them, PyTorch
    must not see numlstm's OMP_WAIT_POLICY nor import numlstm."""
    out = run("benchmarks/bench_train.py", "--configs", "test", "--cells", "lstm",
              "--steps", "2", "--eval-steps", "20", "--repeats", "1", "--compare-torch",
              "--json", tmp_path / "r.json", cwd=tmp_path)  # fmt: skip
    one(r"^  round 1/1: numlstm train [\d,]+ words/s, eval [\d,]+; torch train [\d,]+", out)
    one(r"^\| test \| lstm \| [\d,]+ \| [\d,]+ \| [\d.]+ \|", out)
    assert "torch side (numlstm not imported): thread variables none;" in out
    results = json.loads((tmp_path / "r.json").read_text())
    env = results["environment"]
    assert env["removed"]["OMP_NUM_THREADS"] == "1"
    assert env["torch"]["thread_vars"] == {} and not env["torch"]["numlstm_imported"]
    assert env["numlstm"]["thread_vars"] == {"OMP_WAIT_POLICY": "PASSIVE"}  # numlstm's own
    assert env["torch"]["torch_num_threads"] >= 1
    (row,) = results["rows"]
    assert len(row["numlstm_train_wps_runs"]) == len(row["torch_train_wps_runs"]) == 1
    assert len(row["torch_eval_wps_runs"]) == len(row["efficiency_runs"]) == 1
    assert row["train_ratio"] == pytest.approx(row["numlstm_train_wps"] / row["torch_train_wps"])
    assert row["eval_ratio"] == pytest.approx(row["fast_eval_eval_wps"] / row["torch_eval_wps"])


def test_bench_train_merges_the_rounds_of_its_processes():
    """--compare-torch's rows from one numlstm process per round, joined (no subprocess)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_train
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    rows = [
        {"numlstm_train_wps": w, "numlstm_train_wps_runs": [w], "efficiency": e,
         "efficiency_runs": [e], "flops_per_word": 1e6, "achieved_gflops": 0.0,
         "peak_rss_mib": rss, "config": "small"}
        for w, e, rss in ((100.0, 0.5, 300.0), (300.0, 0.7, 200.0), (200.0, 0.9, 250.0))
    ]  # fmt: skip
    row = bench_train.merge_rows(rows)
    assert row["numlstm_train_wps_runs"] == [100.0, 300.0, 200.0]
    assert row["numlstm_train_wps"] == 200.0 and row["efficiency"] == 0.7
    assert row["achieved_gflops"] == pytest.approx(1e6 * 200.0 / 1e9)
    assert row["peak_rss_mib"] == 300.0 and row["config"] == "small"


def test_bench_torch_never_imports_numlstm():
    """Read, not run (torch is optional): the file has no numlstm import at all."""
    source = (REPO / "benchmarks" / "bench_torch.py").read_text()
    assert not re.search(r"^\s*(import|from)\s+numlstm", source, re.M)


def test_profile_step(tmp_path):
    out = run("benchmarks/profile_step.py", "--configs", "small", "--steps", "1",
              "--warmup", "1", cwd=tmp_path)  # fmt: skip
    one(r"^\| \*\*total \(profiled step\)\*\* \| \*\*[\d.]+\*\* \| 100 \|$", out)
    one(r"^\| lstm fwd GEMMs \| [\d.]+ \| [\d.]+ \|$", out)


def test_bench_busy(tmp_path):
    out = run("benchmarks/bench_busy.py", "--steps", "1", "--words", "3", "--repeats", "1",
              "--workloads", "ptb-small,generate-small", cwd=tmp_path)  # fmt: skip
    for workload, variant in [("ptb-small", "blocks"), ("ptb-small", "blas-all"),
                              ("generate-small", "blas-1")]:  # fmt: skip
        one(rf"^\| {workload} \| {variant} \| [\d,]+ \| [\d,]+ \| [\d.]+ \|$", out)


@needs_ptb
def test_bench_mpi_one_process(tmp_path):
    out = run("benchmarks/bench_mpi.py", "--config", "small", "--steps", "1", "--warmup", "1",
              "--data-dir", PTB_DIR, cwd=tmp_path)  # fmt: skip
    assert out.startswith("1 process, 1 thread(s) each")
    one(r"^small: step median [\d.]+ ms \(min [\d.]+\), [\d,]+ words/s over 1 steps$", out)


def _mpiexec() -> str | None:
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


@needs_ptb
@pytest.mark.skipif(
    _mpiexec() is None or importlib.util.find_spec("mpi4py") is None,
    reason="mpi4py or mpiexec not installed (pip install -e '.[mpi]')",
)
def test_bench_mpi_two_ranks(tmp_path):
    out = run("benchmarks/bench_mpi.py", "--config", "small", "--steps", "1", "--warmup", "1",
              "--repeats", "1", "--data-dir", PTB_DIR, cwd=tmp_path,
              launcher=(_mpiexec(), "-n", "2"))  # fmt: skip
    assert out.startswith("2 MPI ranks, 1 thread(s) each")  # printed by rank 0 only
    one(r"^small: step median .* words/s over 1 steps, embedding went (dense|gather)$", out)
    for mode in ("dense", "gather"):
        one(rf"^small: whole step with embedding {mode}: median [\d.]+ ms", out)


def test_mpi_cost_model(tmp_path):
    png = tmp_path / "speedup.png"
    out = run("benchmarks/mpi_cost_model.py", "--out", png, cwd=tmp_path)
    assert png.stat().st_size > 0 and f"wrote {png}" in out
    # One row per table (B = 20, then B = 640). Two machines on the fastest network: a
    # speed-up above 1 and at most 2.
    rows = re.findall(r"^\| small \| 100 Gbit/s \| ([\d.]+) \((\d+)%\) \|", out, re.M)
    assert len(rows) == 2 and all(1.0 < float(x) <= 2.0 for x, _ in rows)


# --------------------------------------------------------------------------------------------
# compare_commits.py
# --------------------------------------------------------------------------------------------

needs_git = pytest.mark.skipif(
    shutil.which("git") is None or not (REPO / ".git").exists(),
    reason="not a git checkout, or git not installed",
)


@needs_git
def test_compare_commits_imports_each_trees_own_numlstm(tmp_path):
    out = run("benchmarks/compare_commits.py", "HEAD", "HEAD", "--check-only",
              "--tmp-dir", tmp_path, cwd=tmp_path)  # fmt: skip
    found = re.findall(r"^([AB]): compare_commits: numlstm imported from (.*)$", out, re.M)
    assert [label for label, _ in found] == ["A", "B"]
    roots = [Path(path).parent.parent for _, path in found]
    assert roots[0] != roots[1] and all(r.parent.parent == tmp_path for r in roots)
    assert all(r.name.startswith(label + "-") for r, (label, _) in zip(roots, found, strict=True))
    assert not any(tmp_path.iterdir())  # the exported trees are removed afterwards


@needs_git
def test_compare_commits_alternates_runs(tmp_path):
    """WORKTREE against itself (this checkout, its warm Numba cache): one round each."""
    out = run("benchmarks/compare_commits.py", "WORKTREE", "WORKTREE", "--rounds", "1",
              "--configs", "test", "--cells", "lstm", "--steps", "1", "--eval-steps", "5",
              "--repeats", "1", "--json", tmp_path / "c.json", cwd=tmp_path)  # fmt: skip
    order = re.findall(r"^round 1/1 ([AB]): test lstm train [\d,]+ words/s", out, re.M)
    assert order == ["A", "B"]
    one(r"^\| test \| lstm \| [\d,]+ \| [\d,]+ \| [\d.]+ \|", out)
    (row,) = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert row["train_ratio"] == pytest.approx(row["B_train_wps"] / row["A_train_wps"])
