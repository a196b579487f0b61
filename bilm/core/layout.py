"""The biLM's parameters: names, shapes, groups and initializers, in one place.

``model_parameters(options)`` lists every parameter of a model. From this one list the
network creates its variables (``bilm.core.network``), weight files are checked, read and
written (``bilm.core.weights``), the token dump picks only the char CNN, and checkpoints
are exported; other naming schemes map onto it here too.

A parameter's ``name`` is its dataset name in the original's HDF5 weight files
(``char_embed``, ``CNN/W_cnn_0``, ``RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0``, ...)
and its variable name under the model's scope (``bilm/`` at inference, ``lm/`` in
training). Shapes: E char embedding dim, F total CNN filters, P ``projection_dim``,
D ``lstm.dim``, V vocabulary size.
"""
from dataclasses import dataclass

from .options import N_CHARACTERS_TRAINING

CHAR_EMBED, CNN, HIGHWAY, CNN_PROJ = "char_embed", "cnn", "highway", "cnn_proj"
CHAR_CNN_GROUPS = (CHAR_EMBED, CNN, HIGHWAY, CNN_PROJ)
TOKEN_EMBEDDING, LSTM, SOFTMAX = "token_embedding", "lstm", "softmax"
TOKEN_EMBEDDING_NAME = "embedding"
INFERENCE_SCOPE, TRAINING_SCOPE = "bilm", "lm"  # the variable scopes the parameters live under


@dataclass(frozen=True)
class Parameter:
    """One parameter of the biLM.

    Attributes:
        name: dataset name in weight files; variable name under the model's scope.
        shape: the variable's shape for these options.
        group: one of the group constants of this module.
        decided_by: the options keys (and values) that decide the shape, for messages.
        init: the training initializer: ``("uniform", low, high)``, ``("normal", std)``,
            ``("glorot",)``, ``("zeros",)`` or ``("constant", value)``.
        pad_row: the variable has one more row than the file holds: a zero row for
            id 0, the padding of the batchers (``char_embed`` at inference, the token
            embedding of a ``dump_token_embeddings`` file).
        direction, layer: of an LSTM parameter (else None).
    """

    name: str
    shape: tuple
    group: str
    decided_by: tuple
    init: tuple
    pad_row: bool = False
    direction: int = None
    layer: int = None

    @property
    def file_shape(self):
        """The shape stored in a weight file (without the padding row)."""
        return ((self.shape[0] - 1,) + self.shape[1:]) if self.pad_row else self.shape

    def explain(self):
        """'lstm.dim = 4096, lstm.projection_dim = 512': what decides the shape."""
        return ", ".join(f"{key} = {value}" for key, value in self.decided_by)


def lstm_names(direction, layer):
    """(kernel, bias, projection) names of one LSTM layer; direction 0 forward, 1 backward."""
    root = f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"
    return f"{root}/W_0", f"{root}/B", f"{root}/W_P_0"


def char_cnn_parameters(options):
    """The char CNN's parameters (char embedding, convolutions, highways, projection)."""
    e, p, f = options.char_embedding_dim, options.projection_dim, options.n_filters
    n_chars = options.n_characters
    filters_key = ("char_cnn.filters", [list(spec) for spec in options.filters])
    embed_key = ("char_cnn.embedding.dim", e)
    params = [Parameter("char_embed", (n_chars, e), CHAR_EMBED, (embed_key,), ("uniform", -1.0, 1.0),
                        pad_row=n_chars > N_CHARACTERS_TRAINING)]
    for i, (width, num) in enumerate(options.filters):
        key = (f"char_cnn.filters[{i}]", [width, num])
        w_init = ("uniform", -0.05, 0.05) if options.activation == "relu" else ("normal", (1.0 / (width * e)) ** 0.5)
        params.append(Parameter(f"CNN/W_cnn_{i}", (1, width, e, num), CNN, (key, embed_key), w_init))
        params.append(Parameter(f"CNN/b_cnn_{i}", (num,), CNN, (key,), ("zeros",)))
    for k in range(options.n_highway):
        for gate, bias_init in (("carry", ("constant", -2.0)), ("transform", ("zeros",))):
            params.append(Parameter(f"CNN_high_{k}/W_{gate}", (f, f), HIGHWAY, (filters_key,),
                                    ("normal", (1.0 / f) ** 0.5)))
            params.append(Parameter(f"CNN_high_{k}/b_{gate}", (f,), HIGHWAY, (filters_key,), bias_init))
    if f != p:
        proj_key = (options.projection_dim_key, p)
        params.append(Parameter("CNN_proj/W_proj", (f, p), CNN_PROJ, (filters_key, proj_key),
                                ("normal", (1.0 / f) ** 0.5)))
        params.append(Parameter("CNN_proj/b_proj", (p,), CNN_PROJ, (proj_key,), ("zeros",)))
    return params


