"""``grad_norm.csv``: the global gradient norm (O1) of every training step, before clipping.

One row per training step of the whole run, ``epoch,step,norm`` (1-based epoch, 1-based step
within the epoch, the norm as Python's ``repr`` of the float64, which reads back exactly).

Resume semantics. The file is rewritten whole (atomically) by every checkpoint *before* the
checkpoint itself, and holds exactly the steps that checkpoint has trained: the completed
epochs' rows, then the current epoch's up to the checkpoint's step. The checkpoint keeps the
current epoch's norms as the array ``train.grad_norms`` and, in its metadata, where recording
began. A resume takes the completed epochs' rows from the file and the current epoch's from
the checkpoint, and writes the file again at once, so:

* a kill between the file's write and the checkpoint's leaves rows past the checkpoint in the
  file; the resume drops them (they are trained again, with the same numbers), never
  duplicating a row;
* a kill between two checkpoints loses no row the checkpoint counts, since the file was
  written first;
* a checkpoint from before numlstm recorded the norms resumes with recording starting at its
  position; the earlier steps are absent, and ``summary.json`` says so in ``grad_norm.notes``.

The whole run's norms stay in memory (55 epochs x 2,323 steps of the Large config: 128k floats,
1 MB), so the file and the per-epoch summaries never need to be read back while training.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

GRAD_NORM_CSV = "grad_norm.csv"
GRAD_NORM_PNG = "grad_norm.png"
ARRAY = "train.grad_norms"  # the current epoch's norms in the checkpoint
HEADER = "epoch,step,norm\n"


class GradNormLog:
    """The norms recorded so far, in step order.

    ``start``: the position (0-based epoch, steps done in it) where recording began; (0, 0)
    for a run that recorded from its first step, later for a run resumed from a checkpoint
    written before the norms were recorded.
    """

    def __init__(self, start: tuple[int, int] = (0, 0), notes: list[str] | None = None) -> None:
        self.start = (int(start[0]), int(start[1]))
        self.notes: list[str] = list(notes or [])
        self.epochs: list[int] = []
        self.steps: list[int] = []
        self.norms: list[float] = []
        self._lines: list[str] = []  # the csv rows, formatted once

    def __len__(self) -> int:
        return len(self.norms)

    def append(self, epoch: int, step: int, norm: float) -> None:
        """Record the norm of ``step`` (1-based) of ``epoch`` (1-based)."""
        norm = float(norm)  # a numpy scalar's repr would be "np.float64(...)"
        self.epochs.append(epoch)
        self.steps.append(step)
        self.norms.append(norm)
        self._lines.append(f"{epoch},{step},{norm!r}\n")

    def current(self, epoch: int) -> np.ndarray:
        """The norms recorded in ``epoch`` (1-based), as float64 (exact: they are float64)."""
        k = len(self.epochs)
        while k > 0 and self.epochs[k - 1] == epoch:
            k -= 1
        return np.array(self.norms[k:], dtype=np.float64)

    def csv_text(self) -> str:
        return HEADER + "".join(self._lines)

    def meta(self) -> dict:
        """What the checkpoint's metadata keeps besides the array."""
        return {"start": {"epoch": self.start[0], "step": self.start[1]}, "notes": self.notes}

    def summary(self, max_grad_norm: float, steps_per_epoch: int) -> dict:
        """``summary.json``'s ``grad_norm``: per epoch, the number of steps recorded, the mean,
        median and max norm and the fraction of steps clipped (norm > max_grad_norm, O2)."""
        epochs = []
        norms, index = np.array(self.norms), np.array(self.epochs)
        for e in sorted(set(self.epochs)):
            n = norms[index == e]
            epochs.append({
                "epoch": e, "steps": int(n.size), "mean": float(n.mean()),
                "median": float(np.median(n)), "max": float(n.max()),
                "clipped_fraction": float(np.mean(n > max_grad_norm)),
            })  # fmt: skip
        return {"file": GRAD_NORM_CSV, "max_grad_norm": max_grad_norm,
                "steps_per_epoch": steps_per_epoch,
                "recorded_from": {"epoch": self.start[0] + 1, "step": self.start[1] + 1},
                "epochs": epochs, "notes": self.notes}  # fmt: skip


def read_rows(path: Path) -> list[tuple[int, int, float]]:
    """The rows of a ``grad_norm.csv`` (ValueError naming the line if one is not valid)."""
    rows = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ["epoch", "step", "norm"]:
            raise ValueError(f"{path}: the header must be epoch,step,norm, got {header}")
        for k, row in enumerate(reader, start=2):
            try:
                epoch, step, norm = int(row[0]), int(row[1]), float(row[2])
            except (ValueError, IndexError):
                raise ValueError(f"{path}, line {k}: not epoch,step,norm: {row}") from None
            rows.append((epoch, step, norm))
    return rows


