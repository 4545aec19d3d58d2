"""The stacked recurrent language model of Zaremba et al. (2014) / the TensorFlow PTB tutorial.

    ids (B, T) -> embedding (E1) -> dropout (D1)
               -> L x [LSTM (L1-L6), GRU (G1-G5) or plain RNN (R1-R2)] each followed by
                  dropout (D1)
               -> linear + softmax + cross-entropy (S1-S3)

Options (off by default): the LSTMP cell of docs/lstmp.md (P1-P8: peepholes, cell clip,
projection to P and its clip), an embedding width E other than H, and tied input and output
embeddings (T1, dT1 in docs/layers.md section 4.3).

With a float ``keep_prob`` (the tutorial's dropout) dropout is applied only to the
non-recurrent connections (between layers, never on h -> h). A ``numlstm.Dropout`` adds the
DropoutWrapper's sites (``dropout.py``, docs/dropout.md): each layer's input (D2) and output
(D3), h_{t-1} inside an LSTM's recurrence (D4; such a layer runs ``lstmp.py``'s loop), and
variational masks (D5).
The state (the final h, c of each layer) is returned by every call so that the caller can
pass it to the next batch: truncated backpropagation through time carries the *state* across
batches but not the gradient. See ``docs/layers.md`` (section "Stacked language model").
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import _checks, kernels, sequences
from . import dropout as _dropout
from .dropout import Dropout
from .fast.blas import matmul_into
from .fast.sparse import IndexedRows
from .fast.workspace import Workspace
from .gru import gru_backward_unchecked, gru_forward_unchecked
from .layers import (
    LOCAL,
    SoftmaxGrad,
    dropout_backward,
    dropout_mask,
    softmax_xent_forward_backward_unchecked,
    softmax_xent_loss_unchecked,
)
from .lstm import lstm_backward_unchecked, lstm_forward_unchecked
from .lstmp import LSTMPCache, _bound, lstmp_backward_unchecked, lstmp_forward_unchecked
from .rnn import rnn_backward_unchecked, rnn_forward_unchecked

State = list[tuple[np.ndarray, ...]]
CELLS = ("lstm", "gru", "rnn")
# Per cell: the blocks of H columns in Wx, Wh (i, f, g, o of L1; r, z, n of G1-G2; the one
# pre-activation of R1) and the names of the biases ("b" of L1/R1; "bx", "bh" of G1-G2).
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
BIASES = {"lstm": ("b",), "gru": ("bx", "bh"), "rnn": ("b",)}
KeepProb = float | Dropout  # what every keep_prob argument accepts
Masks = Sequence[np.ndarray | None] | dict[str, np.ndarray | None]
_NO_DROPOUT = Dropout()


@dataclass
class _Pass:
    """Everything the backward pass needs from one forward pass."""

    ids: np.ndarray  # (T, B) time-major token ids
    masks: dict = field(default_factory=dict)  # dropout masks by site (dropout.py); None: none
    caches: list = field(default_factory=list)  # one LSTM/GRU/RNN cache per layer


@dataclass
class RowsResult:
    """What ``LanguageModel.rows_loss_and_grads`` returns for some rows of a batch.

    The arrays of ``grads`` and ``d_embedded`` are buffers of the model that ran the rows,
    overwritten by its next training call. The embedding's gradient is left to
    ``embedding_grad(ids, d_embedded)``, so that a caller holding several blocks of rows can
    build it from all their rows at once.
    """

    loss: float  # sum of these rows' -log p, divided by the whole batch's size
    # every parameter's gradient except "embedding"; with tied embeddings also "softmax_w",
    # the gradient of the softmax's use of embedding.T, which embedding_grad adds (dT1)
    grads: dict[str, np.ndarray]
    d_embedded: np.ndarray  # (T*b, E) gradient on the embedded inputs (after dD1), time-major
    ids: np.ndarray  # (T*b,) the token ids of those rows of d_embedded
    state: State  # the final state of these rows


class LanguageModel:
    """Embedding -> stacked LSTM/GRU/plain RNN -> softmax word model.

    Parameters
    ----------
    vocab_size : V. hidden_size : H (also the embedding size, as in the tutorial).
    num_layers : L. cell : "lstm", "gru" or "rnn" (the plain tanh layer of docs/rnn.md,
        R1-R2: TensorFlow's BasicRNNCell, PyTorch's nn.RNN).
    init_scale : weights are drawn uniformly from [-init_scale, init_scale]; the recurrent
        layers' biases start at zero (TensorFlow BasicLSTMCell / GRUCell defaults).
    forget_bias : added to the LSTM forget gate (the PTB configs use 0.0).
    reset_after : GRU form (True: cuDNN, False: Cho et al. 2014), see ``gru_forward``.
    dtype : np.float32 for training, np.float64 for gradient checks.
    seed : seed of the initialisation.
    peepholes, cell_clip, proj_size, proj_clip : the LSTMP options of docs/lstmp.md (P2, P6;
        P5; P8), LSTM only. proj_size P: each layer's output h (and so the next layer's input,
        the recurrent state h and the softmax's input) is P wide; the cell stays H wide.
    tie_embeddings : the softmax uses embedding.T as its weights (T1), no "softmax_w"; needs
        the top layer's output width (P, or H) == E.
    embedding_size : E, the width of the embedding (default H); layer 0's Wx is (E, 4H).

    Notes
    -----
    ``params`` maps names to arrays: "embedding" (V, E); per layer l, "l{l}.Wx", "l{l}.Wh" and
    "l{l}.b" (LSTM, RNN) or "l{l}.bx", "l{l}.bh" (GRU), plus "l{l}.peepholes" (3, H) and
    "l{l}.W_proj" (H, P) when those options are on; "softmax_w" (P, V) unless tied,
    "softmax_b" (V,).
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        cell: str = "lstm",
        init_scale: float = 0.1,
        forget_bias: float = 0.0,
        reset_after: bool = True,
        dtype: type | np.dtype = np.float32,
        seed: int | None = None,
        peepholes: bool = False,
        cell_clip: float | None = None,
        proj_size: int | None = None,
        proj_clip: float | None = None,
        tie_embeddings: bool = False,
        embedding_size: int | None = None,
    ) -> None:
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        for name, value in (("vocab_size", vocab_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):  # fmt: skip
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        dtype = np.dtype(dtype)
        if dtype not in _checks.FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        reset_after = _checks.flag("reset_after", reset_after)
        for name, value in (("forget_bias", forget_bias), ("init_scale", init_scale)):
            if not isinstance(value, int | float | np.floating) or not np.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if init_scale < 0:
            raise ValueError(f"init_scale must be >= 0, got {init_scale}")
        self.cell, self.forget_bias, self.reset_after = cell, float(forget_bias), reset_after
        self.dtype = dtype
        self.init_scale = float(init_scale)
        self._set_options(peepholes, cell_clip, proj_size, proj_clip, tie_embeddings,
                          embedding_size)  # fmt: skip

        rng = np.random.default_rng(seed)
        V, H, G = vocab_size, hidden_size, GATES[cell]
        E, P = self.embedding_size, self.output_size  # both H by default

        def uniform(*shape: int) -> np.ndarray:
            return rng.uniform(-init_scale, init_scale, shape).astype(dtype)

        # Draw order: embedding, per layer Wx, Wh (then peepholes, W_proj when on), softmax_w,
        # softmax_b; with every option off it is the original order, so a seed gives the
        # same parameters as before the options existed.
        p: dict[str, np.ndarray] = {"embedding": uniform(V, E)}
        for layer in range(num_layers):
            p[f"l{layer}.Wx"] = uniform(E if layer == 0 else P, G * H)
            p[f"l{layer}.Wh"] = uniform(P, G * H)
            for bias in BIASES[cell]:
                p[f"l{layer}.{bias}"] = np.zeros(G * H, dtype)
            # Uniform like every other weight: the tutorial's variable-scope initializer,
            # which TensorFlow's LSTMCell also applies to w_*_diag and the projection kernel.
            if self.peepholes:
                p[f"l{layer}.peepholes"] = uniform(3, H)
            if self.proj_size is not None:
                p[f"l{layer}.W_proj"] = uniform(H, P)
        if not self.tie_embeddings:
            p["softmax_w"] = uniform(P, V)
        p["softmax_b"] = uniform(V)
        self.params = p
        # Reused buffers (see fast/workspace.py): one set for training steps, one for evaluation,
        # so that alternating shapes (B=20 training, B=1 test) never reallocate.
        self._ws_train = Workspace()
        self._ws_eval = Workspace()

    def _set_options(self, peepholes, cell_clip, proj_size, proj_clip, tie, embedding_size):
        """Check and store the LSTMP and embedding options (before any parameter is drawn)."""
        self.peepholes = _checks.flag("peepholes", peepholes)
        self.tie_embeddings = _checks.flag("tie_embeddings", tie)
        self.cell_clip = _bound("cell_clip", cell_clip)  # the layer's own checks: > 0, finite
        self.proj_clip = _bound("proj_clip", proj_clip)
        for name, value in (("proj_size", proj_size), ("embedding_size", embedding_size)):
            if value is not None and (
                isinstance(value, bool | np.bool_)
                or not isinstance(value, int | np.integer)
                or value < 1
            ):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        self.proj_size = None if proj_size is None else int(proj_size)
        self.embedding_size = self.hidden_size if embedding_size is None else int(embedding_size)
        if self.proj_clip is not None and self.proj_size is None:
            raise ValueError("proj_clip clips the projection: it needs proj_size (got None)")
        # Any LSTMP option sends every layer through lstmp.py (P1-P8); without one, the model
        # keeps the plain LSTM/GRU layers and their fast paths.
        self._lstmp = self.peepholes or self.cell_clip is not None or self.proj_size is not None
        if self._lstmp and self.cell != "lstm":
            options = (("peepholes", self.peepholes), ("cell_clip", self.cell_clip),
                       ("proj_size", self.proj_size))  # fmt: skip
            on = [n for n, v in options if v not in (False, None)]
            raise ValueError(f"{', '.join(on)}: LSTMP options need cell='lstm', got {self.cell!r}")
        self.output_size = self.hidden_size if self.proj_size is None else self.proj_size
        if self.tie_embeddings and self.output_size != self.embedding_size:
            raise ValueError(
                "tie_embeddings needs the top layer's output width (proj_size P, or hidden_size "
                f"H) == embedding_size E, got {self.output_size} != {self.embedding_size}"
            )

    # ---------------------------------------------------------------------------------------
    def config(self) -> dict:
        """The constructor arguments that define the architecture (for checkpoints)."""
        return {
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "num_layers": self.num_layers, "cell": self.cell, "forget_bias": self.forget_bias,
            "reset_after": self.reset_after, "dtype": self.dtype.name,
            "init_scale": self.init_scale, "peepholes": self.peepholes,
            "cell_clip": self.cell_clip, "proj_size": self.proj_size,
            "proj_clip": self.proj_clip, "tie_embeddings": self.tie_embeddings,
            # None when E = H, so that a hidden_size alone still says the embedding's width
            "embedding_size": None if self.embedding_size == self.hidden_size
            else self.embedding_size,
        }  # fmt: skip

    def softmax_weight(self) -> np.ndarray:
        """The softmax's W (P, V) of S1: ``params["softmax_w"]``, or with tied embeddings
        embedding.T (T1), a transposed view (the GEMMs read it in place, no copy)."""
        p = self.params
        return p["embedding"].T if self.tie_embeddings else p["softmax_w"]  # (T1)

    def _state_shapes(self, B: int) -> tuple[tuple[int, int], ...]:
        """The shapes of one layer's state arrays: (h,) or (h, c); h is P wide, c H wide."""
        if self.cell != "lstm":
            return ((B, self.hidden_size),)
        return (B, self.output_size), (B, self.hidden_size)

    def init_state(self, batch_size: int) -> State:
        """Zero state: per layer (h, c) for LSTM or (h,) for GRU and RNN; h (batch_size, P) (P = H
        without a projection), c (batch_size, H)."""
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        shapes = self._state_shapes(batch_size)
        return [tuple(np.zeros(s, self.dtype) for s in shapes) for _ in range(self.num_layers)]

    # ---------------------------------------------------------------------------------------
    def _check_inputs(self, x, y, state):
        x = _checks.token_ids("x", x, self.vocab_size, ndim=2)
        if y is not None:
            y = _checks.token_ids("y", y, self.vocab_size, ndim=2)
            if y.shape != x.shape:
                raise ValueError(f"y must have the shape of x (B, T) = {x.shape}, got {y.shape}")
        B = x.shape[0]
        if not isinstance(state, Sequence) or len(state) != self.num_layers:
            raise ValueError(f"state must be a list of {self.num_layers} per-layer tuples "
                             "(use model.init_state(batch_size))")  # fmt: skip
        n = 2 if self.cell == "lstm" else 1
        shapes = self._state_shapes(B)
        for layer, s in enumerate(state):
            if len(s) != n:
                raise ValueError(f"state[{layer}] must hold {n} arrays for a {self.cell} layer")
            for a, shape, sym in zip(s, shapes, ("(B, P)", "(B, H)"), strict=False):
                if not isinstance(a, np.ndarray) or a.shape != shape:
                    sym = "(B, H)" if shape[1] == self.hidden_size == self.output_size else sym
                    raise ValueError(
                        f"state[{layer}] arrays must have shape {sym} = {shape}"
                        f" to match x of batch size {B}, got {getattr(a, 'shape', None)}"
                    )
                if a.dtype != self.dtype:
                    raise TypeError(f"state[{layer}] must be {self.dtype}, got {a.dtype}")
                if not np.isfinite(a).all():  # a NaN state would silently poison every loss
                    raise ValueError(f"state[{layer}] contains NaN or inf")
        return x, y

    def _site_widths(self) -> dict[str, int]:
        """The width of each dropout site (D1-D4): the embedding's E; layer l's input E (l = 0)
        or P; its state h_{t-1} and its output P (all H by default)."""
        E, P = self.embedding_size, self.output_size
        widths = {"embedding": E}
        for layer in range(self.num_layers):
            widths[f"l{layer}.input"] = E if layer == 0 else P
            widths[f"l{layer}.state"] = widths[f"l{layer}.output"] = P
        return widths

    def _check_masks(self, masks, B: int, T: int) -> dict | None:
        """Fixed dropout masks (list or dict form, ``dropout.normalize``) checked against the
        batch: each of a shape D5 allows, as wide as its site, and of the model's dtype.
        Returns {site: mask}."""
        if masks is None:
            return None
        fixed = _dropout.normalize(masks, self.num_layers)
        widths = self._site_widths()
        for site, (name, m) in fixed.items():
            _dropout.check_mask(name, m, T, B, widths[site], self.dtype)
        return {site: m for site, (_, m) in fixed.items()}

    def _forward(self, x, state, dropout, rng, masks, ws, lengths=None):
        """Embedding and recurrent layers. Returns (top hidden states (T, B, H), state, pass).

        ``dropout`` a checked ``Dropout``; ``masks`` the checked fixed masks {site: mask}, or
        None to draw them from ``rng`` (all at once, in the order ``draw_masks`` draws them).
        ``lengths``: prepared (B,) int64 or None; each layer runs the masked update M1-M3, so
        the top states are zero past each row's end and the state is the one after its end."""
        p = self.params
        ids = np.ascontiguousarray(x.T)  # (T, B): the layers are time-major
        T, B = ids.shape
        if masks is None:
            masks = {}
            if dropout.active:
                masks = _dropout.draw(self.num_layers, T, B, self._site_widths(), dropout, rng,
                                      self.dtype)  # fmt: skip
        fw = _Pass(ids, masks)

        def drop(a, site):  # (D1) embedding, (D2) input, (D3) output: a ⊙ m / p, or a itself
            m = masks.get(site)
            return a if m is None else a * m  # D5: a (B, H) or (1, H) mask broadcasts

        inp = drop(np.take(p["embedding"], ids, axis=0), "embedding")  # (E1) (T, B, H), (D1)
        new_state: State = []
        for layer in range(self.num_layers):
            inp = drop(inp, f"l{layer}.input")  # (D2)
            state_mask = masks.get(f"l{layer}.state")
            if self._lstmp or (self.cell == "lstm" and state_mask is not None):
                # P1-P8 (the model's LSTMP options), and (D4) state dropout inside the
                # recurrence: lstmp.py's step loop
                h0, c0 = state[layer]
                hs, hT, cT, cache = lstmp_forward_unchecked(
                    inp, h0, c0, p[f"l{layer}.Wx"], p[f"l{layer}.Wh"], p[f"l{layer}.b"],
                    self.forget_bias, p.get(f"l{layer}.peepholes"), self.cell_clip,
                    p.get(f"l{layer}.W_proj"), self.proj_clip, lengths,
                    state_mask=state_mask)  # fmt: skip
                new_state.append((hT, cT))
            elif self.cell == "lstm":
                h0, c0 = state[layer]
                hs, hT, cT, cache = lstm_forward_unchecked(
                    inp, h0, c0, p[f"l{layer}.Wx"], p[f"l{layer}.Wh"], p[f"l{layer}.b"],
                    self.forget_bias, ws, f"l{layer}", lengths=lengths)  # fmt: skip
                new_state.append((hT, cT))
            elif self.cell == "rnn":
                (h0,) = state[layer]
                hs, hT, cache = rnn_forward_unchecked(  # R1-R2 (M1-M3 with lengths)
                    inp, h0, p[f"l{layer}.Wx"], p[f"l{layer}.Wh"], p[f"l{layer}.b"],
                    lengths, ws, f"l{layer}")  # fmt: skip
                new_state.append((hT,))
            else:
                (h0,) = state[layer]
                hs, hT, cache = gru_forward_unchecked(
                    inp, h0, p[f"l{layer}.Wx"], p[f"l{layer}.Wh"], p[f"l{layer}.bx"],
                    p[f"l{layer}.bh"], self.reset_after, ws, f"l{layer}",
                    lengths=lengths)  # fmt: skip
                new_state.append((hT,))
            fw.caches.append(cache)
            inp = drop(hs, f"l{layer}.output")  # (D3), D1 in the tutorial's model
        return inp, new_state, fw

    def _check_dropout(self, keep_prob, rng, masks) -> Dropout:
        """``keep_prob`` (a float or a ``Dropout``) as a ``Dropout``, checked for this model."""
        dropout = _dropout.as_dropout(keep_prob)  # ValueError naming keep_prob or the field
        _dropout.check_cell(dropout, self.cell)
        if dropout.active and rng is None and masks is None:
            raise ValueError("keep_prob < 1 needs rng (a numpy.random.Generator) for dropout")
        return dropout

    def check_batch(
        self,
        x: np.ndarray,
        y: np.ndarray,
        state: State,
        keep_prob: KeepProb = 1.0,
        rng: np.random.Generator | None = None,
        masks: Masks | None = None,
        lengths: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Validate the arguments of ``loss_and_grads``; returns x, y as contiguous arrays.

        Raises ``ValueError``/``TypeError`` as ``loss_and_grads`` would, before any work: for a
        caller that splits the batch itself (``fast/parallel.py``) and must check it whole.
        """
        x, y, *_ = self._checked(x, y, state, keep_prob, rng, masks, lengths)
        return x, y

    def _checked(self, x, y, state, keep_prob, rng, masks, lengths):
        """``check_batch``, also returning the prepared lengths (a (B,) int64 array, or None
        when there are none or every row has all T steps: then nothing is masked), the
        ``Dropout`` and the checked fixed masks {site: mask} (or None)."""
        dropout = self._check_dropout(keep_prob, rng, masks)
        x, y = self._check_inputs(x, y, state)
        masks = self._check_masks(masks, *x.shape)
        if self.cell != "lstm" and masks and any(k.endswith(".state") for k in masks):
            raise ValueError("masks has a state mask ('l*.state'), but state dropout (D4) is "
                             f"supported for cell='lstm' only, not cell={self.cell!r}")  # fmt: skip
        B, T = x.shape
        return x, y, sequences.prepare_lengths(lengths, T, B), dropout, masks

    @staticmethod
    def _valid_rows(lengths: np.ndarray | None, T: int) -> np.ndarray | None:
        """(T*B,) bool, True at the time-major rows (t, b) with t < lengths[b]: the positions
        whose loss counts (S3m); None without lengths (every position counts)."""
        return None if lengths is None else sequences.output_mask(lengths, T).reshape(-1)

    # ---------------------------------------------------------------------------------------
    def loss(
        self,
        x: np.ndarray,
        y: np.ndarray,
        state: State,
        keep_prob: KeepProb = 1.0,
        rng: np.random.Generator | None = None,
        *,
        masks: Masks | None = None,
        lengths: np.ndarray | None = None,
    ) -> tuple[float, State]:
        """Loss of a (B, T) batch: sum of -log p(y) over all B * T words, divided by B.

        x, y : (B, T) int token ids (y = x shifted by one). Returns (loss, final state).
        Mean cross-entropy per word = loss / T; perplexity = exp(sum of losses / sum of T).
        Evaluation uses the default keep_prob = 1 (no dropout); ``keep_prob``/``rng``/``masks``
        are as in ``loss_and_grads``, so a gradient check can evaluate the training loss.

        ``lengths`` (B,) ints in [0, T]: row b is a sequence of its first lengths[b] words, the
        rest padding (any valid ids). The loss then sums -log p(y) over the sum(lengths) valid
        positions only, still divided by B (docs/layers.md S3m), and the state is each row's
        after its last valid step (docs/rnn.md M3): per-word cross-entropy = loss * B /
        sum(lengths).
        """
        ws = self._ws_eval
        x, y, lengths, dropout, masks = self._checked(x, y, state, keep_prob, rng, masks, lengths)
        B, T = x.shape
        top, new_state, _ = self._forward(x, state, dropout, rng, masks, ws, lengths)
        targets = np.ascontiguousarray(y.T).reshape(-1)  # time-major, as the rows of top
        # S1-S3; with lengths S3m: the padded positions' losses do not count
        loss = softmax_xent_loss_unchecked(
            top.reshape(T * B, -1), self.softmax_weight(), self.params["softmax_b"], targets,
            B, ws, valid=self._valid_rows(lengths, T))  # fmt: skip
        return loss, new_state

    def loss_and_grads(
        self,
        x: np.ndarray,
        y: np.ndarray,
        state: State,
        keep_prob: KeepProb = 1.0,
        rng: np.random.Generator | None = None,
        *,
        masks: Masks | None = None,
        sparse_embedding: bool = False,
        lengths: np.ndarray | None = None,
    ) -> tuple[float, dict[str, np.ndarray], State]:
        """Training step's loss (as ``loss``) and gradients of every parameter.

        keep_prob < 1 applies dropout with masks drawn from ``rng``: a float is the tutorial's
        dropout (the embedding and every layer's output, D1), a ``numlstm.Dropout`` chooses
        the sites (input, output, state) and variational masks (docs/dropout.md). ``masks``
        fixes the masks instead, e.g. for a gradient check, and ``rng`` is then not used: a list
        (one per site of D1: embedding, then each layer's output; None where unused) or a dict
        {site: mask} as ``draw_masks`` returns (a site left out or None is not dropped).
        Gradients do not flow into ``state`` (truncated BPTT).
        ``sparse_embedding=True`` returns the embedding's gradient as ``IndexedRows`` (only the
        rows of the batch's words, see ``fast/sparse.py``) instead of a dense (V, H) array;
        ``global_norm``, ``clip_by_global_norm``, ``SGD`` and ``Adam`` accept either. With
        ``tie_embeddings`` every row has a term from the softmax (dT1), so the gradient is
        dense in content: ``IndexedRows`` then lists all V rows.
        ``lengths`` (B,): a padded batch, as in ``loss``; padded positions get no gradient
        (dS3m: their rows of dZ are zero; the layers' dM1-dM2 do the rest).

        Returns (loss, grads with the keys of ``params``, final state). The gradient arrays are
        buffers owned by the model and overwritten by its next ``loss_and_grads`` call (that
        keeps a step free of large allocations); copy them to keep them.
        """
        x, y, lengths, dropout, masks = self._checked(x, y, state, keep_prob, rng, masks, lengths)
        r = self._forward_backward(x, y, state, dropout, rng, masks, x.shape[0], LOCAL, lengths)
        r.grads["embedding"] = self._embedding_grad(
            r.ids, r.d_embedded, sparse_embedding, r.grads.get("softmax_w")
        )
        return r.loss, {k: r.grads[k] for k in self.params}, r.state

    def rows_loss_and_grads(
        self,
        x: np.ndarray,
        y: np.ndarray,
        state: State,
        batch_size: int,
        keep_prob: KeepProb = 1.0,
        rng: np.random.Generator | None = None,
        *,
        masks: Masks | None = None,
        softmax_grad: SoftmaxGrad = LOCAL,
        lengths: np.ndarray | None = None,
    ) -> RowsResult:
        """Forward and backward pass of b rows of a batch of ``batch_size`` rows.

        The hook of a data-parallel step (threads: ``fast/parallel.py``; processes likewise):
        the rows of a (batch_size, T) batch are independent sequences until the loss sums
        them, so each part runs here on its rows x, y (b, T) and their state, with the loss
        divided by the whole batch's ``batch_size`` rather than by b:

            loss(batch) = sum over parts of RowsResult.loss, and likewise every gradient

        (docs/layers.md §4.1). ``keep_prob``/``rng``/``masks`` are as in ``loss_and_grads``;
        a part should pass its rows' slices of the masks drawn for the whole batch
        (``draw_masks``) so that the result does not depend on the split. ``softmax_grad``
        decides who forms the softmax's [dW; db] (``layers.SoftmaxGrad``): by default these
        rows alone; a shared strategy can make it the whole batch's at once.

        Returns a ``RowsResult``; the embedding's gradient follows from
        ``embedding_grad(result.ids, result.d_embedded)``, for one part or all parts' rows.
        With b = batch_size and the default ``softmax_grad`` it is ``loss_and_grads``. With
        tied embeddings pass the parts' (summed, or shared) ``grads["softmax_w"]`` as
        ``embedding_grad(..., softmax_w_grad=)``: the softmax's term of dT1.
        ``lengths`` (b,): these rows' lengths, as in ``loss_and_grads`` (S3m sums over rows
        too, so the parts still add up).
        """
        x, y, lengths, dropout, masks = self._checked(x, y, state, keep_prob, rng, masks, lengths)
        if int(batch_size) != batch_size or batch_size < x.shape[0]:
            raise ValueError(f"batch_size must be an integer >= the {x.shape[0]} rows of x, "
                             f"got {batch_size}")  # fmt: skip
        return self._forward_backward(
            x, y, state, dropout, rng, masks, batch_size, softmax_grad, lengths
        )

    def _forward_backward(
        self, x, y, state, dropout, rng, masks, batch_size, softmax_grad, lengths=None
    ):
        """Forward and backward of checked inputs, all but the embedding's gradient (dE1).

        The loss (and so every gradient) is divided by ``batch_size`` (S3), which is x's rows
        or, for some rows of a batch, the whole batch's (``rows_loss_and_grads``). ``lengths``
        (prepared, or None): S3m/dS3m in the softmax, M1-M3 and dM1-dM2 in the layers.
        """
        H, p = self.hidden_size, self.params
        P, E = self.output_size, self.embedding_size  # both H by default
        ws = self._ws_train
        B, T = x.shape
        top, new_state, fw = self._forward(x, state, dropout, rng, masks, ws, lengths)
        targets = np.ascontiguousarray(y.T).reshape(-1)  # time-major, as the rows of top
        # S1-S3 and their backward; with lengths S3m and dS3m (padded rows of dZ zero). Tied
        # (T1): W is embedding.T, and dW is the first of dT1's two terms (embedding_grad).
        loss, dh, dW, db = softmax_xent_forward_backward_unchecked(
            top.reshape(T * B, P), self.softmax_weight(), p["softmax_b"], targets, batch_size,
            ws, grad=softmax_grad, valid=self._valid_rows(lengths, T))  # fmt: skip
        grads: dict[str, np.ndarray] = {"softmax_w": dW, "softmax_b": db}
        d = dh.reshape(T, B, P)
        zeros = np.zeros((B, H), self.dtype)  # truncated BPTT: no gradient from the next batch
        zeros_h = zeros if P == H else np.zeros((B, P), self.dtype)
        masks = fw.masks
        for layer in range(self.num_layers - 1, -1, -1):
            # (dD3), dD1 in the tutorial's model
            d = np.ascontiguousarray(dropout_backward(d, masks.get(f"l{layer}.output")))
            cache = fw.caches[layer]
            if isinstance(cache, LSTMPCache):  # dP8-dP1; with state dropout dD4 inside
                d, _, _, dWx, dWh, db, dpeep, dW_proj = lstmp_backward_unchecked(
                    d, zeros_h, zeros, cache)  # fmt: skip
                grads[f"l{layer}.b"] = db
                if dpeep is not None:
                    grads[f"l{layer}.peepholes"] = dpeep
                if dW_proj is not None:
                    grads[f"l{layer}.W_proj"] = dW_proj
            elif self.cell == "lstm":
                d, _, _, dWx, dWh, db = lstm_backward_unchecked(
                    d, zeros, zeros, cache, ws, f"l{layer}", need_dh0=False)  # fmt: skip
                grads[f"l{layer}.b"] = db
            elif self.cell == "rnn":
                d, _, dWx, dWh, db = rnn_backward_unchecked(  # dR2-dR1 (dM1-dM2, M3)
                    d, zeros, cache, ws, f"l{layer}", need_dh0=False)  # fmt: skip
                grads[f"l{layer}.b"] = db
            else:
                d, _, dWx, dWh, dbx, dbh = gru_backward_unchecked(
                    d, zeros, cache, ws, f"l{layer}", need_dh0=False)  # fmt: skip
                grads[f"l{layer}.bx"], grads[f"l{layer}.bh"] = dbx, dbh
            grads[f"l{layer}.Wx"], grads[f"l{layer}.Wh"] = dWx, dWh
            d = dropout_backward(d, masks.get(f"l{layer}.input"))  # (dD2)
        d = dropout_backward(d, masks.get("embedding")).reshape(T * B, E)  # dD1
        return RowsResult(loss, grads, d, fw.ids.reshape(-1), new_state)

    def embedding_grad(
        self, ids: np.ndarray, d_embedded: np.ndarray, *, sparse: bool = False,
        softmax_w_grad: np.ndarray | None = None,
    ) -> np.ndarray | IndexedRows:  # fmt: skip
        """(dE1) The embedding's gradient from token ids (N,) and the gradient (N, E) on their
        embedded rows, e.g. ``RowsResult.ids`` and ``.d_embedded`` (of one or several parts,
        concatenated). ``IndexedRows`` if ``sparse``, else a dense (V, E) array; either is a
        buffer of the model, overwritten by its next training call.

        With tied embeddings (dT1) the softmax's gradient is the second term:
        ``softmax_w_grad`` (P, V) must be the sum of the parts' ``RowsResult.grads
        ["softmax_w"]`` (with a shared ``softmax_grad``, the whole batch's, held by every part),
        and the result is dense in content; with ``sparse`` it is ``IndexedRows`` of all V rows.
        """
        ids = _checks.token_ids("ids", ids, self.vocab_size, ndim=1)
        d_embedded = _checks.float_array("d_embedded", d_embedded, 2, self.dtype)
        E = self.embedding_size
        _checks.expect_shape("d_embedded", d_embedded, (ids.shape[0], E), "(N, E)")
        if self.tie_embeddings:
            if softmax_w_grad is None:
                raise ValueError("softmax_w_grad is needed with tie_embeddings: pass the summed "
                                 "RowsResult.grads['softmax_w'] of the rows (dT1)")  # fmt: skip
            softmax_w_grad = _checks.float_array("softmax_w_grad", softmax_w_grad, 2, self.dtype)
            _checks.expect_shape("softmax_w_grad", softmax_w_grad,
                                 (self.output_size, self.vocab_size), "(P, V)")  # fmt: skip
        elif softmax_w_grad is not None:
            raise ValueError("softmax_w_grad is only for a model with tie_embeddings=True; "
                             "this model has its own softmax_w")  # fmt: skip
        return self._embedding_grad(ids, d_embedded, sparse, softmax_w_grad)

    def _embedding_grad(self, ids, d, sparse, dW_softmax=None):
        """(dE1) the embedding's gradient from ids (N,) and the gradient d (N, E) on their rows:
        ``IndexedRows`` (only the rows of the words present) if ``sparse``, else dense (V, E).
        Tied (dT1): plus dW_softmax.T, the softmax's (P, V) gradient; every row gets some."""
        if self.tie_embeddings:
            return self._tied_embedding_grad(ids, d, sparse, dW_softmax)
        ws = self._ws_train
        H = self.embedding_size
        N = ids.shape[0]
        if sparse:
            # all -1, and the kernel leaves it so after every call
            slot = ws.scratch("embedding.slot", (self.vocab_size,), np.dtype(np.int64), -1)
            rows = ws.empty("embedding.rows", (N,), np.dtype(np.int64))
            values = ws.empty("embedding.values", (N, H), self.dtype)
            U = kernels.embedding_rows_grad(ids, d, slot, rows, values)
            return IndexedRows(rows[:U], values[:U], self.params["embedding"].shape)
        demb = ws.zeros("embedding.grad", self.params["embedding"].shape, self.dtype)
        kernels.embedding_scatter_add(demb, ids, d)
        return demb

    def _tied_embedding_grad(self, ids, d, sparse, dW_softmax):
        """(dT1) dE = scatter of d over ids (dE1) + dW_softmax.T: both uses of E add."""
        ws = self._ws_train
        demb = ws.empty("embedding.grad", self.params["embedding"].shape, self.dtype)
        np.copyto(demb, dW_softmax.T)  # (dT1) the softmax's term, dW_softmaxᵀ (V, E)
        kernels.embedding_scatter_add(demb, ids, d)  # (dT1) + the lookup's term (dE1)
        if not sparse:
            return demb
        # Every row has a softmax term, so the "sparse" form lists all V rows: the callers
        # that expect IndexedRows (DataParallel, DistributedStep, SGD) work unchanged.
        rows = ws.scratch("embedding.all_rows", (self.vocab_size,), np.dtype(np.int64), 0)
        rows[:] = np.arange(self.vocab_size)
        return IndexedRows(rows, demb, demb.shape)

    def draw_masks(
        self, T: int, B: int, keep_prob: KeepProb, rng: np.random.Generator
    ) -> list[np.ndarray] | dict[str, np.ndarray | None] | None:
        """The dropout masks a (B, T) batch's forward pass would draw from ``rng``, drawn now in
        the same order; None when nothing is dropped.

        A float ``keep_prob``: the list of D1, the embedding's, then each layer's output's,
        (T, B, H) each (as before ``Dropout`` existed; (T, B, E) and (T, B, P) with
        embedding_size and proj_size). A ``Dropout``: a dict {site: mask or None} over every
        site ("embedding", then per layer "l{l}.input", "l{l}.state", "l{l}.output"), each of
        the shape D5 gives it: (T, B, W) fresh, (B, W) per sequence, (1, W) for the whole
        batch, W the site's width (``_site_widths``). Either passes back as ``masks=``;
        ``dropout.slice_rows`` takes some rows of them for a part of the batch.
        """
        if not isinstance(keep_prob, Dropout):
            if keep_prob == 1.0:
                return None
            widths = self._site_widths()
            sites = ["embedding"] + [f"l{layer}.output" for layer in range(self.num_layers)]
            return [dropout_mask((T, B, widths[site]), keep_prob, rng, self.dtype)
                    for site in sites]  # fmt: skip
        dropout = self._check_dropout(keep_prob, rng, None)
        if not dropout.active:
            return None
        return _dropout.draw(self.num_layers, T, B, self._site_widths(), dropout, rng, self.dtype)

    def replica(self) -> LanguageModel:
        """A model sharing this one's parameters (the same ``params`` dict and arrays) with its
        own scratch buffers: another thread can run it on other rows of the batch at the same
        time (``fast/parallel.py``)."""
        r = copy.copy(self)
        r._ws_train = Workspace()
        r._ws_eval = Workspace()
        return r

    def logits(self, x: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """Unnormalised next-word scores (B, T, V) for every position of x (B, T), no dropout."""
        x, _ = self._check_inputs(x, None, state)
        B, T = x.shape
        top, new_state, _ = self._forward(x, state, _NO_DROPOUT, None, None, self._ws_eval)
        z = np.empty((T * B, self.vocab_size), self.dtype)
        matmul_into(top.reshape(T * B, -1), self.softmax_weight(), z)  # (S1), tied: (T1)
        z += self.params["softmax_b"]
        return np.ascontiguousarray(z.reshape(T, B, -1).transpose(1, 0, 2)), new_state

    def num_parameters(self) -> int:
        return int(sum(a.size for a in self.params.values()))
