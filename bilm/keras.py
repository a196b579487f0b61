"""ELMo as a Keras 3 layer for TF2 code: eager, ``tf.function`` and ``model.fit``.

    import keras
    from bilm.keras import ELMo

    tokens = keras.Input(shape=(None,), dtype="string")     # padded with ""
    vectors = ELMo("default")(tokens)                       # (B, T, 2P), Keras mask: the real tokens
    pooled = keras.layers.GlobalAveragePooling1D()(vectors)
    model = keras.Model(tokens, keras.layers.Dense(2, activation="softmax")(pooled))

The layer runs ``bilm.network`` (the one definition of the biLM that the graph API
runs too) on Keras weights made from ``bilm.layout``: the pretrained weights are read
from the files once, when the layer is made, and the warm-up states computed then
(eagerly). Inputs are padded tokens (strings; ``""`` is padding), as TF Hub ELMo's
``tokens`` signature took, or character ids as ``Batcher`` makes them. Outputs: the
ELMo mix (trainable softmax weights and gamma, as ``weight_layers``), one layer, or
all layers; values past a sentence's end are zeros and ``compute_mask`` gives Keras
the real tokens.
"""
import keras
import numpy as np
import tensorflow as tf

from . import layout, network, states, weights
from .batching import Batcher
from .elmo import mix_layers
from .errors import InputError
from .export import token_char_ids_op
from .inference import CNN_CHUNK
from .options import ModelOptions

OUTPUTS = ("elmo", "top", "average", "all")
INPUTS = ("tokens", "char_ids")


@keras.saving.register_keras_serializable(package="bilm")
class ELMo(keras.layers.Layer):
    """ELMo vectors of tokenized sentences.

    Args:
        model: a model name (``"default"``, the shipped one, or a downloaded one), or
            None with ``options_file`` and ``weight_file``.
        inputs: ``"tokens"``: string (B, T) tokens, ``""`` after a sentence's end; or
            ``"char_ids"``: int32 (B, T + 2, C) from ``Batcher`` (begin/end included).
        output: ``"elmo"`` (the mix, (B, T, 2P)), ``"top"``, ``"average"``, a layer index,
            or ``"all"`` ((B, n_layers + 1, T, 2P)).
        state_mode: ``"warm"`` (default) or ``"zero"``: where every sentence's LSTM states
            start (``bilm.states``); the outputs do not depend on the batch.
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
        if options_file is None or weight_file is None:
            from .download import model_files
            options_file, weight_file, _ = model_files(model)
        self.config = dict(model=model, options_file=options_file, weight_file=weight_file, inputs=inputs,
                           output=output, state_mode=state_mode, trainable_bilm=trainable_bilm,
                           do_layer_norm=do_layer_norm)
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
                initializer=keras.initializers.Constant(self._values[name]), trainable=self.config["trainable_bilm"])
        self._values = None  # held once, in the weights
        start = None
        if self._warm is not None:
            start = [[tuple(self.add_weight(name=f"warm_{kind}_{d}_{layer}", shape=value.shape,
                                            initializer=keras.initializers.Constant(value), trainable=False)
                            for kind, value in zip("ch", final)) for layer, final in enumerate(direction)]
                     for d, direction in enumerate(self._warm)]
        self.start = start
        n_layers = self.options.n_layers + 1
        self.mix = self.add_weight(name="ELMo_W", shape=(n_layers,), initializer="zeros")
        self.gamma = self.add_weight(name="ELMo_gamma", shape=(1,), initializer="ones")
        super().build(input_shape)

    def _char_ids(self, inputs):
        if self.config["inputs"] == "char_ids":
            return tf.cast(inputs, tf.int32)
        tokens = tf.convert_to_tensor(inputs)
        lengths = tf.reduce_sum(tf.cast(tf.not_equal(tokens, ""), tf.int32), axis=1)
        return token_char_ids_op(tokens, lengths, self.options.max_characters)

    def language_model(self, inputs):
        """The biLM's outputs: ``lm_embeddings`` (B, L, T, 2P), ``mask`` (B, T), ``lengths`` (B,)."""
        ids = self._char_ids(inputs)
        params = {name: tf.convert_to_tensor(value) for name, value in self.params.items()}
        embedding = network.char_cnn_embedding(ids, self.options, params, distinct=True, chunk=CNN_CHUNK)
        policy = states.Zero(self.options) if self.start is None else states.Given(
            self.options, [[tuple(tf.convert_to_tensor(v) for v in final) for final in d] for d in self.start])
        return network.language_model(embedding, network.sentence_lengths(ids), policy, self.options, params)

    def call(self, inputs):
        ops = self.language_model(inputs)
        layers, mask = ops["lm_embeddings"], ops["mask"]
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
