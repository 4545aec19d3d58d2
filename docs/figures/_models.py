"""Models and text for the figures of docs/learn-*.md: the trained checkpoints, freshly
initialised models of the same shapes, real PTB validation text through the embedding, and the
recurrent layers stepped one step at a time with numlstm.reference (float64)."""

from __future__ import annotations

import shutil

import numpy as np
from _common import DATA_DIR, GRU_RUN, MEDIUM_RUN, RNN_RUN, copy_checkpoint

import numlstm
from numlstm import reference as ref
from numlstm.io.ptb import load_ptb
from numlstm.io.saving import load_model


def ptb():
    return load_ptb(DATA_DIR)


def trained(cell: str):
    """(model, description) of the trained checkpoint: the Medium LSTM run, the GRU or the
    plain-RNN run."""
    run = {"lstm": MEDIUM_RUN, "gru": GRU_RUN, "rnn": RNN_RUN}[cell]
    copy, src = copy_checkpoint(run)
    try:
        model, _, meta = load_model(copy)
    finally:
        shutil.rmtree(copy.parent)
    tr = meta.get("training", {})
    epoch, step = tr.get("epoch"), tr.get("step")
    hist = tr.get("history", [])
    valid = f", valid perplexity {hist[-1]['valid_perplexity']:.1f}" if hist else ""
    desc = (f"{cell.upper()} {model.num_layers}x{model.hidden_size} trained: {src}, "
            f"meta['training']['epoch'] = {epoch} (+{step} steps){valid}")  # fmt: skip
    print(desc)
    return model, desc


def fresh(cell: str, forget_bias: float = 0.0, seed: int = 0):
    """A model at initialisation with the shape and init_scale of the trained one."""
    if cell == "lstm":  # Medium: 2x650, init_scale 0.05
        return numlstm.LanguageModel(10000, 650, 2, cell="lstm", init_scale=0.05,
                                     forget_bias=forget_bias, seed=seed)  # fmt: skip
    return numlstm.LanguageModel(10000, 200, 2, cell=cell, init_scale=0.1, seed=seed)  # Small


def params64(model) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float64) for k, v in model.params.items()}


def windows(ids: np.ndarray, T: int, B: int, stride: int | None = None) -> np.ndarray:
    """(T, B) token ids: B consecutive windows of T words from the start of ``ids``."""
    stride = stride or T
    return np.stack([ids[j * stride : j * stride + T] for j in range(B)], axis=1)


def run_layers(model, p: dict, ids: np.ndarray, num_layers: int | None = None) -> list[dict]:
    """Run every layer over ids (T, B) from a zero state, one step at a time (numlstm.reference,
    no dropout). Returns per layer: {"x": inputs (T, B, H), "caches": the step caches}."""
    x = p["embedding"][ids]  # (E1)
    T, B = ids.shape
    H = model.hidden_size
    out = []
    for layer in range(num_layers or model.num_layers):
        h = np.zeros((B, H))
        c = np.zeros((B, H))
        caches, hs = [], []
        for t in range(T):
            if model.cell == "lstm":
                h, c, cache = ref.lstm_step_forward(
                    x[t], h, c, p[f"l{layer}.Wx"], p[f"l{layer}.Wh"], p[f"l{layer}.b"],
                    model.forget_bias)  # fmt: skip
            elif model.cell == "rnn":
                h, cache = ref.rnn_step_forward(
                    x[t], h, p[f"l{layer}.Wx"], p[f"l{layer}.Wh"], p[f"l{layer}.b"])  # fmt: skip
            else:
                h, cache = ref.gru_step_forward(
                    x[t], h, p[f"l{layer}.Wx"], p[f"l{layer}.Wh"], p[f"l{layer}.bx"],
                    p[f"l{layer}.bh"], reset_after=model.reset_after)  # fmt: skip
            caches.append(cache)
            hs.append(h)
        out.append({"x": x, "caches": caches, "hs": np.stack(hs)})
        x = np.stack(hs)
    return out


def lstm_dh_prev(dh, dc, cache):
    """The part of ref.lstm_step_backward that carries the gradient back in time (dL6-dL2),
    without the weight gradients: (dh_{t-1}, dc_{t-1})."""
    i, f, g, o, c = cache["i"], cache["f"], cache["g"], cache["o"], cache["c"]
    tc = np.tanh(c)
    dc = dc + dh * o * (1 - tc * tc)  # (dL6)
    da = np.concatenate(
        [
            dc * g * i * (1 - i),
            dc * cache["c_prev"] * f * (1 - f),  # (dL5, dL3)
            dc * i * (1 - g * g),
            dh * tc * o * (1 - o),
        ],
        axis=1,
    )  # (dL4, dL3)
    return da @ cache["Wh"].T, dc * f  # (dL2), (dL5)


def gru_dh_prev(dh, cache):
    """The part of ref.gru_step_backward that carries the gradient back in time (dG5-dG2,
    reset_after=True), without the weight gradients: dh_{t-1}."""
    if not cache["reset_after"]:
        return ref.gru_step_backward(dh, cache)[1]
    r, z, n = cache["r"], cache["z"], cache["n"]
    dan = dh * (1 - z) * (1 - n * n)  # (dG5, dG4)
    dah = np.concatenate(
        [
            dan * cache["ahn"] * r * (1 - r),  # (dG4, dG3)
            dh * (cache["h_prev"] - n) * z * (1 - z),
            dan * r,
        ],
        axis=1,
    )  # (dG3)
    return dh * z + dah @ cache["Wh"].T  # (dG5) + (dG2)


def grad_norms(cell: str, caches: list, u: np.ndarray) -> np.ndarray:
    """||dL/dh_t|| per row for t = T, T-1, ..., 0 when L = sum(u * h_T): the loss on the last
    step only, so dhs is zero except dhs[T-1] = u. Backward one step at a time (dL6-dL2,
    dG5-dG2, or numlstm.reference's dR2). Returns (T+1, B): row k is the distance k from the
    loss."""
    dh = u
    dc = np.zeros_like(u)
    norms = [np.linalg.norm(dh, axis=1)]
    for cache in reversed(caches):
        if cell == "lstm":
            dh, dc = lstm_dh_prev(dh, dc, cache)
        elif cell == "rnn":
            dh = ref.rnn_step_backward(dh, cache)[1]  # (dR2): dh_{t-1} = (dh_t * (1 - h_t^2)) Wh^T
        else:
            dh = gru_dh_prev(dh, cache)
        norms.append(np.linalg.norm(dh, axis=1))
    return np.array(norms)


def check_against_reference() -> None:
    """The shortened backward steps above equal numlstm.reference's (asserted, float64)."""
    rng = np.random.default_rng(0)
    B, D, H = 3, 4, 5
    x, h, c = rng.normal(size=(B, D)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    dh, dc = rng.normal(size=(B, H)), rng.normal(size=(B, H))
    _, _, cache = ref.lstm_step_forward(
        x, h, c, rng.normal(size=(D, 4 * H)), rng.normal(size=(H, 4 * H)), rng.normal(size=4 * H)
    )
    want = ref.lstm_step_backward(dh, dc, cache)
    got = lstm_dh_prev(dh, dc, cache)
    assert np.allclose(got[0], want[1]) and np.allclose(got[1], want[2])
    _, cache = ref.gru_step_forward(
        x,
        h,
        rng.normal(size=(D, 3 * H)),
        rng.normal(size=(H, 3 * H)),
        rng.normal(size=3 * H),
        rng.normal(size=3 * H),
    )
    assert np.allclose(gru_dh_prev(dh, cache), ref.gru_step_backward(dh, cache)[1])
