"""Export a biLM as a TensorFlow SavedModel with TF Hub ELMo-like signatures.

The SavedModel holds the weights, the character encoding of tokens (in the graph, so
it takes strings) and an ELMo mix (``ELMo_W``, ``ELMo_gamma`` as variables). A TF2
user loads it in eager mode::

    elmo = tf.saved_model.load("elmo_savedmodel")
    out = elmo.signatures["default"](tf.constant(["the cat sat", "hello"]))
    out["elmo"]     # (2, 3, 2P), out["default"]: (2, 2P) mean over the real tokens
    out = elmo.signatures["tokens"](tokens=tf.constant([["the", "cat", ""]]),
                                    sequence_len=tf.constant([2]))

Signatures:

- ``default``: ``strings`` (B,) of whitespace-separated tokens (split as ``bilm embed``
  splits a line: on any Unicode whitespace) -> ``elmo`` (B, T, 2P), ``default`` (B, 2P);
- ``tokens``: ``tokens`` (B, T) strings (padding ignored past ``sequence_len``) and
  ``sequence_len`` (B,) int32, one length in [0, T] per row (checked: else an
  ``InvalidArgumentError`` naming ``sequence_len``) -> ``word_emb`` (B, T, P),
  ``lstm_outputs1`` .. ``lstm_outputs{L}`` (B, T, 2P), ``elmo`` (B, T, 2P), ``default`` (B, 2P).

An empty batch gives empty outputs.

Every sentence starts from the same LSTM states (``state_mode`` ``"warm"`` or
``"zero"``), so outputs do not depend on the batch. Values past a sentence's length
are zeros.
"""
import logging
import os
import shutil
import sys

import tensorflow.compat.v1 as tf

from ..core import precision, sessions, states
from ..core.elmo import weight_layers
from ..errors import OutputExistsError, flag
from ..core.inference import BidirectionalLanguageModel
from ..core.options import ModelOptions
from ..core.files import OutputLock, check_not_an_input, check_output
from ..core.pooling import masked_mean
from ..core.vocabulary import BOS_CHAR, BOW_CHAR, EOS_CHAR, EOW_CHAR, PAD_CHAR

logger = logging.getLogger(__name__)


def token_char_ids_op(tokens, lengths, max_chars):
    """Character ids in the graph, as ``Batcher`` makes them.

    Args:
        tokens: string (B, T); entries at or past ``lengths`` are ignored.
        lengths: int32 (B,) tokens per sentence.
        max_chars: ``max_characters_per_token``.
    Returns:
        int32 (B, T + 2, max_chars): begin, the tokens, end, then zeros (padding).
    """
    batch, width = tf.shape(tokens)[0], tf.shape(tokens)[1]
    n_bytes = max_chars - 2
    cut = tf.strings.substr(tokens, 0, n_bytes, unit="BYTE")
    token_bytes = tf.raw_ops.DecodePaddedRaw(input_bytes=cut, fixed_length=n_bytes, out_type=tf.uint8)  # zero-padded
    n_token_bytes = tf.strings.length(cut)[..., None]  # (B, T, 1)
    position = tf.range(n_bytes)[None, None, :]
    body = tf.where_v2(position < n_token_bytes, tf.cast(token_bytes, tf.int32),
                    tf.where_v2(tf.equal(position, n_token_bytes), EOW_CHAR, PAD_CHAR))
    last = tf.where_v2(tf.equal(n_token_bytes, n_bytes), EOW_CHAR, PAD_CHAR)  # the end-of-word of a full-length token
    words = tf.concat([tf.fill([batch, width, 1], BOW_CHAR), body, last], axis=2)

    def boundary(mark):
        row = tf.constant([BOW_CHAR, mark, EOW_CHAR] + [PAD_CHAR] * (max_chars - 3), tf.int32)
        return tf.tile(row[None, None, :], [batch, 1, 1])

    # Put </S> right after each sentence's last token: shift rows by one where t >= length.
    with_begin = tf.concat([boundary(BOS_CHAR), words, tf.zeros([batch, 1, max_chars], tf.int32)], axis=1)
    t = tf.range(width + 2)[None, :, None]
    ends = lengths[:, None, None] + 1
    char_ids = tf.where_v2(t < ends, with_begin + 1, tf.where_v2(tf.equal(t, ends), boundary(EOS_CHAR) + 1, 0))
    return char_ids


def split_on_whitespace(strings):
    """string (B,) -> ragged (B, None) tokens, split as ``str.split()`` splits (``embed`` does):
    on runs of any Unicode whitespace (U+00A0, U+2009, U+3000...), not only ASCII's."""
    spaces = "".join(f"\\x{{{c:x}}}" for c in range(sys.maxunicode + 1) if chr(c).isspace())  # RE2 syntax
    return tf.strings.split(tf.strings.regex_replace(strings, f"[{spaces}]", " "), result_type="RaggedTensor")