def lstm_parameters(options, direction, layer):
    """One LSTM layer: kernel ``[x, h] -> 4 gates`` (2P, 4D), bias (4D,), projection (D, P) when P < D."""
    d, p = options.lstm_dim, options.projection_dim
    keys = ((options.projection_dim_key, p), ("lstm.dim", d))
    kernel, bias, projection = lstm_names(direction, layer)
    where = dict(direction=direction, layer=layer)
    params = [Parameter(kernel, (p + p, 4 * d), LSTM, keys, ("glorot",), **where),
              Parameter(bias, (4 * d,), LSTM, keys[1:], ("zeros",), **where)]
    if p < d:
        params.append(Parameter(projection, (d, p), LSTM, keys[::-1], ("glorot",), **where))
    return params


def token_embedding_parameter(options, n_rows, pad_row=False):
    """The token-input embedding (V, P) (``n_rows`` V; V + 1 with the padding row)."""
    return Parameter(TOKEN_EMBEDDING_NAME, (n_rows, options.projection_dim), TOKEN_EMBEDDING,
                     (("n_tokens_vocab", n_rows - pad_row), (options.projection_dim_key, options.projection_dim)),
                     ("uniform", -1.0, 1.0), pad_row=pad_row)


def softmax_parameters(options):
    """The training softmax: W (V, P) (absent when shared with the token embedding) and b (V,)."""
    v, p = options.n_tokens_vocab, options.projection_dim
    params = []
    if not options.share_embedding_softmax:
        params.append(Parameter("softmax/W", (v, p), SOFTMAX, (("n_tokens_vocab", v), (options.projection_dim_key, p)),
                                ("normal", 1.0 / p ** 0.5)))
    params.append(Parameter("softmax/b", (v,), SOFTMAX, (("n_tokens_vocab", v),), ("zeros",)))
    return params


def model_parameters(options, n_directions=2, token_rows=None, softmax=False):
    """{name: Parameter} of a model, in creation order.

    Args:
        options: ``ModelOptions``.
        n_directions: LSTM directions (a weight file has 2; a forward-only training run 1).
        token_rows: for a token-input model, the rows of its embedding (None: none listed).
        softmax: include the training softmax.
    """
    params = char_cnn_parameters(options) if options.char_input else []
    if token_rows is not None:
        params.append(token_embedding_parameter(options, token_rows))
    for direction in range(n_directions):
        for layer in range(options.n_layers):
            params += lstm_parameters(options, direction, layer)
    if softmax:
        params += softmax_parameters(options)
    return {param.name: param for param in params}


def weight_file_parameters(options):
    """{name: Parameter} of the datasets a weight file holds for ``options`` (both directions, no softmax).

    Token-input models list only their LSTMs: their embedding is in the file of
    ``dump_token_embeddings``.
    """
    return model_parameters(options, n_directions=2)


# -- other naming schemes ----------------------------------------------------------------------------

_ORIGINAL_LSTM = {"W_0": "kernel", "B": "bias", "W_P_0": "projection/kernel"}


def original_checkpoint_name(name):
    """A parameter's name in the original library's training graph (under ``lm/``).

    The original built its LSTMs with ``static_rnn`` and TensorFlow's ``LSTMCell``:
    ``RNN_0/RNN/MultiRNNCell/Cell1/LSTMCell/W_0`` is ``RNN_0/rnn/multi_rnn_cell/cell_1/lstm_cell/kernel``
    there (``B``: ``bias``, ``W_P_0``: ``projection/kernel``); every other name is the same.
    """
    parts = name.split("/")
    if len(parts) == 6 and parts[1:3] == ["RNN", "MultiRNNCell"] and parts[3].startswith("Cell"):
        return f"{parts[0]}/rnn/multi_rnn_cell/cell_{parts[3][4:]}/lstm_cell/{_ORIGINAL_LSTM[parts[5]]}"
    return name


# How each checkpoint layout names a parameter: bilm's training graph uses the weight file's names.
CHECKPOINT_NAMINGS = {"bilm": lambda name: name, "original": original_checkpoint_name}
