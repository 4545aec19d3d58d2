"""One recurrent layer's forward + backward, numlstm against PyTorch, each in its own process.

Layers (float32, time-major x (T, B, D)):

* ``lstm``   one LSTM direction: ``numlstm.lstm_forward``/``lstm_backward`` against
             ``torch.nn.LSTM(D, H)``;
* ``bilstm`` a bidirectional LSTM (V2): ``numlstm.bidirectional_forward("lstm", ...)`` and
             ``bidirectional_backward`` against ``nn.LSTM(D, H, bidirectional=True)``;
* ``lstmp``  an LSTM with a recurrent projection to P units (P1-P8): ``numlstm.lstmp_forward``
             (``W_proj``) against ``nn.LSTM(D, H, proj_size=P)``.

``--lengths``: ``none`` (no lengths argument), ``full`` (lengths given, every row T steps) or
``mixed`` (seeded lengths drawn uniformly from 1..T). With ``mixed`` PyTorch runs the layer on
a ``PackedSequence`` (``pack_padded_sequence(enforce_sorted=False)``, then
``pad_packed_sequence``), the way a PyTorch user feeds padded batches; otherwise on the padded
tensor. Several values (``--lengths none,full,mixed``) are timed in one process, alternating
within each repeat, so that their ratios (e.g. "full lengths within 10 % of none") are
measured side by side.

Every side is its own process (this file again, ``--worker numlstm`` or ``--worker torch``),
started with the thread variables removed from the environment so that each library runs with
its own defaults; the PyTorch process never imports numlstm (whose import sets
OMP_WAIT_POLICY=PASSIVE). The two sides alternate ``--rounds`` times. Reported: median ms per
forward + backward call, words/s (T * B / s) and torch's time over numlstm's. Timings are
printed, never asserted; the machine is shared and noisy, so read the ratios.

    python benchmarks/bench_layers_torch.py --layer bilstm --shape small
    python benchmarks/bench_layers_torch.py --layer lstmp --shape medium --proj 325
    python benchmarks/bench_layers_torch.py --layer lstm --lengths none,full,mixed --no-torch
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

SHAPES = {"small": (20, 20, 200, 200), "medium": (35, 20, 650, 650)}  # T, B, D, H
LAYERS = ("lstm", "bilstm", "lstmp")
LENGTHS = ("none", "full", "mixed")


def thread_free_env() -> dict[str, str]:
    """This environment without the variables that set threads or OpenMP behaviour (the rule
    of bench_train.py / bench_torch.py): each library then picks its own defaults."""
    return {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(("OMP_", "KMP_", "GOMP_")) or "THREAD" in k or k == "MKL_DYNAMIC")
    }


def inputs(args: argparse.Namespace, lengths_kind: str):
    """The same float32 arrays on both sides (seeded NumPy): x, dhs, lengths or None, and the
    weights in numlstm's layout (gate order i, f, g, o)."""
    T, B, D, H, P = args.T, args.B, args.D, args.H, args.P
    rng = np.random.default_rng(0)

    def u(*shape: int) -> np.ndarray:
        return rng.uniform(-0.1, 0.1, shape).astype(np.float32)

    out_width = {"lstm": H, "bilstm": 2 * H, "lstmp": P}[args.layer]
    x, dhs = u(T, B, D), u(T, B, out_width)
    rec = P if args.layer == "lstmp" else H
    dirs = 2 if args.layer == "bilstm" else 1
    weights = [(u(D, 4 * H), u(rec, 4 * H), u(4 * H)) for _ in range(dirs)]
    W_proj = u(H, P) if args.layer == "lstmp" else None
    lengths = None
    if lengths_kind == "full":
        lengths = np.full(B, T, np.int64)
    elif lengths_kind == "mixed":
        lengths = np.random.default_rng(1).integers(1, T + 1, B).astype(np.int64)
    return x, dhs, lengths, weights, W_proj