def restore(path: Path, saved: dict, current: np.ndarray | None, n_batches: int,
            log: Callable[[str], None]) -> GradNormLog:  # fmt: skip
    """The log of a resumed run: the completed epochs' rows from ``path``, the current epoch's
    from the checkpoint's array ``current``.

    ``saved`` is the checkpoint's training metadata (checked by train._check_resume). A
    checkpoint without ``grad_norm`` predates the recording: recording starts at its position.
    A file that does not hold the rows the checkpoint counts (deleted, edited) is not trusted:
    its rows are dropped, a warning is logged and a note kept, and training goes on.
    """
    epoch, step = saved["epoch"], saved["step"]
    meta = saved.get("grad_norm")
    if not isinstance(meta, dict):
        where = f"epoch {epoch + 1}, step {step + 1}"
        note = (f"the norms before {where} are absent: that part of the run was trained by a "
                "numlstm that did not record them")  # fmt: skip
        log(f"note: {note}")
        return GradNormLog((epoch, step), [note])
    start = meta.get("start") if isinstance(meta.get("start"), dict) else {}
    first = (start.get("epoch"), start.get("step"))
    notes = meta.get("notes") if isinstance(meta.get("notes"), list) else []
    if not (all(isinstance(v, int) and not isinstance(v, bool) for v in first)
            and (0, 0) <= first <= (epoch, step) and first[1] < n_batches):  # fmt: skip
        # A damaged or edited record: trust nothing before this position, but keep training.
        note = (f"the norms before epoch {epoch + 1}, step {step + 1} are absent: the "
                f"checkpoint's record of where they start was damaged ({start!r})")  # fmt: skip
        log(f"warning: {note}")
        return GradNormLog((epoch, step), [*map(str, notes), note])
    grad_log = GradNormLog(first, [str(n) for n in notes])

    expected = [(e + 1, s + 1) for e in range(first[0], epoch)
                for s in range(first[1] if e == first[0] else 0, n_batches)]  # fmt: skip
    problem = None
    try:
        rows = [r for r in read_rows(path) if r[0] <= epoch] if expected else []
    except FileNotFoundError:
        rows, problem = [], f"{path.name} is missing"
    except ValueError as e:
        rows, problem = [], str(e)
    if problem is None and [(e, s) for e, s, _ in rows] != expected:
        problem = (f"{path.name} does not hold the {len(expected)} rows of epochs "
                   f"{first[0] + 1}-{epoch}")  # fmt: skip
    if problem is None and not all(math.isfinite(n) for _, _, n in rows):
        problem = f"{path.name} holds non-finite norms"
    if problem is not None and expected:
        note = (f"the norms of epochs {first[0] + 1}-{epoch} are absent: at the resume from "
                f"epoch {epoch + 1}, step {step} {problem}")  # fmt: skip
        log(f"warning: {note}")
        grad_log.notes.append(note)
        rows = []
    for e, s, n in rows:
        grad_log.append(e, s, n)

    first_step = first[1] if first[0] == epoch else 0
    norms = np.zeros(0) if current is None or step == 0 else np.asarray(current).ravel()
    valid = norms.dtype.kind == "f" and bool(np.all(np.isfinite(norms)))
    if step > 0 and (not valid or norms.size != step - first_step):
        note = (f"the norms of steps {first_step + 1}-{step} of epoch {epoch + 1} are absent: "
                f"the checkpoint held {norms.size} valid ones")  # fmt: skip
        log(f"warning: {note}")
        grad_log.notes.append(note)
        norms = np.zeros(0)
    for k, n in enumerate(norms.astype(np.float64)):
        grad_log.append(epoch + 1, step - norms.size + k + 1, float(n))
    return grad_log


def running_median(values: np.ndarray, window: int) -> np.ndarray:
    """The median of each centred ``window`` of ``values`` (shorter at the ends)."""
    values = np.asarray(values, dtype=np.float64)
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if values.size == 0:
        return values
    half = window // 2
    padded = np.pad(values, half, mode="constant", constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    # In blocks: all windows at once would copy values.size x window floats (GBs for Large).
    block = max(1, 2**22 // windows.shape[1])
    return np.concatenate([np.nanmedian(windows[k : k + block], axis=1)
                           for k in range(0, len(windows), block)])  # fmt: skip
