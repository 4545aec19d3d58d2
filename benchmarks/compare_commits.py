"""Training and evaluation speed of two commits in one run: bench_train.py from each, alternately.

    python benchmarks/compare_commits.py REF_A REF_B [bench_train.py options]
    python benchmarks/compare_commits.py 94573d2 HEAD --configs small --cells lstm --repeats 1
    python benchmarks/compare_commits.py HEAD WORKTREE --configs test --rounds 1   # uncommitted
    python benchmarks/compare_commits.py 94573d2 HEAD --check-only   # exports + imports only

Each ref is exported with ``git archive`` into a temporary folder outside the repository (the
special ref WORKTREE is this checkout as it is on disk, uncommitted changes included). Every
run is a fresh process of this Python (the current venv's NumPy, Numba, ...) that runs THAT
tree's own ``benchmarks/bench_train.py`` with PYTHONPATH set to the tree, so that the tree's
own ``numlstm`` is imported; a small wrapper reports which ``numlstm`` the process really
imported, and a run whose numlstm is not the tree's stops the comparison. Each exported tree
gets a Numba cache folder of its own (NUMBA_CACHE_DIR), warmed by one untimed run with one
step before the timed runs; WORKTREE keeps this environment's Numba cache setting.

The timed runs alternate A, B, A, B, ... (``--rounds`` of each), so that both trees see the
same machine load on average. Printed: words/s of every run, and per config and cell the
median words/s of each tree and the median over rounds of B/A (each round's B run against the
A run just before it). Timings are never asserted; take real figures on a quiet machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKTREE = "WORKTREE"
MARK = "compare_commits: numlstm imported from "

# Runs a tree's bench_train.py as ``python bench_train.py ...`` would, then reports which
# numlstm the process imported: the module in sys.modules, not a guess from the paths.
WRAPPER = f"""
import os, runpy, sys
script = sys.argv[1]
sys.argv = [script, *sys.argv[2:]]
sys.path[0] = os.path.dirname(script)
try:
    runpy.run_path(script, run_name="__main__")
finally:
    module = sys.modules.get("numlstm")
    print({MARK!r} + str(getattr(module, "__file__", None)), flush=True)
"""


@dataclass
class Tree:
    label: str  # "A" or "B"
    ref: str
    commit: str  # the full hash, or WORKTREE
    subject: str
    root: Path
    numba_cache: Path | None  # None: keep this environment's setting


def git(*args: str, cwd: Path = HERE) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def export_tree(label: str, ref: str, tmp: Path) -> Tree:
    """The tree of ``ref`` under ``tmp`` (git archive), or this checkout for WORKTREE."""
    top = Path(git("rev-parse", "--show-toplevel"))
    if ref == WORKTREE:
        return Tree(label, ref, WORKTREE, "this checkout, uncommitted changes included", top, None)
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"compare_commits.py: {ref!r} is not a commit of {top}") from None
    subject = git("log", "-1", "--format=%s", commit)
    root = tmp / f"{label}-{commit[:10]}"
    root.mkdir()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=top, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12: refuse links out of root
            tar.extractall(root, filter="data")
        else:
            tar.extractall(root)  # our own repository's archive
    cache = tmp / f"{label}-numba-cache"
    cache.mkdir()
    return Tree(label, ref, commit, subject, root, cache)


def tree_env(tree: Tree) -> dict[str, str]:
    """This environment with PYTHONPATH = the tree only, and the tree's own Numba cache."""
    env = dict(os.environ, PYTHONPATH=str(tree.root))
    if tree.numba_cache is not None:
        env["NUMBA_CACHE_DIR"] = str(tree.numba_cache)
    return env


def run_tree(tree: Tree, bench_args: list[str], json_path: Path | None) -> str:
    """Run the tree's bench_train.py with ``bench_args``; returns its output. Stops the
    comparison if it fails or imported a numlstm that is not the tree's."""
    script = tree.root / "benchmarks" / "bench_train.py"
    if not script.is_file():
        raise SystemExit(f"compare_commits.py: {tree.ref} has no benchmarks/bench_train.py")
    extra = ["--json", str(json_path)] if json_path is not None else []
    cmd = [sys.executable, "-c", WRAPPER, str(script), *bench_args, *extra]
    proc = subprocess.run(cmd, cwd=tree.root, env=tree_env(tree), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout + proc.stderr)
        raise SystemExit(f"compare_commits.py: bench_train.py of {tree.ref} failed")
    imported = [line[len(MARK) :] for line in proc.stdout.splitlines() if line.startswith(MARK)]
    expected = (tree.root / "numlstm" / "__init__.py").resolve()
    if not imported or imported[-1] == "None" or Path(imported[-1]).resolve() != expected:
        raise SystemExit(
            f"compare_commits.py: {tree.ref}'s run imported numlstm from "
            f"{imported[-1] if imported else 'nowhere'}, not {expected}: stopping"
        )
    return proc.stdout


