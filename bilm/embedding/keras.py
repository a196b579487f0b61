"""ELMo as a Keras 3 layer for TF2 code: eager, ``tf.function`` and ``model.fit``.

    import keras
    from bilm.keras import ELMo

    tokens = keras.Input(shape=(None,), dtype="string")     # padded with ""
    vectors = ELMo("default")(tokens)                       # (B, T, 2P), Keras mask: the real tokens
    pooled = keras.layers.GlobalAveragePooling1D()(vectors)
    model = keras.Model(tokens, keras.layers.Dense(2, activation="softmax")(pooled))

The layer runs ``bilm.core.network`` (the one definition of the biLM that the graph API
runs too) on Keras weights made from ``bilm.core.layout``: the pretrained weights are read
from the files once, when the layer is made, and the warm-up states computed then
(eagerly). Inputs are padded tokens (strings; ``""`` is padding, at the end, the front
(Keras' ``pad_sequences``) or anywhere: each row's real tokens are read in order as one
sentence and their vectors put back at their positions), as TF Hub ELMo's ``tokens``
signature took, or character ids as ``Batcher`` makes them. Outputs: the ELMo mix
(trainable softmax weights and gamma, as ``weight_layers``), one layer, or all layers;
padding positions are zeros and ``compute_mask`` gives Keras the real tokens.

Under a mixed-precision Keras policy (``mixed_bfloat16``, ``mixed_float16``) the matrix
products and convolutions take the compute type (as ``--precision bfloat16`` does, see
``bilm.core.precision``) and the output is in the compute type; the weights stay float32.
A saved model stores a model name as the name (resolved again when it is loaded, in any
install) and files as their paths.
"""
import keras
import numpy as np
import tensorflow as tf

from ..core import layout, network, precision, states, weights
from ..core.batching import Batcher
from ..core.elmo import mix_layers
from ..errors import InputError
from .export import token_char_ids_op
from ..core.inference import CNN_CHUNK
from ..core.options import ModelOptions

OUTPUTS = ("elmo", "top", "average", "all")
INPUTS = ("tokens", "char_ids")


def _compact(tokens):
    """Each row's real tokens (not ``""``) moved to its front, in their order.

    Args:
        tokens: string (B, T).
    Returns:
        the compacted tokens, string (B, T), and int32 (B, T): where each token of
        ``tokens`` is in its compacted row (for padding: a position of no meaning).
    """
    real = tf.cast(tf.not_equal(tokens, ""), tf.int32)
    order = tf.argsort(1 - real, axis=1, stable=True)  # the real positions first, in order
    return tf.gather(tokens, order, batch_dims=1), tf.cumsum(real, axis=1, exclusive=True)


