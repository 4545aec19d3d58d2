"""A training run's folder: one writer at a time, nothing lost, every segment recorded.

A run folder holds ``checkpoint.npz`` (model + what resuming needs), ``log.csv`` (one row per
epoch), ``grad_norm.csv`` (one row per step: the gradient norm before clipping;
io/grad_norm_log.py), ``summary.json`` (the whole run so far, rewritten after every epoch),
``perplexity.png`` and ``grad_norm.png``. A long run is stopped and resumed many times; each
stretch of work between a start and a stop is a *segment*, recorded in the checkpoint and in
``summary.json`` with its wall time, the code it ran (git commit), its peak memory and how it
ended, so a published run says exactly how it was made.

The rules, each one a way work was lost before:

* one process at a time (``lock``): a second training on the same folder stops at once;
* a folder that holds a run is never overwritten without ``--resume`` or ``--overwrite``;
* every file is written atomically (temporary file + ``os.replace``), so a kill or a full disk
  leaves the previous version, never a truncated one;
* temporary files left by a write that was killed are removed when the folder is next opened;
* a resume must see the same data (``data_fingerprint``) and the same config, except that the
  number of epochs may grow (extending a finished run); a refusal names the differing fields.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import errno
import fcntl
import hashlib
import io
import json
import os
import platform
import resource
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from . import checkpoint

CHECKPOINT = "checkpoint.npz"
LOCK = ".lock"
RUN_FILES = (CHECKPOINT, "log.csv", "summary.json")
# Config fields a resume may change: more (or fewer, but not past the trained ones) epochs.
EXTENDABLE = ("max_max_epoch",)


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (busy, holds another run, different data...)."""


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def source_commit() -> str | None:
    """The git commit of the numlstm source being run, with "+dirty" when files differ from it;
    None outside a git checkout (an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=5)  # fmt: skip
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def data_fingerprint(splits: dict[str, np.ndarray], id_to_word: Sequence[str]) -> dict:
    """Token counts and one sha256 per split (over the int64 ids) and of the vocabulary.

    Hashing the ~1M PTB ids takes a few milliseconds; a resume compares the fingerprints so that
    a run never continues silently on data that differs from the data it started with.
    """
    out: dict = {"vocab_sha256": hashlib.sha256("\n".join(id_to_word).encode()).hexdigest()}
    for name, ids in splits.items():
        a = np.ascontiguousarray(ids, dtype=np.int64)
        out[name] = {"tokens": int(a.size), "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
    return out


def fingerprint_differences(saved: dict, now: dict) -> list[str]:
    """Human-readable differences between two ``data_fingerprint`` results (empty if equal)."""
    diffs = []
    if saved.get("vocab_sha256") != now.get("vocab_sha256"):
        diffs.append("the vocabulary differs")
    for name in sorted(set(saved) | set(now)):
        if name == "vocab_sha256":
            continue
        a, b = saved.get(name) or {}, now.get(name) or {}
        if a.get("tokens") != b.get("tokens"):
            diffs.append(f"{name}: {a.get('tokens')} tokens then, {b.get('tokens')} now")
        elif a.get("sha256") != b.get("sha256"):
            diffs.append(f"{name}: same length ({a.get('tokens')} tokens), different ids")
    return diffs


def config_differences(saved: dict, now: dict, ignore: Sequence[str] = ()) -> list[str]:
    """``field: saved -> now`` for every config field that differs (fields in ``ignore`` aside)."""
    keys = sorted((set(saved) | set(now)) - set(ignore))
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and os.replace:
    a crash or a full disk leaves the previous file whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        binary = isinstance(data, bytes)
        with open(tmp, "wb" if binary else "w", newline=None if binary else "") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_log(path: Path, history: list[dict]) -> None:
    """``log.csv``: one row per epoch of the whole run (all segments), written atomically."""
    if not history:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_atomic(path, buf.getvalue())


def write_json(path: Path, obj: dict) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Remove the temporary files that an interrupted atomic write left in ``folder``.

    Only names of the forms our writers use are touched (``.checkpoint.npz.XXXXXXXX.tmp`` from
    checkpoint.py, ``.<run file>.<pid>.tmp`` from ``write_atomic``), and only while the
    folder's lock is held, so that no live writer can own them.
    """
    removed = checkpoint.remove_stale_temp_files(folder, CHECKPOINT)
    for name in ("log.csv", "summary.json", "perplexity.png", "grad_norm.csv", "grad_norm.png"):
        for p in folder.glob(f".{name}.*.tmp"):
            if p.name[len(name) + 2 : -4].isdigit():  # .<name>.<pid>.tmp
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


@contextlib.contextmanager
def lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` for a training run (released when the process
    ends, however it ends: flock locks belong to the open file)."""
    path = folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderError(f"another training (pid {owner}) is using {folder}; wait for it "
                                 "to finish or choose another --out") from None  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock; the file stays (removing it would race)


def check_writable(folder: Path) -> None:
    """Create ``folder`` and prove it is writable now, not after an epoch of training."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunFolderError(f"cannot write to the run folder {folder}: "
                             f"{e.strerror or e}") from None  # fmt: skip


def existing_run(folder: Path) -> list[str]:
    """The run files already in ``folder``."""
    return [name for name in RUN_FILES if (folder / name).exists()]


def new_segment(start_epoch: int, start_step: int, threads: int) -> dict:
    """The record of the stretch of work that starts now."""
    return {
        "started": now_utc(), "saved": None, "seconds": 0.0,
        "start": {"epoch": start_epoch, "step": start_step},
        "end": {"epoch": start_epoch, "step": start_step},
        "ended": "running", "commit": source_commit(), "host": platform.node(),
        "threads": threads, "peak_rss_mib": None,
    }  # fmt: skip


def close_unfinished(segments: list[dict]) -> None:
    """A segment still marked "running" in a checkpoint was killed after that checkpoint (a
    clean stop always marks it): say so, since the work after its last save was lost."""
    for seg in segments:
        if seg.get("ended") == "running":
            seg["ended"] = "killed (work after the last checkpoint was redone)"