def numlstm_call(args: argparse.Namespace, lengths_kind: str):
    """A closure running numlstm's forward + backward once."""
    import numlstm

    x, dhs, lengths, weights, W_proj = inputs(args, lengths_kind)
    B, H, P = args.B, args.H, args.P
    z = np.zeros((B, H), np.float32)
    kw = {} if lengths_kind == "none" else {"lengths": lengths}
    if args.layer == "lstm":
        Wx, Wh, b = weights[0]

        def call():
            hs, _, _, cache = numlstm.lstm_forward(x, z, z, Wx, Wh, b, **kw)
            return hs, numlstm.lstm_backward(dhs, z, z, cache)[0]

    elif args.layer == "bilstm":
        fw, bw = [(z, z, *w) for w in weights]

        def call():
            hs, _, _, cache = numlstm.bidirectional_forward("lstm", x, fw, bw, **kw)
            return hs, numlstm.bidirectional_backward(dhs, cache)[0]

    else:
        Wx, Wh, b = weights[0]
        zp = np.zeros((B, P), np.float32)

        def call():
            hs, _, _, cache = numlstm.lstmp_forward(x, zp, z, Wx, Wh, b, W_proj=W_proj, **kw)
            return hs, numlstm.lstmp_backward(dhs, zp, z, cache)[0]

    return call


def torch_call(args: argparse.Namespace, lengths_kind: str):
    """A closure running PyTorch's nn.LSTM forward + backward once, on the same numbers."""
    import torch

    x_np, dhs_np, lengths, weights, W_proj = inputs(args, lengths_kind)
    D, H, P = args.D, args.H, args.P
    proj = P if args.layer == "lstmp" else 0
    lstm = torch.nn.LSTM(D, H, bidirectional=args.layer == "bilstm", proj_size=proj)
    with torch.no_grad():  # numlstm's weights (x W), torch's (W x): transposed; one bias
        for k, (Wx, Wh, b) in enumerate(weights):
            sfx = "_reverse" if k else ""
            getattr(lstm, f"weight_ih_l0{sfx}").copy_(torch.from_numpy(Wx.T.copy()))
            getattr(lstm, f"weight_hh_l0{sfx}").copy_(torch.from_numpy(Wh.T.copy()))
            getattr(lstm, f"bias_ih_l0{sfx}").copy_(torch.from_numpy(b))
            getattr(lstm, f"bias_hh_l0{sfx}").zero_()
        if proj:
            lstm.weight_hr_l0.copy_(torch.from_numpy(W_proj.T.copy()))
    x = torch.from_numpy(x_np).requires_grad_(True)
    dhs = torch.from_numpy(dhs_np)
    packed = lengths_kind == "mixed"
    cpu_lengths = torch.from_numpy(lengths) if packed else None
    pack, unpack = torch.nn.utils.rnn.pack_padded_sequence, torch.nn.utils.rnn.pad_packed_sequence

    def call():
        lstm.zero_grad(set_to_none=True)
        x.grad = None
        if packed:
            out, _ = lstm(pack(x, cpu_lengths, enforce_sorted=False))
            out, _ = unpack(out, total_length=args.T)
        else:
            out, _ = lstm(x)
        out.backward(dhs)
        return out.detach().numpy(), x.grad.numpy()

    return call


def worker(args: argparse.Namespace) -> None:
    """Time each lengths kind's call (alternating within every repeat); print one JSON line."""
    kinds = args.lengths.split(",")
    make = numlstm_call if args.worker == "numlstm" else torch_call
    calls = {k: make(args, k) for k in kinds}
    # The outputs and input gradients, compared between the sides by the parent: both time
    # the same computation.
    # Summed in float64 so that the float32 rounding of the sum cannot hide a difference.
    check = {k: [float(np.abs(a).sum(dtype=np.float64)) for a in call()]
             for k, call in calls.items()}  # fmt: skip
    for call in calls.values():  # warm-up: Numba's cache, BLAS's and torch's first calls
        for _ in range(3):
            call()
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for k, call in calls.items():
            start = time.perf_counter()
            for _ in range(args.calls):
                call()
            times[k].append((time.perf_counter() - start) / args.calls)
    info = {"numlstm_imported": "numlstm" in sys.modules}
    if args.worker == "torch":
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    print(json.dumps({"times": times, "info": info, "check": check}))


