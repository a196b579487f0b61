"""options.json: reading and checking a model's hyperparameters.

Options stay plain dicts (as in the original library, and as ``train`` takes them);
this module reads them and checks every key the network uses, so a bad file fails
here with a message naming the key instead of deep inside TensorFlow.
"""
import json
import os

from .errors import InvalidNumberOfCharacters, OptionsError

# n_characters: 256 bytes + 5 specials = 261 in training; inference adds id 0 (padding).
N_CHARACTERS_TRAINING = 261
N_CHARACTERS_INFERENCE = 262
ACTIVATIONS = ("relu", "tanh")


def load_options(options_file):
    """Read an options.json file into a dict (not yet checked)."""
    if not os.path.isfile(options_file):
        raise OptionsError(f"{options_file}: options file not found")
    try:
        with open(options_file, encoding="utf-8") as fin:
            options = json.load(fin)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OptionsError(f"{options_file}: not valid JSON ({err})") from None
    if not isinstance(options, dict):
        raise OptionsError(f"{options_file}: expected a JSON object at the top level, found {type(options).__name__}")
    return options


def require(options, path, source, kind, required=True, minimum=None, nullable=False):
    """Look up a dotted key path, checking its type (and lower bound).

    A missing optional key gives None; an explicit null is accepted only if ``nullable``.
    """
    node = options
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            if not required:
                return None
            raise OptionsError(f"{source}: missing key '{path}'")
        node = node[part]
    if node is None and nullable:
        return None
    ok = isinstance(node, kind) and not (kind is not bool and isinstance(node, bool))
    if not ok:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise OptionsError(f"{source}: key '{path}' is {node!r}; expected {names}")
    if minimum is not None and node < minimum:
        raise OptionsError(f"{source}: key '{path}' is {node!r}; expected at least {minimum}")
    return node


def check_options(options, source="options", training=False):
    """Check the keys the network reads; return ``options`` unchanged.

    Args:
        options: the options dict.
        source: the file (or a description) named in error messages.
        training: check the training rules (``n_characters`` 261) instead of the
            inference ones (262).
    Raises:
        OptionsError: a key is missing, mistyped or impossible.
    """
    if not isinstance(options, dict):
        raise OptionsError(f"{source}: options must be a dict, found {type(options).__name__}")
    dim = require(options, "lstm.dim", source, int, minimum=1)
    projection_dim = require(options, "lstm.projection_dim", source, int, required=False, minimum=1, nullable=True)
    if projection_dim is None:
        projection_dim = dim
    if projection_dim > dim:
        raise OptionsError(
            f"{source}: lstm.projection_dim ({projection_dim}) is larger than lstm.dim ({dim}); "
            f"the LSTM output is projected down, so expected projection_dim <= dim"
        )
    require(options, "lstm.n_layers", source, int, required=False, minimum=1)
    require(options, "lstm.cell_clip", source, (int, float), required=False, minimum=0, nullable=True)
    require(options, "lstm.proj_clip", source, (int, float), required=False, minimum=0, nullable=True)
    require(options, "lstm.use_skip_connections", source, bool, required=False)
    if "char_cnn" in options:
        _check_char_cnn(options, source, training)
    return options


def _check_char_cnn(options, source, training):
    require(options, "char_cnn.embedding.dim", source, int, minimum=1)
    max_chars = require(options, "char_cnn.max_characters_per_token", source, int, minimum=3)
    require(options, "char_cnn.n_highway", source, int, required=False, minimum=0)
    filters = require(options, "char_cnn.filters", source, list)
    if not filters:
        raise OptionsError(f"{source}: key 'char_cnn.filters' is empty; expected a list of [width, n_filters]")
    for k, spec in enumerate(filters):
        valid = (
            isinstance(spec, (list, tuple)) and len(spec) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in spec)
        )
        if not valid:
            raise OptionsError(
                f"{source}: key 'char_cnn.filters[{k}]' is {spec!r}; expected [width, n_filters] of positive ints"
            )
        if spec[0] > max_chars:
            raise OptionsError(
                f"{source}: key 'char_cnn.filters[{k}]' has width {spec[0]}, wider than "
                f"max_characters_per_token ({max_chars})"
            )
    activation = require(options, "char_cnn.activation", source, str)
    if activation not in ACTIVATIONS:
        raise OptionsError(f"{source}: key 'char_cnn.activation' is {activation!r}; expected one of {ACTIVATIONS}")
    n_characters = require(options, "char_cnn.n_characters", source, int)
    expected = N_CHARACTERS_TRAINING if training else N_CHARACTERS_INFERENCE
    if n_characters != expected:
        raise InvalidNumberOfCharacters(
            f"{source}: key 'char_cnn.n_characters' is {n_characters}; expected {expected} "
            f"{'in training' if training else 'at inference'} (training uses 261 character ids; "
            f"inference adds id 0 for padding, so set 262 in the options.json used with a weight file)"
        )


def projection_dim(options):
    """The token-embedding and LSTM output size P."""
    return options["lstm"].get("projection_dim") or options["lstm"]["dim"]


def n_lstm_layers(options):
    return options["lstm"].get("n_layers") or 1


def n_cnn_filters(options):
    """F: the total number of character-CNN filters."""
    return sum(n for _, n in options["char_cnn"]["filters"])


def uses_char_cnn(options):
    return "char_cnn" in options
