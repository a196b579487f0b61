"""A plain-NumPy reference implementation of the ELMo biLM inference graph.

This module is a *test oracle*: an independent, deliberately simple re-statement
of the facts in ``shared/DESIGN.md`` ("Facts that files and pretrained models
depend on") that the package's TensorFlow graph must reproduce.  It uses only
NumPy and h5py, loops over time in Python and is vectorised over the batch.
It must not import ``bilm`` or TensorFlow.

Notation used in the shapes below:

* ``B``  batch size (number of sentences), ``T`` the longest sentence length,
  so id arrays have ``T + 2`` positions (begin and end tokens added);
* ``C``  ``max_characters_per_token``; ``E`` the character embedding size;
* ``F``  the sum of the char-CNN filter counts;
* ``D``  ``lstm.dim`` (cell size); ``P`` ``lstm.projection_dim``;
* ``L``  ``lstm.n_layers``.

Public API::

    load_weight_file(path) -> dict[str, np.ndarray]
    char_ids_for_sentences(sentences, max_chars=50) -> int32 (B, T + 2, C)
    token_ids_for_sentences(sentences, vocab) -> int32 (B, T + 2)
    NumpyBiLM(options, weights, max_batch_size=128, token_embedding=None)
        .states[direction][layer] = [c (max_batch_size, D), h (max_batch_size, P)]
        .reset_states()
        .__call__(ids) -> dict(token_embeddings, lengths, mask, lm_embeddings)
"""

from typing import Dict, List, Optional, Sequence

import h5py
import numpy as np

# Character ids (before the +1 shift that makes 0 mean "no token").
BOS_CHAR = 256  # begin of sentence, the <S> token
EOS_CHAR = 257  # end of sentence, the </S> token
BOW_CHAR = 258  # begin of word
EOW_CHAR = 259  # end of word
PAD_CHAR = 260  # padding inside a token

DIRECTIONS = ("forward", "backward")


# --------------------------------------------------------------------------
# Weight file
# --------------------------------------------------------------------------

def load_weight_file(path) -> Dict[str, np.ndarray]:
    """Read every dataset of an HDF5 weight file.

    Returns a dict mapping the full dataset name (e.g. ``'char_embed'``,
    ``'CNN/W_cnn_0'``, ``'RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0'``) to its
    array, exactly as stored (no zero row added to ``char_embed``).
    """
    weights: Dict[str, np.ndarray] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            weights[name] = np.array(obj[...])

    with h5py.File(path, "r") as fin:
        fin.visititems(visit)
    return weights


# --------------------------------------------------------------------------
# Input encoding
# --------------------------------------------------------------------------

def _boundary_char_ids(marker: int, max_chars: int) -> np.ndarray:
    """Char ids (C,) of a sentence boundary token: [bow, marker, eow, pad...]."""
    ids = np.full(max_chars, PAD_CHAR, dtype=np.int32)
    ids[0] = BOW_CHAR
    ids[1] = marker
    ids[2] = EOW_CHAR
    return ids


def _word_char_ids(word: str, max_chars: int) -> np.ndarray:
    """Char ids (C,) of one token: [bow, utf-8 bytes[:C-2]..., eow, pad...]."""
    data = word.encode("utf-8", "ignore")[: max_chars - 2]
    ids = np.full(max_chars, PAD_CHAR, dtype=np.int32)
    ids[0] = BOW_CHAR
    ids[1 : 1 + len(data)] = list(data)
    ids[1 + len(data)] = EOW_CHAR
    return ids


def char_ids_for_sentences(sentences: Sequence[Sequence[str]],
                           max_chars: int = 50) -> np.ndarray:
    """Encode tokenised sentences as character ids, as ``Batcher`` does.

    Each sentence becomes ``[<S>, tokens..., </S>]``; every token is its UTF-8
    bytes cut to ``max_chars - 2``, wrapped in bow/eow and padded with pad; the
    boundary tokens are ``[bow, 256 or 257, eow, pad...]``.  Every id is then
    shifted by +1, and positions past a sentence's end are all 0.

    Note: unlike the original ``Batcher`` (whose vocabulary maps the literal
    strings ``'<S>'``/``'</S>'`` to the boundary ids), a literal ``'<S>'`` token
    here is encoded byte by byte.

    Returns: int32 array (B, T + 2, C), T = longest sentence.
    """
    n = len(sentences)
    max_len = max((len(s) for s in sentences), default=0)
    out = np.zeros((n, max_len + 2, max_chars), dtype=np.int32)
    for k, sentence in enumerate(sentences):
        rows = [_boundary_char_ids(BOS_CHAR, max_chars)]
        rows += [_word_char_ids(w, max_chars) for w in sentence]
        rows.append(_boundary_char_ids(EOS_CHAR, max_chars))
        out[k, : len(rows)] = np.stack(rows) + 1
    return out


