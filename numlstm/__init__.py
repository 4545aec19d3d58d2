"""numlstm: LSTM, GRU and plain RNN language models written by hand in NumPy and Numba.

Layer API (time-major: x (T, B, D), hs (T, B, H), states (B, H)); see docs/ for the equations:

    hs, hT, cT, cache = numlstm.lstm_forward(x, h0, c0, Wx, Wh, b, forget_bias=0.0)
    dx, dh0, dc0, dWx, dWh, db = numlstm.lstm_backward(dhs, dhT, dcT, cache)
    hs, hT, cT, cache = numlstm.lstmp_forward(x, h0, c0, Wx, Wh, b, peepholes=None,
                                              cell_clip=None, W_proj=None, proj_clip=None)
    dx, dh0, dc0, dWx, dWh, db, dpeepholes, dW_proj = numlstm.lstmp_backward(dhs, dhT, dcT,
                                                                             cache)
    hs, hT, cache = numlstm.gru_forward(x, h0, Wx, Wh, bx, bh)
    dx, dh0, dWx, dWh, dbx, dbh = numlstm.gru_backward(dhs, dhT, cache)
    hs, hT, cache = numlstm.rnn_forward(x, h0, Wx, Wh, b)          # plain tanh RNN
    dx, dh0, dWx, dWh, db = numlstm.rnn_backward(dhs, dhT, cache)

Every forward takes ``lengths=`` (B,) for padded batches (docs/rnn.md section 5);
``reverse_sequence`` and ``bidirectional_forward``/``bidirectional_backward`` build a
bidirectional layer from two one-directional ones.
"""

import os as _os

# Numba's OpenMP threads spin after each parallel kernel by default and then compete with
# OpenBLAS's threads for the same cores; sleeping instead measured 5,100 -> 6,300 words/s on the
# PTB small model (2 cores; docs/performance.md). Only a default: a value the user set wins, and
# it must be set before Numba starts its threads, i.e. before the first kernel runs.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .dropout import Dropout
from .fast.fast_eval import evaluate_sequence
from .fast.parallel import DataParallel, default_threads
from .fast.sparse import IndexedRows
from .fast.workspace import Workspace
from .gradcheck import gradcheck, numeric_gradient, relative_error
from .gru import GRUCache, gru_backward, gru_forward
from .layers import (
    dropout_backward,
    dropout_forward,
    dropout_mask,
    embedding_backward,
    embedding_forward,
    softmax_xent_forward_backward,
    softmax_xent_loss,
)
from .lstm import LSTMCache, lstm_backward, lstm_forward, lstm_step_backward, lstm_step_forward
from .lstmp import LSTMPCache, lstmp_backward, lstmp_forward
from .model import LanguageModel
from .optim import SGD, Adam, clip_by_global_norm, clip_factor, global_norm
from .rnn import RNNCache, rnn_backward, rnn_forward
from .sequences import (
    BidirectionalCache,
    bidirectional_backward,
    bidirectional_forward,
    reverse_sequence,
)

__version__ = "0.1.0"

__all__ = [
    "LSTMCache", "GRUCache", "LanguageModel", "Workspace", "SGD", "Adam", "IndexedRows",
    "DataParallel", "default_threads",
    "lstm_forward", "lstm_backward", "lstm_step_forward", "lstm_step_backward",
    "gru_forward", "gru_backward", "RNNCache", "rnn_forward", "rnn_backward",
    "reverse_sequence", "BidirectionalCache", "bidirectional_forward", "bidirectional_backward",
    "embedding_forward", "embedding_backward", "dropout_forward", "dropout_backward",
    "dropout_mask", "softmax_xent_forward_backward", "softmax_xent_loss",
    "clip_by_global_norm", "clip_factor", "global_norm",
    "gradcheck", "numeric_gradient", "relative_error", "evaluate_sequence",
]  # fmt: skip
# LSTMP (peepholes, cell clip, projection; docs/lstmp.md)
__all__ += ["LSTMPCache", "lstmp_forward", "lstmp_backward"]
# DropoutWrapper sites and variational masks (docs/dropout.md)
__all__ += ["Dropout"]
