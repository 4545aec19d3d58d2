"""The four configurations of the TensorFlow PTB tutorial (Zaremba et al., 2014).

Field names and values are the tutorial's. Small is the non-regularised model of the paper,
Medium and Large the regularised ones (dropout 1 - keep_prob on non-recurrent connections).

| config | layers | hidden | steps | keep_prob | max_grad_norm | epochs | test perplexity (paper) |
|--------|--------|--------|-------|-----------|---------------|--------|-------------------------|
| small  | 2      | 200    | 20    | 1.0       | 5             | 13     | 114.5 (tutorial 115.9)  |
| medium | 2      | 650    | 35    | 0.5       | 5             | 39     | 82.7                    |
| large  | 2      | 1500   | 35    | 0.35      | 10            | 55     | 78.4                    |
| test   | 1      | 2      | 2     | 1.0       | 1             | 1      | (a smoke test)          |

Beyond the tutorial, the dropout sites of TensorFlow's DropoutWrapper and variational masks
(``numlstm.Dropout``, docs/dropout.md): ``embedding_keep_prob``, ``input_keep_prob``,
``output_keep_prob``, ``state_keep_prob`` (None: derived from ``keep_prob`` as the tutorial
does, i.e. ``keep_prob`` on the embedding and the outputs, no input or state dropout) and
``variational`` (None, "sequence" or "batch"). Every config leaves them at None.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from .dropout import VARIATIONAL, Dropout

# Sane upper limits: far above any published PTB model, low enough that a typo (an extra digit
# or three) is caught here rather than by a MemoryError or a Numba failure hours later.
MAX_LAYERS = 64
MAX_INIT_SCALE = 100.0
# The fields of the model options (off by default); a checkpoint written before they existed
# lacks them, and means their defaults.
MODEL_OPTIONS = ("peepholes", "cell_clip", "num_proj", "proj_clip", "tie_embeddings",
                 "embedding_size")  # fmt: skip


@dataclass
class Config:
    """Hyper-parameters of one PTB run (the tutorial's names)."""

    init_scale: float = 0.1  # weights start uniform in [-init_scale, init_scale]
    learning_rate: float = 1.0  # SGD learning rate before decay (O3, O4)
    max_grad_norm: float = 5.0  # clip the global gradient norm to this (O2)
    num_layers: int = 2
    num_steps: int = 20  # truncated-BPTT length
    hidden_size: int = 200  # also the embedding size
    max_epoch: int = 4  # epochs at the full learning rate
    max_max_epoch: int = 13  # total epochs
    keep_prob: float = 1.0  # dropout keep probability on non-recurrent connections
    lr_decay: float = 0.5  # learning-rate factor per epoch after max_epoch (O4)
    batch_size: int = 20
    vocab_size: int = 10000
    # Model options beyond the tutorial (docs/lstmp.md, docs/layers.md 4.3), off by default.
    peepholes: bool = False  # LSTMP peepholes (P2, P6)
    cell_clip: float | None = None  # clip the cell to [-cell_clip, cell_clip] (P5)
    num_proj: int | None = None  # project h to num_proj (P8); TF's name, PyTorch's proj_size
    proj_clip: float | None = None  # clip the projection (P8); needs num_proj
    tie_embeddings: bool = False  # softmax weights = embedding.T (T1)
    embedding_size: int | None = None  # E; None: hidden_size
    # DropoutWrapper sites (docs/dropout.md); None: derived from keep_prob (``dropout()``)
    embedding_keep_prob: float | None = None
    input_keep_prob: float | None = None
    output_keep_prob: float | None = None
    state_keep_prob: float | None = None
    variational: str | None = None  # None, "sequence" (Gal, Keras) or "batch" (TensorFlow)

    def dropout(self) -> Dropout:
        """The run's ``Dropout``: each site's field, or where it is None the tutorial's use of
        ``keep_prob`` (the embedding and every layer's output; no input or state dropout). With
        every new field None this is ``Dropout.from_keep_prob(keep_prob)``: today's runs."""

        def pick(value: float | None, default: float) -> float:
            return default if value is None else value

        return Dropout(
            embedding_keep_prob=pick(self.embedding_keep_prob, self.keep_prob),
            input_keep_prob=pick(self.input_keep_prob, 1.0),
            output_keep_prob=pick(self.output_keep_prob, self.keep_prob),
            state_keep_prob=pick(self.state_keep_prob, 1.0),
            variational=self.variational,
        )

    def lr_at(self, epoch: int) -> float:
        """(O4) learning rate of the 0-based ``epoch``: lr * lr_decay^max(epoch+1-max_epoch, 0)."""
        return self.learning_rate * self.lr_decay ** max(epoch + 1 - self.max_epoch, 0)

    def replace(self, **changes: object) -> Config:
        return dataclasses.replace(self, **changes)

    def validate(self) -> Config:
        """Raise ``ValueError`` naming the first field whose value cannot train a model (a
        negative clip norm would ascend the gradient, NaN would switch clipping off, ...);
        returns ``self``. Also refuses a model whose parameters alone exceed this machine's
        memory."""
        positive_ints = ("num_layers", "num_steps", "hidden_size", "max_max_epoch",
                         "batch_size")  # fmt: skip
        for name in (*positive_ints, "max_epoch", "vocab_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_epoch < 0:
            raise ValueError(f"max_epoch must be >= 0, got {self.max_epoch}")
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {self.vocab_size}")
        if self.num_layers > MAX_LAYERS:
            raise ValueError(f"num_layers must be <= {MAX_LAYERS}, got {self.num_layers}")
        for name in ("init_scale", "learning_rate", "max_grad_norm", "lr_decay", "keep_prob"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            if v <= 0:
                raise ValueError(f"{name} must be > 0, got {v}")
        if self.keep_prob > 1:
            raise ValueError(f"keep_prob must be in (0, 1], got {self.keep_prob}")
        self._validate_model_options()
        for name in ("embedding_keep_prob", "input_keep_prob", "output_keep_prob",
                     "state_keep_prob"):  # fmt: skip
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1:
                raise ValueError(f"{name} must be a number in (0, 1] (or None: derived from "
                                 f"keep_prob), got {v!r}")  # fmt: skip
        if self.variational not in VARIATIONAL:
            raise ValueError(f"variational must be None, 'sequence' or 'batch', "
                             f"got {self.variational!r}")  # fmt: skip
        if self.init_scale > MAX_INIT_SCALE:
            raise ValueError(f"init_scale must be <= {MAX_INIT_SCALE:g} (weights are uniform in "
                             f"[-init_scale, init_scale]), got {self.init_scale}")  # fmt: skip
        need = 4 * self.num_parameters()  # float32 parameters; training needs several times this
        have = _physical_memory()
        if have and need > have:
            gib = f"{need / 2**30:.1f} GiB for the parameters alone; this machine has"
            raise ValueError(f"hidden_size={self.hidden_size}, num_layers={self.num_layers}, "
                             f"vocab_size={self.vocab_size} need {gib} "
                             f"{have / 2**30:.1f} GiB")  # fmt: skip
        return self

    def _validate_model_options(self) -> None:
        """The LSTMP and embedding fields: types, ranges, and the sizes tying needs."""
        for name in ("peepholes", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("num_proj", "embedding_size"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer (or None), got {v!r}")
        for name in ("cell_clip", "proj_clip"):
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number (or None), got {v!r}")
            if v <= 0:
                raise ValueError(f"{name} must be > 0 (or None for no clip), got {v}")
        if self.proj_clip is not None and self.num_proj is None:
            raise ValueError("proj_clip clips the projection: it needs num_proj")
        P, E = self.num_proj or self.hidden_size, self.embedding_size or self.hidden_size
        if self.tie_embeddings and P != E:
            raise ValueError(f"tie_embeddings needs the top layer's output width (num_proj, or "
                             f"hidden_size) == embedding_size: got {P} != {E}")  # fmt: skip

    def lstmp_options_on(self) -> list[str]:
        """The LSTMP options (P2-P8) this config turns on; they need cell 'lstm' (the training
        entry points refuse another cell with them before touching data or run folders)."""
        return [k for k in ("peepholes", "cell_clip", "num_proj", "proj_clip")
                if getattr(self, k) not in (None, False)]  # fmt: skip

    def model_options(self) -> dict:
        """The ``LanguageModel`` keyword arguments of the model options (num_proj is its
        proj_size)."""
        return {"peepholes": self.peepholes, "cell_clip": self.cell_clip,
                "proj_size": self.num_proj, "proj_clip": self.proj_clip,
                "tie_embeddings": self.tie_embeddings,
                "embedding_size": self.embedding_size}  # fmt: skip

    def num_parameters(self, cell: str = "lstm") -> int:
        """Parameters of the model: embedding (V, E), L recurrent layers, softmax (P, V) (none
        when tied) + (V,). E = P = H by default. A layer of input width D (E or P) has
        G H (D + P + k): G = 4 gates and k = 1 bias for the LSTM (L1; plus 3H peepholes and
        H P projection when on), G = 3, k = 2 for the GRU (G1-G2), G = 1, k = 1 for the plain
        RNN (R1-R2). ``validate`` uses the LSTM's count, the largest, as a bound."""
        if cell not in _CELL_SHAPES:
            raise ValueError(f"cell must be one of {tuple(_CELL_SHAPES)}, got {cell!r}")
        G, k = _CELL_SHAPES[cell]
        V, H, L = self.vocab_size, self.hidden_size, self.num_layers
        P, E = self.num_proj or H, self.embedding_size or H
        layers = G * H * (E + P + k) + (L - 1) * G * H * (2 * P + k)
        layers += L * ((3 * H if self.peepholes else 0) + (H * P if self.num_proj else 0))
        return V * E + layers + (0 if self.tie_embeddings else P * V) + V

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# cell -> (G blocks of H columns in Wx and Wh, k biases of G H): model.GATES and model.BIASES,
# repeated so that this module stays free of the model's (Numba) imports
_CELL_SHAPES = {"lstm": (4, 1), "gru": (3, 2), "rnn": (1, 1)}


def SmallConfig() -> Config:
    return Config()


def MediumConfig() -> Config:
    return Config(
        init_scale=0.05, learning_rate=1.0, max_grad_norm=5, num_layers=2, num_steps=35,
        hidden_size=650, max_epoch=6, max_max_epoch=39, keep_prob=0.5, lr_decay=0.8,
        batch_size=20, vocab_size=10000,
    )  # fmt: skip


def LargeConfig() -> Config:
    return Config(
        init_scale=0.04, learning_rate=1.0, max_grad_norm=10, num_layers=2, num_steps=35,
        hidden_size=1500, max_epoch=14, max_max_epoch=55, keep_prob=0.35, lr_decay=1 / 1.15,
        batch_size=20, vocab_size=10000,
    )  # fmt: skip


def TestConfig() -> Config:
    return Config(
        init_scale=0.1, learning_rate=1.0, max_grad_norm=1, num_layers=1, num_steps=2,
        hidden_size=2, max_epoch=1, max_max_epoch=1, keep_prob=1.0, lr_decay=0.5,
        batch_size=20, vocab_size=10000,
    )  # fmt: skip


def _physical_memory() -> int:
    """Bytes of RAM on this machine (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


CONFIGS = {"small": SmallConfig, "medium": MediumConfig, "large": LargeConfig, "test": TestConfig}


def get_config(name: str) -> Config:
    """The config called ``name`` (small, medium, large or test; case-insensitive)."""
    try:
        return CONFIGS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown config {name!r}; choose one of {sorted(CONFIGS)}") from None