@keras.saving.register_keras_serializable(package="bilm")
class ELMo(keras.layers.Layer):
    """ELMo vectors of tokenized sentences.

    Args:
        model: a model name (``"default"``, the shipped one, or a downloaded one), or
            None with ``options_file`` and ``weight_file``.
        inputs: ``"tokens"``: string (B, T) tokens, ``""`` for padding (anywhere); or
            ``"char_ids"``: int32 (B, T + 2, C) from ``Batcher`` (begin/end included).
        output: ``"elmo"`` (the mix, (B, T, 2P)), ``"top"``, ``"average"``, a layer index,
            or ``"all"`` ((B, n_layers + 1, T, 2P)).
        state_mode: ``"warm"`` (default) or ``"zero"``: where every sentence's LSTM states
            start (``bilm.core.states``); the outputs do not depend on the batch.
        trainable_bilm: let the biLM's weights learn (frozen by default; the mix always learns).
        do_layer_norm: normalise each layer over the real tokens before mixing.
    """

    def __init__(self, model="default", options_file=None, weight_file=None, inputs="tokens", output="elmo",
                 state_mode="warm", trainable_bilm=False, do_layer_norm=False, **kwargs):
        super().__init__(**kwargs)
        if inputs not in INPUTS:
            raise InputError(f"inputs is {inputs!r}; expected one of {INPUTS}")
        if output not in OUTPUTS and not isinstance(output, int):
            raise InputError(f"output is {output!r}; expected one of {OUTPUTS} or a layer index")
        states.check_state_mode(state_mode, allowed=("warm", "zero"))
        if (options_file is None) != (weight_file is None) or (options_file is None and model is None):
            raise InputError("expected a model name, or options_file and weight_file together")
        by_name = options_file is None
        # A model name is saved as the name (found again where the model is loaded), files as paths.
        self.config = dict(model=model if by_name else None, options_file=options_file, weight_file=weight_file,
                           inputs=inputs, output=output, state_mode=state_mode, trainable_bilm=trainable_bilm,
                           do_layer_norm=do_layer_norm)
        if by_name:
            from ..core.download import model_files
            options_file, weight_file, _ = model_files(model)
        self.options = ModelOptions.of(options_file)
        self.options.require_char_input("bilm.keras.ELMo")
        self.parameters = layout.weight_file_parameters(self.options)
        weights.check_weight_file(weight_file, self.options, self.parameters)
        self._values = {name: weights.read_dataset(weight_file, name, param.pad_row)
                        for name, param in self.parameters.items()}
        self._warm = self._warm_states() if state_mode == "warm" else None
        self.supports_masking = True
        self.build(None)  # the weights do not depend on the inputs: made now, eagerly, not in a trace


    def _warm_states(self):
        """The warm-up states, computed now, eagerly, from the weight file's values."""
        batcher = Batcher(None, self.options.max_characters)
        ids = [batcher.batch_sentences([sentence])[0] for sentence in states.warmup_sentences()]
        params = {name: tf.constant(value) for name, value in self._values.items()}

        def embed(char_ids, params):
            return network.char_cnn_embedding(char_ids, self.options, params, distinct=True, chunk=CNN_CHUNK)

        finals = states.warm_up(self.options, params, embed, ids)
        return [[tuple(np.asarray(v) for v in final) for final in direction] for direction in finals]

    def build(self, input_shape=None):
        self.params = {}
        for name, param in self.parameters.items():
            self.params[name] = self.add_weight(  # Keras names have no "/"
                name=name.replace("/", "."), shape=param.shape,
                initializer=keras.initializers.Constant(self._values[name]), trainable=self.config["trainable_bilm"],
                autocast=False)  # float32 under a mixed policy too: `precision` casts what runs reduced
        self._values = None  # held once, in the weights
        start = None
        if self._warm is not None:
            start = [[tuple(self.add_weight(name=f"warm_{kind}_{d}_{layer}", shape=value.shape,
                                            initializer=keras.initializers.Constant(value), trainable=False,
                                            autocast=False)
                            for kind, value in zip("ch", final)) for layer, final in enumerate(direction)]
                     for d, direction in enumerate(self._warm)]
        self.start = start
        n_layers = self.options.n_layers + 1
        self.mix = self.add_weight(name="ELMo_W", shape=(n_layers,), initializer="zeros", autocast=False)
        self.gamma = self.add_weight(name="ELMo_gamma", shape=(1,), initializer="ones", autocast=False)
        super().build(input_shape)

    def _char_ids(self, inputs):
        if self.config["inputs"] == "char_ids":
            return tf.cast(inputs, tf.int32)
        tokens = tf.convert_to_tensor(inputs)
        lengths = tf.reduce_sum(tf.cast(tf.not_equal(tokens, ""), tf.int32), axis=1)
        return token_char_ids_op(tokens, lengths, self.options.max_characters)

    def language_model(self, inputs):
        """The biLM's outputs: ``lm_embeddings`` (B, L, T, 2P), ``mask`` (B, T), ``lengths`` (B,).

        Token inputs may have padding anywhere: the real tokens of each row are moved to
        its front (in order), run as one sentence, and their outputs moved back to the
        tokens' positions; ``mask`` is then the real tokens (values at padding are arbitrary).
        """
        tokens = positions = None
        if self.config["inputs"] == "tokens":
            tokens = tf.convert_to_tensor(inputs)
            inputs, positions = _compact(tokens)
        ids = self._char_ids(inputs)
        params = precision.reduced_parameters(
            {name: tf.convert_to_tensor(value) for name, value in self.params.items()}, self.parameters,
            self._precision())
        embedding = network.char_cnn_embedding(ids, self.options, params, distinct=True, chunk=CNN_CHUNK)
        policy = states.Zero(self.options) if self.start is None else states.Given(
            self.options, [[tuple(tf.convert_to_tensor(v) for v in final) for final in d] for d in self.start])
        ops = network.language_model(embedding, network.sentence_lengths(ids), policy, self.options, params)
        if tokens is not None:
            ops["lm_embeddings"] = tf.gather(ops["lm_embeddings"], positions, axis=2, batch_dims=1)
            ops["mask"] = tf.not_equal(tokens, "")
        return ops

    def _precision(self):
        """The ``bilm.core.precision`` of the layer's dtype policy: float32, or bfloat16/float16 (mixed)."""
        compute = keras.backend.standardize_dtype(self.compute_dtype)
        return compute if compute in ("bfloat16", "float16") else "float32"

    def call(self, inputs):
        ops = self.language_model(inputs)
        return tf.cast(self._vectors(ops["lm_embeddings"], ops["mask"]), self.compute_dtype)

    def _vectors(self, layers, mask):
        """The ``output`` asked for, zero at padding: (B, T, 2P), or (B, L, T, 2P) for ``"all"``."""
        output = self.config["output"]
        if output == "all":
            return layers * tf.cast(mask, tf.float32)[:, None, :, None]
        if output == "elmo":
            vectors = mix_layers(layers, mask, tf.convert_to_tensor(self.mix), tf.convert_to_tensor(self.gamma),
                                 self.config["do_layer_norm"])
        elif output == "top":
            vectors = layers[:, -1]
        elif output == "average":
            vectors = tf.reduce_mean(layers, axis=1)
        else:
            vectors = layers[:, output]
        return vectors * tf.cast(mask, tf.float32)[..., None]

    def compute_mask(self, inputs, previous_mask=None):
        """bool (B, T): True at real tokens (keras.ops: also on symbolic inputs)."""
        if self.config["inputs"] == "char_ids":
            return keras.ops.any(keras.ops.greater(inputs, 0), axis=2)[:, 2:]  # begin and end dropped
        return keras.ops.not_equal(inputs, "")

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        tokens = input_shape[1] if self.config["inputs"] == "tokens" else (
            None if input_shape[1] is None else input_shape[1] - 2)
        if self.config["output"] == "all":
            return (batch, self.options.n_layers + 1, tokens, self.options.output_dim)
        return (batch, tokens, self.options.output_dim)

    def get_config(self):
        return {**super().get_config(), **self.config}