def train_and_eval(results: dict) -> dict[tuple[str, str], tuple[float, float]]:
    """(config, cell) -> (training words/s, batch-1 evaluation words/s) of one JSON result;
    evaluation: fast_eval's, or the model.loss loop's in a tree without fast_eval."""
    out = {}
    for r in results["rows"]:
        ev = r.get("fast_eval_eval_wps") or r.get("loss_loop_eval_wps") or float("nan")
        out[(r["config"], r["cell"])] = (r["numlstm_train_wps"], ev)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Any other option goes to both trees' bench_train.py (not --json).",
        allow_abbrev=False,  # an abbreviation could swallow one of bench_train.py's options
    )
    p.add_argument("ref_a", metavar="REF_A", help="the 'before' commit (or WORKTREE)")
    p.add_argument("ref_b", metavar="REF_B", help="the 'after' commit (or WORKTREE)")
    p.add_argument("--rounds", type=int, default=3, help="timed runs of each tree, alternating")
    p.add_argument("--check-only", action="store_true",
                   help="export both trees and check that each imports its own numlstm (runs "
                   "bench_train.py --help), no timing")  # fmt: skip
    p.add_argument("--json", default="", help="write every run's figures to this file")
    p.add_argument("--tmp-dir", default=None, help="where the trees go (default: system tmp)")
    args, bench_args = p.parse_known_args(argv)
    if "--json" in bench_args or any(a.startswith("--json=") for a in bench_args):
        p.error("--json is compare_commits.py's own; bench_train.py's is set per run")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")

    with tempfile.TemporaryDirectory(prefix="numlstm-compare-", dir=args.tmp_dir) as tmp_name:
        tmp = Path(tmp_name)
        trees = [export_tree("A", args.ref_a, tmp), export_tree("B", args.ref_b, tmp)]
        for t in trees:
            cache = t.numba_cache or os.environ.get("NUMBA_CACHE_DIR", "Numba's default")
            print(f"{t.label} = {t.ref} ({t.commit[:10]}: {t.subject})\n    tree {t.root}, "
                  f"Numba cache {cache}")  # fmt: skip
        if args.check_only:
            for t in trees:
                out = run_tree(t, ["--help"], None)
                print(f"{t.label}: {out.splitlines()[-1]}")
            print("each tree imports its own numlstm")
            return {}

        # Warm-up: compiles every kernel the timed runs use into the tree's own cache, so that
        # no timed process compiles. One step; argparse takes the last of repeated options.
        for t in trees:
            print(f"warming {t.label}'s Numba cache (untimed) ...", flush=True)
            run_tree(t, [*bench_args, "--steps", "1", "--eval-steps", "2", "--repeats", "1"],
                     tmp / f"{t.label}-warm.json")  # fmt: skip
            print(f"    {t.label} imports {t.root / 'numlstm' / '__init__.py'}")

        runs: dict[str, list[dict]] = {"A": [], "B": []}
        for i in range(args.rounds):
            for t in trees:
                path = tmp / f"{t.label}-{i}.json"
                run_tree(t, bench_args, path)
                figures = train_and_eval(json.loads(path.read_text()))
                runs[t.label].append(figures)
                shown = "; ".join(f"{c} {cell} train {w:,.0f} words/s, eval {e:,.0f}"
                                  for (c, cell), (w, e) in figures.items())  # fmt: skip
                print(f"round {i + 1}/{args.rounds} {t.label}: {shown}", flush=True)

    summary = summarise(trees, runs)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
        print(f"written to {args.json}")
    return summary


def summarise(trees: list[Tree], runs: dict[str, list[dict]]) -> dict:
    a, b = trees
    print(f"\nA = {a.ref} ({a.commit[:10]}), B = {b.ref} ({b.commit[:10]}); "
          f"{len(runs['A'])} alternating rounds\n")  # fmt: skip
    print("| config | cell | A train wps | B train wps | B/A train | A eval wps | B eval wps | "
          "B/A eval | B/A train per round |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for key in runs["A"][0]:
        if key not in runs["B"][0]:
            continue
        row = {"config": key[0], "cell": key[1]}
        for j, what in enumerate(("train", "eval")):
            for label in ("A", "B"):
                row[f"{label}_{what}_wps_runs"] = [r[key][j] for r in runs[label]]
                row[f"{label}_{what}_wps"] = statistics.median(row[f"{label}_{what}_wps_runs"])
            per_round = [
                bv / av
                for av, bv in zip(row[f"A_{what}_wps_runs"], row[f"B_{what}_wps_runs"], strict=True)
            ]
            row[f"{what}_ratio_runs"] = per_round
            row[f"{what}_ratio"] = statistics.median(per_round)
        rounds = ", ".join(f"{x:.3f}" for x in row["train_ratio_runs"])
        print(
            f"| {key[0]} | {key[1]} | {row['A_train_wps']:,.0f} | {row['B_train_wps']:,.0f} | "
            f"{row['train_ratio']:.3f} | {row['A_eval_wps']:,.0f} | {row['B_eval_wps']:,.0f} | "
            f"{row['eval_ratio']:.3f} | {rounds} |"
        )
        rows.append(row)
    print("\nB/A: median over rounds of B's run / the A run just before it. Words/s: median "
          "of each tree's runs. Never asserted; take real figures on a quiet machine.")  # fmt: skip
    return {
        "A": {"ref": a.ref, "commit": a.commit},
        "B": {"ref": b.ref, "commit": b.commit},
        "rows": rows,
    }


if __name__ == "__main__":
    main()