def token_ids_for_sentences(sentences: Sequence[Sequence[str]],
                            vocab: Sequence[str]) -> np.ndarray:
    """Encode tokenised sentences as token ids, as ``TokenBatcher`` does.

    ``vocab`` is the list of vocabulary tokens (id = list index; a
    ``!!!MAXTERMID`` line of a vocabulary file must already be removed).  It
    must contain ``'<S>'`` and ``'</S>'``; unknown words map to ``'<UNK>'``
    (an error if the vocabulary has none).  Each sentence becomes
    ``[<S>, tokens..., </S>]``, every id is shifted by +1, and 0 is padding.

    Returns: int32 array (B, T + 2).
    """
    word_to_id = {w: i for i, w in enumerate(vocab)}
    bos, eos = word_to_id["<S>"], word_to_id["</S>"]
    unk = word_to_id.get("<UNK>")
    n = len(sentences)
    max_len = max((len(s) for s in sentences), default=0)
    out = np.zeros((n, max_len + 2), dtype=np.int32)
    for k, sentence in enumerate(sentences):
        ids = [bos]
        for w in sentence:
            if w in word_to_id:
                ids.append(word_to_id[w])
            elif unk is not None:
                ids.append(unk)
            else:
                raise KeyError(f"{w!r} is not in the vocabulary, which has no <UNK>")
        ids.append(eos)
        out[k, : len(ids)] = np.array(ids) + 1
    return out


# --------------------------------------------------------------------------
# Small numeric helpers
# --------------------------------------------------------------------------

