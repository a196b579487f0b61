"""A model's options (options.json), loaded and checked once: ``ModelOptions``.

The options stay a plain JSON dict on disk and in the public API (the original's
``train(options, ...)`` takes one); ``ModelOptions`` wraps a checked copy and answers
everything the code needs to know about the model: sizes, defaults, whether it reads
characters, the 261/262 character-count rule, and the training settings. The original
ELMo hyperparameters are here too (``ELMO_ORIGINAL``), once.

In the docstrings: C ``max_characters_per_token``, E char embedding dim, F total CNN
filters, P ``projection_dim``, D ``lstm.dim``, L LSTM layers.
"""
import copy
import json
import math
import os

from ..errors import InvalidNumberOfCharacters, OptionsError, flag
from .text import check_text_file

# Character ids: 256 bytes + 5 specials = 261 in training; inference adds id 0 (padding).
N_CHARACTERS_TRAINING = 261
N_CHARACTERS_INFERENCE = 262
ACTIVATIONS = ("relu", "tanh")
DEFAULT_LEARNING_RATE = 0.2  # Adagrad, initial accumulator 1.0 (the original's)
ADAGRAD_INITIAL_ACCUMULATOR = 1.0

# The original ELMo model and training run (bilm-tf's bin/train_elmo.py; Peters et al., 2018).
ELMO_ORIGINAL = {
    "bidirectional": True,
    "char_cnn": {
        "activation": "relu", "embedding": {"dim": 16},
        "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]],
        "max_characters_per_token": 50, "n_characters": N_CHARACTERS_TRAINING, "n_highway": 2,
    },
    "dropout": 0.1,
    "lstm": {"cell_clip": 3, "dim": 4096, "n_layers": 2, "proj_clip": 3, "projection_dim": 512,
             "use_skip_connections": True},
    "all_clip_norm_val": 10.0,
    "n_epochs": 10,
    "batch_size": 128,
    "unroll_steps": 20,
    "n_negative_samples_batch": 8192,
}


def load_options(options_file):
    """Read an options.json file into a dict (not yet checked)."""
    check_text_file(options_file, "options file", OptionsError)
    try:
        with open(options_file, encoding="utf-8") as fin:
            options = json.load(fin, parse_constant=_reject_constant(options_file))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OptionsError(f"{options_file}: not valid JSON ({err})") from None
    if not isinstance(options, dict):
        raise OptionsError(f"{options_file}: expected a JSON object at the top level, found {type(options).__name__}")
    return options


def _reject_constant(source):
    def parse(name):  # NaN, Infinity: not JSON, though Python's json writes and reads them
        raise OptionsError(f"{source}: {name} is not a number JSON allows; expected a finite value")
    return parse


def write_options(options, path, overwrite=True):
    """Write an options dict (or ``ModelOptions``) as JSON, atomically."""
    from .files import atomic_output

    raw = options.to_dict() if isinstance(options, ModelOptions) else options
    with atomic_output(path, overwrite) as temporary, open(temporary, "w", encoding="utf-8") as fout:
        json.dump(raw, fout, indent=1, allow_nan=False)


