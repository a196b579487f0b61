"""Held-out perplexity of a training checkpoint (the original's ``test``)."""
import logging

import numpy as np
import tensorflow.compat.v1 as tf

from . import precision, sessions
from .checkpoints import check_vocabulary, load_save_dir, restore, training_parameters
from .errors import InputError, flag
from .lm_dataset import training_data
from .lm_graph import SCOPE, LanguageModel, feed
from .options import ModelOptions

logger = logging.getLogger(__name__)


def test(options, ckpt_file, data, batch_size=256):
    """Perplexity of a checkpoint on ``data`` (test mode), full softmax, states carried.

    Runs one token per row per step (``unroll_steps`` 1) as the original did; the final
    incomplete batch is not counted. Returns exp(mean batch loss).
    """
    config = ModelOptions.of(options, training=True).replace(batch_size=batch_size, unroll_steps=1)
    with tf.Graph().as_default():
        with tf.variable_scope(SCOPE):
            model = LanguageModel(config, is_training=False)
        with tf.Session(config=sessions.config()) as sess, precision.exact():
            sess.run(tf.local_variables_initializer())
            restore(sess, ckpt_file, tf.global_variables(), training_parameters(config))
            losses = [sess.run(model.total_loss, feed([model], batch)) for batch in data.iter_batches(batch_size, 1)]
    if not losses:
        raise InputError(f"the test data has fewer than {flag('batch_size', '--batch_size')} = {batch_size} token "
                         f"streams' worth of tokens; use a smaller one")
    perplexity = float(np.exp(np.mean(losses)))
    logger.info("perplexity %.3f over %d batches", perplexity, len(losses))
    return perplexity


def evaluate_checkpoint(save_dir, test_prefix, vocab_file, batch_size=256):
    """Perplexity of the latest checkpoint of ``save_dir`` on the files of ``test_prefix``."""
    config, ckpt_file = load_save_dir(save_dir)
    data = training_data(config, vocab_file, test_prefix, test=True)
    check_vocabulary(save_dir, data.vocab, config)
    return test(config, ckpt_file, data, batch_size)