def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def reverse_sequence(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Like ``tf.reverse_sequence(x, lengths, seq_axis=1, batch_axis=0)``.

    x: (B, T, ...); lengths: (B,).  Row b has its first ``lengths[b]``
    positions reversed; later positions are left where they are.
    """
    out = x.copy()
    for b, n in enumerate(lengths):
        n = int(max(n, 0))
        out[b, :n] = x[b, :n][::-1]
    return out


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------

class NumpyBiLM:
    """The biLM inference graph in NumPy, stateful like the original.

    Args:
        options: the parsed ``options.json`` (``char_cnn`` optional, ``lstm``).
        weights: ``load_weight_file(...)`` of the model's weight file;
            ``char_embed`` has 261 rows there, a zero row for id 0 is prepended
            here.
        max_batch_size: number of rows of the LSTM state buffers.
        token_embedding: (n_vocab, P) for a token-input model (inputs are token
            ids + 1; a zero row is prepended for id 0).  None for a
            character-input model.

    Attributes:
        states: ``states[direction][layer] = [c, h]`` with c (max_batch_size, D)
            and h (max_batch_size, P, or D without projection); direction in
            ``('forward', 'backward')``.  All zeros initially.  A batch of b
            sentences starts from rows [:b] and writes each sentence's final
            state (after its last real position) back into rows [:b].

    All arithmetic is float32, like the TensorFlow graph.
    """

    dtype = np.float32

    def __init__(self, options: dict, weights: Dict[str, np.ndarray],
                 max_batch_size: int = 128,
                 token_embedding: Optional[np.ndarray] = None):
        self.options = options
        self.max_batch_size = int(max_batch_size)
        lstm = options["lstm"]
        self.dim = int(lstm["dim"])
        self.projection_dim = int(lstm["projection_dim"])
        self.n_layers = int(lstm["n_layers"])
        self.cell_clip = lstm.get("cell_clip")
        self.proj_clip = lstm.get("proj_clip")
        self.use_skip_connections = bool(lstm.get("use_skip_connections", False))
        f = lambda name: np.asarray(weights[name], dtype=self.dtype)

        self.is_char_model = token_embedding is None
        if self.is_char_model:
            cnn = options["char_cnn"]
            self.max_chars = int(cnn["max_characters_per_token"])
            self.activation = {"relu": _relu, "tanh": np.tanh}[cnn["activation"]]
            char_embed = f("char_embed")  # (261, E)
            # (262, E): row 0 is the "no token here" character.
            self.char_embed = np.concatenate(
                [np.zeros((1, char_embed.shape[1]), self.dtype), char_embed])
            # Per filter i: kernel (width_i, E, n_i) and bias (n_i,).
            self.filters = [(f(f"CNN/W_cnn_{i}")[0], f(f"CNN/b_cnn_{i}"))
                            for i in range(len(cnn["filters"]))]
            n_filters = sum(n for _, n in cnn["filters"])
            self.highways = [
                tuple(f(f"CNN_high_{k}/{name}") for name in
                      ("W_carry", "b_carry", "W_transform", "b_transform"))
                for k in range(int(cnn.get("n_highway", 0) or 0))]
            self.proj = None
            if n_filters != self.projection_dim:
                self.proj = (f("CNN_proj/W_proj"), f("CNN_proj/b_proj"))
        else:
            token_embedding = np.asarray(token_embedding, dtype=self.dtype)
            # (n_vocab + 1, P): row 0 is padding.
            self.token_table = np.concatenate(
                [np.zeros((1, token_embedding.shape[1]), self.dtype), token_embedding])

        # self.cells[direction][layer] = (W_0 (in + h, 4D), B (4D,), W_P_0 (D, P) or None)
        self.cells = {}
        for d, direction in enumerate(DIRECTIONS):
            self.cells[direction] = []
            for layer in range(self.n_layers):
                prefix = f"RNN_{d}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/"
                w_p = f(prefix + "W_P_0") if prefix + "W_P_0" in weights else None
                self.cells[direction].append((f(prefix + "W_0"), f(prefix + "B"), w_p))
        self.reset_states()

    # ---------------------------------------------------------------- state

    def reset_states(self) -> None:
        """Set every LSTM state buffer to zeros."""
        self.states = {}
        for direction in DIRECTIONS:
            self.states[direction] = []
            for _, _, w_p in self.cells[direction]:
                h_dim = self.dim if w_p is None else w_p.shape[1]
                self.states[direction].append([
                    np.zeros((self.max_batch_size, self.dim), self.dtype),
                    np.zeros((self.max_batch_size, h_dim), self.dtype)])

    # ------------------------------------------------------ token embedding

    def char_cnn(self, char_ids: np.ndarray) -> np.ndarray:
        """Context-independent token vectors from character ids.

        char_ids: int (B, N, C) (already +1 shifted).  Returns (B, N, P).
        """
        B, N, C = char_ids.shape
        x = self.char_embed[char_ids.reshape(B * N, C)]  # (B*N, C, E)
        pieces = []
        for w_cnn, b_cnn in self.filters:  # w_cnn (width, E, n)
            width = w_cnn.shape[0]
            n_out = C - width + 1  # VALID convolution
            conv = np.zeros((B * N, n_out, w_cnn.shape[2]), self.dtype)
            for k in range(width):  # cross-correlation: x[p + k] * W[k]
                conv += x[:, k : k + n_out, :] @ w_cnn[k]
            conv += b_cnn
            pieces.append(self.activation(conv.max(axis=1)))  # (B*N, n)
        h = np.concatenate(pieces, axis=1)  # (B*N, F)
        for w_carry, b_carry, w_transform, b_transform in self.highways:
            g = _sigmoid(h @ w_carry + b_carry)
            h = g * _relu(h @ w_transform + b_transform) + (1.0 - g) * h
        if self.proj is not None:
            h = h @ self.proj[0] + self.proj[1]  # (B*N, P)
        return h.reshape(B, N, -1)

    def token_embeddings(self, ids: np.ndarray) -> np.ndarray:
        """(B, N, C) char ids or (B, N) token ids -> (B, N, P)."""
        if self.is_char_model:
            return self.char_cnn(ids)
        return self.token_table[ids]

    # ----------------------------------------------------------------- LSTM

    def lstm_step(self, x, c_prev, h_prev, cell):
        """One TensorFlow ``LSTMCell`` step (with optional projection/clipping).

        x (b, in), c_prev (b, D), h_prev (b, P or D).  Returns (c, m).
        """
        w, bias, w_p = cell
        z = np.concatenate([x, h_prev], axis=1) @ w + bias  # (b, 4D)
        i, j, f, o = np.split(z, 4, axis=1)
        c = _sigmoid(f + 1.0) * c_prev + _sigmoid(i) * np.tanh(j)
        if self.cell_clip is not None:
            c = np.clip(c, -self.cell_clip, self.cell_clip)
        m = _sigmoid(o) * np.tanh(c)
        if w_p is not None:
            m = m @ w_p
            if self.proj_clip is not None:
                m = np.clip(m, -self.proj_clip, self.proj_clip)
        return c.astype(self.dtype), m.astype(self.dtype)

    def run_lstm(self, inputs: np.ndarray, lengths: np.ndarray,
                 direction: str) -> List[np.ndarray]:
        """Run one direction's stacked LSTM over the first ``lengths`` positions.

        inputs: (b, N, P) token embeddings, in the direction's reading order
        (the caller reverses them for the backward LM); lengths: (b,).
        Starts from state rows [:b] and writes the final states back there.
        Returns one (b, N, P) output per layer, zeros past each length.
        """
        b, N, _ = inputs.shape
        x = inputs
        outputs = []
        for layer, cell in enumerate(self.cells[direction]):
            state = self.states[direction][layer]
            c, h = state[0][:b].copy(), state[1][:b].copy()
            out = None
            for t in range(N):
                active = (t < lengths)[:, None]  # (b, 1)
                c_new, m = self.lstm_step(x[:, t], c, h, cell)
                y = m + x[:, t] if (self.use_skip_connections and layer > 0) else m
                if out is None:
                    out = np.zeros((b, N, y.shape[1]), self.dtype)
                out[:, t] = np.where(active, y, 0.0)
                c = np.where(active, c_new, c)
                h = np.where(active, m, h)
            if out is None:
                out = np.zeros((b, N, h.shape[1]), self.dtype)
            state[0][:b], state[1][:b] = c, h
            outputs.append(out)
            x = out
        return outputs

    # ---------------------------------------------------------------- model

    def __call__(self, ids: np.ndarray) -> dict:
        """Run the biLM on one batch and update the states.

        ids: (B, T + 2, C) char ids (char model) or (B, T + 2) token ids,
        +1 shifted, begin/end included, 0 = padding.

        Returns a dict:
            token_embeddings (B, T + 2, P): for every position, padding too;
            lengths (B,) int: real positions minus 2 (begin/end excluded);
            mask (B, T) bool;
            lm_embeddings (B, L + 1, T, 2P): layer 0 = [e, e], layer l =
                [forward_l, backward_l], begin/end removed.  Past a length
                layer 0 holds whatever the original's begin/end removal leaves
                there (meaningless) and the LSTM layers hold zeros.
        """
        ids = np.asarray(ids)
        expected_ndim = 3 if self.is_char_model else 2
        if ids.ndim != expected_ndim:
            raise ValueError(f"ids must have {expected_ndim} dims, got {ids.shape}")
        b = ids.shape[0]
        if b > self.max_batch_size:
            raise ValueError(f"batch of {b} > max_batch_size {self.max_batch_size}")

        real = ids > 0 if ids.ndim == 2 else (ids > 0).any(axis=2)  # (B, T + 2)
        n = real.sum(axis=1)  # real positions, begin/end included
        emb = self.token_embeddings(ids)  # (B, T + 2, P)

        forward = self.run_lstm(emb, n, "forward")
        backward = [reverse_sequence(out, n) for out in
                    self.run_lstm(reverse_sequence(emb, n), n, "backward")]
        layers = [np.concatenate([emb, emb], axis=2)]
        layers += [np.concatenate([fw, bw], axis=2) for fw, bw in zip(forward, backward)]

        # Remove begin/end the way the original does: drop position 0, then
        # drop the end token by reversing within the length.
        wo_bos_eos = []
        for layer in layers:  # (B, T + 2, 2P)
            x = reverse_sequence(layer[:, 1:], n - 1)[:, 1:]
            wo_bos_eos.append(reverse_sequence(x, n - 2))  # (B, T, 2P)
        return {
            "token_embeddings": emb,
            "lengths": (n - 2).astype(np.int32),
            "mask": real[:, 1:-1] & real[:, 2:],
            "lm_embeddings": np.stack(wo_bos_eos, axis=1),
        }