def run_side(side: str, argv: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, *argv]
    proc = subprocess.run(cmd, env=thread_free_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{side} worker failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--layer", choices=LAYERS, default="bilstm")
    p.add_argument("--shape", choices=tuple(SHAPES), default="small")
    p.add_argument("--T", type=int, help="steps (overrides --shape)")
    p.add_argument("--B", type=int, help="batch rows (overrides --shape)")
    p.add_argument("--D", type=int, help="input width (overrides --shape)")
    p.add_argument("--H", type=int, help="hidden units per direction (overrides --shape)")
    p.add_argument("--proj", dest="P", type=int, help="lstmp: projection width P (default H/2)")
    p.add_argument("--lengths", default="none", help="comma list of none, full, mixed")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of the two sides")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per round (median)")
    p.add_argument("--calls", type=int, default=10, help="calls per timed repeat")
    p.add_argument("--no-torch", action="store_true", help="time numlstm only")
    p.add_argument("--worker", choices=("numlstm", "torch"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    T, B, D, H = SHAPES[args.shape]
    args.T, args.B, args.D, args.H = args.T or T, args.B or B, args.D or D, args.H or H
    args.P = args.P or max(args.H // 2, 1)
    kinds = args.lengths.split(",")
    if not kinds or any(k not in LENGTHS for k in kinds):
        p.error(f"--lengths must be a comma list of {', '.join(LENGTHS)}, got {args.lengths!r}")
    for name in ("T", "B", "D", "H", "P", "rounds", "repeats", "calls"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.worker:
        return worker(args)

    forward = ["--layer", args.layer, "--T", args.T, "--B", args.B, "--D", args.D, "--H", args.H,
               "--proj", args.P, "--lengths", args.lengths, "--repeats", args.repeats,
               "--calls", args.calls]  # fmt: skip
    forward = list(map(str, forward))
    sides = ["numlstm"]
    if not args.no_torch:
        if importlib.util.find_spec("torch") is None:
            print("torch is not installed: timing numlstm only")
        else:
            sides.append("torch")
    times: dict[str, dict[str, list[float]]] = {s: {k: [] for k in kinds} for s in sides}
    infos, checks = {}, {}
    for _ in range(args.rounds):
        for side in sides:  # alternate: both sides see the same machine, round by round
            result = run_side(side, forward)
            infos[side], checks[side] = result["info"], result["check"]
            for k in kinds:
                times[side][k] += result["times"][k]
    if infos.get("torch", {}).get("numlstm_imported"):
        raise SystemExit("the torch worker imported numlstm: the comparison would be unfair")
    if "torch" in checks:
        for k in kinds:  # sum |hs| and sum |dx|: the same numbers up to float32 rounding
            ours, theirs = np.array(checks["numlstm"][k]), np.array(checks["torch"][k])
            worst = float(np.max(np.abs(ours - theirs) / np.abs(theirs)))
            if worst > 1e-3:
                raise SystemExit(f"lengths {k}: numlstm and torch disagree (sum |hs|, sum |dx|"
                                 f" {ours} vs {theirs}): not the same computation")  # fmt: skip
            print(f"lengths {k}: sum |hs| and sum |dx| agree to {worst:.1e} (relative)")
    shape = f"T={args.T} B={args.B} D={args.D} H={args.H}"
    if args.layer == "lstmp":
        shape += f" P={args.P}"
    print(f"{args.layer}, {shape}, float32, forward + backward; median of "
          f"{args.rounds} x {args.repeats} repeats of {args.calls} calls")  # fmt: skip
    if "torch" in infos:
        print(f"torch {infos['torch']['torch']}, {infos['torch']['torch_threads']} threads")
    words = args.T * args.B
    print(f"{'lengths':8s} {'side':8s} {'ms/call':>9s} {'words/s':>10s} {'vs none':>8s}")
    med = {s: {k: statistics.median(times[s][k]) for k in kinds} for s in sides}
    for k in kinds:
        for side in sides:
            t = med[side][k]
            rel = f"{t / med[side]['none']:8.2f}" if "none" in kinds else f"{'':8s}"
            print(f"{k:8s} {side:8s} {t * 1e3:9.2f} {words / t:10,.0f} {rel}")
        if "torch" in sides:
            print(f"{k:8s} torch time / numlstm time: {med['torch'][k] / med['numlstm'][k]:.2f}")


if __name__ == "__main__":
    main()