def checked_lengths(tokens, sequence_len):
    """``sequence_len`` (B,) once checked against ``tokens`` (B, T): one length per row, each in [0, T].

    A wrong one fails the call with an ``InvalidArgumentError`` whose line
    ``assertion failed: [sequence_len: expected ...] [...]`` says what was expected and given.
    """
    rows, width = tf.shape(tokens)[0], tf.shape(tokens)[1]
    checks = [
        tf.debugging.Assert(tf.equal(tf.size(sequence_len), rows), [
            "sequence_len: expected one length per row of tokens; lengths:", tf.size(sequence_len), "rows:", rows]),
        tf.debugging.Assert(tf.reduce_all((sequence_len >= 0) & (sequence_len <= width)), [
            "sequence_len: expected lengths in [0, the width of tokens]; width:", width, "sequence_len:",
            sequence_len], summarize=10),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(sequence_len)


def _outputs(model, tokens, lengths, max_chars):
    """The signature outputs for a padded batch of tokens."""
    ops = model(token_char_ids_op(tokens, lengths, max_chars))
    mask = ops["mask"]
    zero_padding = tf.cast(mask, tf.float32)[..., None]
    layers = ops["lm_embeddings"]  # (B, L, T, 2P)
    with tf.variable_scope("", reuse=tf.AUTO_REUSE):
        elmo = weight_layers("export", ops)["weighted_op"] * zero_padding
    outputs = {
        "word_emb": ops["token_embeddings"][:, 1:-1] * zero_padding,
        "elmo": elmo,
        "default": masked_mean(elmo, mask),
    }
    for layer in range(1, int(layers.shape[1])):
        outputs[f"lstm_outputs{layer}"] = layers[:, layer] * zero_padding
    return outputs


def export_saved_model(options_file, weight_file, export_dir, state_mode="warm", overwrite=False):
    """Write a SavedModel of the biLM with the ``default`` and ``tokens`` signatures (see the module doc)."""
    options = ModelOptions.of(options_file)
    options.require_char_input("export")
    states.check_state_mode(state_mode, allowed=("warm", "zero"))
    export_dir = export_dir.rstrip("/") or export_dir
    check_not_an_input(export_dir, {"options file": options_file, "weight file": weight_file}, directory=True)
    if not os.path.exists(export_dir):
        check_output(export_dir)
    with OutputLock(export_dir):
        if os.path.exists(export_dir) and not overwrite:
            raise OutputExistsError(f"{export_dir}: already exists; pass {flag('overwrite=True', '--overwrite')} "
                                    f"to replace it")
        temporary = export_dir + ".tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        try:
            _build_and_save(options, weight_file, temporary, state_mode)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        if os.path.exists(export_dir):  # keep the earlier export until the new one is in place
            previous = export_dir + ".old"
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(export_dir, previous)
            os.replace(temporary, export_dir)
            shutil.rmtree(previous)
        else:
            os.replace(temporary, export_dir)
    logger.info("exported %s to %s (signatures: default, tokens)", weight_file, export_dir)


def _build_and_save(options, weight_file, export_dir, state_mode):
    max_chars = options.max_characters
    with tf.Graph().as_default(), sessions.signals_held():  # the whole job: one TensorFlow call after another
        model = BidirectionalLanguageModel(options, weight_file, state_mode=state_mode)
        strings = tf.placeholder(tf.string, [None], name="strings")
        split = split_on_whitespace(strings)  # (B, None) tokens
        default = _outputs(model, split.to_tensor(""), tf.cast(split.row_lengths(), tf.int32), max_chars)
        tokens = tf.placeholder(tf.string, [None, None], name="tokens")
        sequence_len = tf.placeholder(tf.int32, [None], name="sequence_len")
        by_tokens = _outputs(model, tokens, checked_lengths(tokens, sequence_len), max_chars)
        info = tf.saved_model.utils.build_tensor_info

        def signature(inputs, outputs):
            return tf.saved_model.signature_def_utils.build_signature_def(
                {k: info(v) for k, v in inputs.items()}, {k: info(v) for k, v in outputs.items()},
                tf.saved_model.signature_constants.PREDICT_METHOD_NAME)

        signatures = {
            "default": signature({"strings": strings}, {k: default[k] for k in ("elmo", "default")}),
            "tokens": signature({"tokens": tokens, "sequence_len": sequence_len}, by_tokens),
        }
        with tf.Session(config=sessions.config()) as sess, precision.exact():
            sess.run(tf.global_variables_initializer())
            builder = tf.saved_model.Builder(export_dir)
            builder.add_meta_graph_and_variables(sess, [tf.saved_model.tag_constants.SERVING],
                                                 signature_def_map=signatures, strip_default_attrs=True)
            builder.save()