def require(options, path, source, kind, required=True, minimum=None, nullable=False):
    """Look up a dotted key path, checking its type (and lower bound); numbers must be finite.

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
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(node, kinds) and not (bool not in kinds and isinstance(node, bool))
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise OptionsError(f"{source}: key '{path}' is {node!r}; expected {names}")
    if isinstance(node, float) and not math.isfinite(node):
        raise OptionsError(f"{source}: key '{path}' is {node!r}; expected a finite number")
    if minimum is not None and node < minimum:
        raise OptionsError(f"{source}: key '{path}' is {node!r}; expected at least {minimum}")
    return node


class ModelOptions:
    """A model's options, checked: what the network, the weight files and training read.

    Args:
        options: the options dict (copied; later changes to it are not seen).
        source: the file (or a description) named in error messages.
        training: check the training rules (``n_characters`` 261, the training keys)
            instead of the inference ones (``n_characters`` 262).
    Raises:
        OptionsError: a key is missing, mistyped or impossible (naming the key).
    """

    def __init__(self, options, source="options", training=False):
        if isinstance(options, ModelOptions):
            options = options.to_dict()
        if not isinstance(options, dict):
            raise OptionsError(f"{source}: options must be a dict, found {type(options).__name__}")
        self._raw = copy.deepcopy(options)
        self.source = source
        self.training = training
        self._check_lstm()
        if self.char_input:
            self._check_char_cnn()
        if training:
            self._check_training()

    @classmethod
    def from_file(cls, options_file, training=False):
        return cls(load_options(options_file), str(options_file), training)

    @classmethod
    def of(cls, options, training=False):
        """``options`` as a ``ModelOptions``: a dict, a path to options.json, or one already (kept)."""
        if isinstance(options, ModelOptions) and options.training == training:
            return options
        if isinstance(options, (str, os.PathLike)):
            return cls.from_file(options, training)
        return cls(options, getattr(options, "source", "options"), training)

    def to_dict(self):
        """A deep copy of the options as a plain dict (what options.json holds)."""
        return copy.deepcopy(self._raw)

    def _get(self, path, kind, **kwargs):
        return require(self._raw, path, self.source, kind, **kwargs)

    # -- checks -------------------------------------------------------------------------------------

    def _check_lstm(self):
        dim = self._get("lstm.dim", int, minimum=1)
        projection_dim = self._get("lstm.projection_dim", int, required=False, minimum=1, nullable=True)
        if projection_dim is not None and projection_dim > dim:
            raise OptionsError(
                f"{self.source}: lstm.projection_dim ({projection_dim}) is larger than lstm.dim ({dim}); "
                f"the LSTM output is projected down, so expected projection_dim <= dim")
        self._get("lstm.n_layers", int, required=False, minimum=1)
        self._get("lstm.cell_clip", (int, float), required=False, minimum=0, nullable=True)
        self._get("lstm.proj_clip", (int, float), required=False, minimum=0, nullable=True)
        self._get("lstm.use_skip_connections", bool, required=False)

    def _check_char_cnn(self):
        self._get("char_cnn.embedding.dim", int, minimum=1)
        max_chars = self._get("char_cnn.max_characters_per_token", int, minimum=3)
        self._get("char_cnn.n_highway", int, required=False, minimum=0)
        filters = self._get("char_cnn.filters", list)
        if not filters:
            raise OptionsError(f"{self.source}: key 'char_cnn.filters' is empty; expected a list of [width, n_filters]")
        for k, spec in enumerate(filters):
            valid = (isinstance(spec, (list, tuple)) and len(spec) == 2
                     and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in spec))
            if not valid:
                raise OptionsError(f"{self.source}: key 'char_cnn.filters[{k}]' is {spec!r}; "
                                   f"expected [width, n_filters] of positive ints")
            if spec[0] > max_chars:
                raise OptionsError(f"{self.source}: key 'char_cnn.filters[{k}]' has width {spec[0]}, wider than "
                                   f"max_characters_per_token ({max_chars})")
        activation = self._get("char_cnn.activation", str)
        if activation not in ACTIVATIONS:
            raise OptionsError(f"{self.source}: key 'char_cnn.activation' is {activation!r}; "
                               f"expected one of {ACTIVATIONS}")
        n_characters = self._get("char_cnn.n_characters", int)
        expected = N_CHARACTERS_TRAINING if self.training else N_CHARACTERS_INFERENCE
        if n_characters != expected:
            raise InvalidNumberOfCharacters(
                f"{self.source}: key 'char_cnn.n_characters' is {n_characters}; expected {expected} "
                f"{'in training' if self.training else 'at inference'} (training uses 261 character ids; "
                f"inference adds id 0 for padding, so set 262 in the options.json used with a weight file)")

    def _check_training(self):
        for key in ("batch_size", "unroll_steps", "n_tokens_vocab", "n_epochs", "n_train_tokens"):
            self._get(key, int, minimum=1)
        if self.sample_softmax:
            self._get("n_negative_samples_batch", int, minimum=1)
        dropout = self._get("dropout", (int, float), required=False, minimum=0)
        if dropout is not None and dropout >= 1:
            raise OptionsError(f"{self.source}: key 'dropout' is {dropout}; expected a dropout rate in [0, 1)")
        self._get("all_clip_norm_val", (int, float), required=False, minimum=0, nullable=True)
        for key in ("bidirectional", "sample_softmax", "share_embedding_softmax"):
            self._get(key, bool, required=False)
        learning_rate = self._get("learning_rate", (int, float), required=False, minimum=0)
        if learning_rate == 0:
            raise OptionsError(f"{self.source}: key 'learning_rate' is 0; expected a positive number")
        if self.share_embedding_softmax and self.char_input:
            raise OptionsError(
                f"{self.source}: key 'share_embedding_softmax' needs token input; a character model has no "
                f"token embedding matrix to share with the softmax (remove 'char_cnn' or the option)")
        if self.sample_softmax and self.n_negative_samples > self.n_tokens_vocab:
            raise OptionsError(
                f"{self.source}: key 'n_negative_samples_batch' is {self.n_negative_samples}, more than the "
                f"{self.n_tokens_vocab} tokens of the vocabulary (n_tokens_vocab); expected at most "
                f"{self.n_tokens_vocab} ({flag('n_negative_samples_batch', '--n_negative_samples')})")

    def require_char_input(self, what):
        """Raise unless this is a character model; ``what`` names the job that needs one."""
        if not self.char_input:
            raise OptionsError(f"{self.source}: {what} needs a character model (key 'char_cnn'); this is a "
                               f"token-input model")

    # -- the model ----------------------------------------------------------------------------------

    @property
    def char_input(self):
        """True for a character model (char CNN); False for a token-input model."""
        return "char_cnn" in self._raw

    @property
    def lstm_dim(self):
        """D: the LSTM cell size."""
        return self._raw["lstm"]["dim"]

    @property
    def projection_dim(self):
        """P: the token-embedding and LSTM output size (``lstm.dim`` when absent)."""
        return self._raw["lstm"].get("projection_dim") or self.lstm_dim

    @property
    def projection_dim_key(self):
        """How messages name P: ``lstm.projection_dim``, saying it is ``lstm.dim`` when the options leave it out."""
        if self._raw["lstm"].get("projection_dim"):
            return "lstm.projection_dim"
        return "lstm.projection_dim (absent: lstm.dim)"

    @property
    def n_layers(self):
        return self._raw["lstm"].get("n_layers") or 1

    @property
    def cell_clip(self):
        return self._raw["lstm"].get("cell_clip")

    @property
    def proj_clip(self):
        return self._raw["lstm"].get("proj_clip")

    @property
    def skip_connections(self):
        return bool(self._raw["lstm"].get("use_skip_connections", False))

    @property
    def state_sizes(self):
        """(D, P): the sizes of an LSTM layer's cell state c and output state h."""
        return self.lstm_dim, self.projection_dim

    @property
    def output_dim(self):
        """2P: the size of every biLM layer output."""
        return 2 * self.projection_dim

    @property
    def max_characters(self):
        """C: ``char_cnn.max_characters_per_token``."""
        return self._raw["char_cnn"]["max_characters_per_token"]

    @property
    def n_characters(self):
        return self._raw["char_cnn"]["n_characters"]

    @property
    def char_embedding_dim(self):
        return self._raw["char_cnn"]["embedding"]["dim"]

    @property
    def filters(self):
        """[(width, n_filters)] of the char CNN."""
        return [tuple(spec) for spec in self._raw["char_cnn"]["filters"]]

    @property
    def n_filters(self):
        """F: the total number of char CNN filters."""
        return sum(n for _, n in self.filters)

    @property
    def n_highway(self):
        return self._raw["char_cnn"].get("n_highway") or 0

    @property
    def activation(self):
        return self._raw["char_cnn"]["activation"]

    # -- training -----------------------------------------------------------------------------------

    def _training_value(self, key, default=None):
        return self._raw.get(key, default)

    @property
    def bidirectional(self):
        return bool(self._raw.get("bidirectional", False))

    @property
    def n_directions(self):
        """Directions trained (2 when bidirectional); a weight file for inference always has 2."""
        return 2 if self.bidirectional else 1

    @property
    def batch_size(self):
        return self._raw["batch_size"]

    @property
    def unroll_steps(self):
        return self._raw["unroll_steps"]

    @property
    def n_tokens_vocab(self):
        return self._raw["n_tokens_vocab"]

    @property
    def n_epochs(self):
        return self._raw["n_epochs"]

    @property
    def n_train_tokens(self):
        return self._raw["n_train_tokens"]

    @property
    def dropout(self):
        """The dropout rate in training (0 when absent)."""
        return self._raw.get("dropout") or 0.0

    @property
    def learning_rate(self):
        return self._raw.get("learning_rate", DEFAULT_LEARNING_RATE)

    @property
    def clip_norm(self):
        """The global gradient-norm clip (None: no clipping)."""
        return self._raw.get("all_clip_norm_val") or None

    @property
    def sample_softmax(self):
        return bool(self._raw.get("sample_softmax", True))

    @property
    def n_negative_samples(self):
        return self._raw.get("n_negative_samples_batch")

    @property
    def share_embedding_softmax(self):
        return bool(self._raw.get("share_embedding_softmax", False))

    # -- variants -----------------------------------------------------------------------------------

    def replace(self, training=None, **changes):
        """A copy with top-level keys changed (e.g. ``batch_size``), checked again."""
        raw = self.to_dict()
        raw.update(changes)
        return ModelOptions(raw, self.source, self.training if training is None else training)

    def for_inference(self):
        """These options for use with a weight file: ``n_characters`` 262, training keys kept."""
        raw = self.to_dict()
        if self.char_input:
            raw["char_cnn"]["n_characters"] = N_CHARACTERS_INFERENCE
        return ModelOptions(raw, self.source, training=False)

    def for_training(self):
        """These options for the training graph: ``n_characters`` 261."""
        raw = self.to_dict()
        if self.char_input:
            raw["char_cnn"]["n_characters"] = N_CHARACTERS_TRAINING
        return ModelOptions(raw, self.source, training=True)

    def __eq__(self, other):
        return isinstance(other, ModelOptions) and self._raw == other._raw

    def __repr__(self):
        return f"ModelOptions({self.source!r}, {json.dumps(self._raw, sort_keys=True)})"


def training_options(n_tokens_vocab, n_train_tokens, token_input=False, **changes):
    """Options of a new training run: the original ELMo hyperparameters, then ``changes``.

    ``changes`` are top-level keys (``batch_size=32``) or dotted paths into the nested
    ones (``**{"lstm.dim": 512, "char_cnn.filters": [[1, 32]]}``); None values are
    ignored. ``token_input`` removes the char CNN. Returns a plain dict (not checked).
    """
    options = copy.deepcopy(ELMO_ORIGINAL)
    options.update(n_tokens_vocab=n_tokens_vocab, n_train_tokens=n_train_tokens)
    if token_input:
        del options["char_cnn"]
    for path, value in changes.items():
        if value is None:
            continue
        *parents, leaf = path.split(".")
        node = options
        for part in parents:
            if part not in node:
                if token_input and part == "char_cnn":
                    break
                raise OptionsError(f"no option '{path}'")
            node = node[part]
        else:
            node[leaf] = value
    return options


# Functions of the earlier releases, on dicts.
def check_options(options, source="options", training=False):
    """Check ``options`` (a dict); return it unchanged. See ``ModelOptions``."""
    ModelOptions(options, source, training)
    return options
