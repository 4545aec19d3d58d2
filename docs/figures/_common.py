"""Shared helpers of the figure scripts in docs/figures/ (run from the repository root)."""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
IMG = ROOT / "docs" / "img"
DATA_DIR = os.environ.get("NUMLSTM_DATA_DIR", str(ROOT.parent / "shared" / "data" / "ptb"))
MEDIUM_RUN = Path(os.environ.get("NUMLSTM_MEDIUM_RUN", "/root/numlstm-medium/run"))
GRU_RUN = Path(os.environ.get("NUMLSTM_GRU_RUN", "/tmp/learn-gru"))
RNN_RUN = Path(os.environ.get("NUMLSTM_RNN_RUN", "/tmp/learn-rnn"))


def machine() -> str:
    """One line: date, CPU and core count, for the caption of a figure."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    return f"{day}, {cpu}, {os.cpu_count()} cores"


def save(fig, name: str) -> Path:
    """Write docs/img/NAME.png and print where, with the command that made it."""
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path.relative_to(ROOT)}  (python {' '.join(sys.argv)}; {machine()})")
    return path


def copy_checkpoint(run: Path) -> tuple[Path, Path]:
    """Copy a run's checkpoint.npz (rewritten atomically while it trains) to a temporary file
    once, and return (copy, original)."""
    src = run / "checkpoint.npz"
    if not src.exists():
        raise SystemExit(f"no checkpoint at {src}")
    tmp = Path(tempfile.mkdtemp(prefix="numlstm-fig-")) / "checkpoint.npz"
    shutil.copyfile(src, tmp)
    return tmp, src
