"""Held-out perplexity of a training checkpoint (the original's ``test``), the same whatever the batch size.

The held-out text is packed, as in the original, into ``batch_size`` streams read one
token per step (full softmax, no dropout). Every target is scored exactly once in each
direction (each token and each sentence's ``</S>``; backwards each token and ``<S>``):
the streams that run out are padded and the padding is not counted. Every sentence
starts from the same LSTM states, those reached after reading the warm-up text
(``bilm/models/warmup.txt``, as the ``warm`` state mode of the embedding jobs), and
carries them through its own tokens, so its scores do not depend on the stream it falls
in or on what came before it: the batch size changes only the speed. A direction's
perplexity is exp of the mean negative log-probability over all its targets; the figure
quoted is the average of the forward and backward perplexities (as the paper's 39.7).

The original's figure (``original_figure``) is reproduced too: states carried from
sentence to sentence along each stream from zero, the streams stopped when the first one
runs out (the tokens of the last, incomplete batch are not scored), each batch's mean
loss weighted alike, and exp of the mean over batches of the two directions' mean loss
(the geometric mean of its forward and backward perplexities). It depends on the batch
size and leaves tokens out; ``Perplexity.tokens`` says how many were scored.
"""
import logging

import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

from ..core import precision, sessions, states
from .checkpoints import check_vocabulary, load_save_dir, restore, training_parameters
from ..errors import InputError, flag
from .dataset import shard_files, training_data
from .graph import SCOPE, LanguageModel, feed
from ..core.options import ModelOptions

logger = logging.getLogger(__name__)

SUFFIXES = ("", "_reverse")  # the batch keys of the forward and backward directions


class Perplexity(float):
    """A held-out perplexity: its value is the figure to quote (a float, as the original's ``test`` returned).

    Attributes:
        forward, backward: each direction's perplexity (``backward`` None for a forward-only model).
        tokens: targets scored per direction.
        tokens_in_text: targets the text has per direction (its tokens plus one per sentence).
        original_figure: True for the original's figure (see the module doc), False for the exact one.
    """

    def __new__(cls, value, forward, backward, tokens, tokens_in_text, original_figure=False):
        self = super().__new__(cls, value)
        self.forward, self.backward, self.tokens, self.tokens_in_text = forward, backward, tokens, tokens_in_text
        self.original_figure = original_figure
        return self


class Evaluator:
    """The evaluation graph of a model at ``batch_size`` streams and its runs.

    Build it inside the graph whose variables it reads (``reuse``: the model's variables
    exist already, as in fine-tuning); its LSTM states are local variables.
    """

    def __init__(self, config, batch_size, reuse=False):
        self.config = ModelOptions.of(config, training=True).replace(batch_size=batch_size, unroll_steps=1)
        self.batch_size = batch_size
        with tf.variable_scope(SCOPE, reuse=True if reuse else None):
            self.model = LanguageModel(self.config, is_training=False, sentence_starts=True)
        self.reset = self.model.states.reset()
        self.keep_start = self.model.states.keep_row_0_as_start()
        self.n_directions = self.config.n_directions

    def perplexity(self, sess, data, original_figure=False, progress=False):
        """The ``Perplexity`` of the model in ``sess`` on ``data`` (a test-mode dataset)."""
        model = self.model
        sess.run(self.reset)
        if not original_figure:  # every sentence will start from the states after the warm-up text
            warmup = training_data(self.config, data.vocab, str(states.WARMUP_TEXT), test=True)
            for batch in warmup.iter_batches(1, 1):  # one stream, on every row
                rows = {key: None if value is None else np.repeat(value, self.batch_size, axis=0)
                        for key, value in batch.items()}
                sessions.run(sess, model.state_update_op, self._carried(rows))
            sess.run(self.keep_start)
        sums, batch_means = np.zeros(self.n_directions), []  # exact: summed losses; original: batch means
        scored = in_text = 0
        stopped = False  # original_figure: a stream ran out, the original stopped
        bar = tqdm(desc="held-out targets", unit="tok", disable=None if progress else True)
        for batch in data.iter_batches(self.batch_size, 1, pad=True):
            masks = [batch["next_token_mask" + suffix] for suffix in SUFFIXES[:self.n_directions]]
            n = int(masks[0].sum())  # as many both ways: a sentence has as many targets
            in_text += n
            if original_figure:
                stopped = stopped or n < self.batch_size
                if stopped:
                    continue  # only counted
                losses, _ = sessions.run(sess, [model.individual_losses, model.state_update_op], self._carried(batch))
                batch_means.append(losses)
            else:
                losses, _ = sessions.run(sess, [model.token_losses, model.state_update_op], feed([model], batch))
                sums += [loss[mask].sum(dtype=np.float64) for loss, mask in zip(losses, masks)]
            scored += n
            bar.update(n)
        bar.close()
        if original_figure:
            if not batch_means:
                raise InputError(f"the original's figure scores no target: the text fills fewer than "
                                 f"{flag('batch_size', '--batch_size')} = {self.batch_size} streams to the end of "
                                 f"its first batch; use a smaller one, or the exact figure (any batch size)")
            means = np.mean(batch_means, axis=0)  # per direction
            value, directions = np.exp(means.mean()), np.exp(means)
        else:
            directions = np.exp(sums / scored)
            value = directions.mean()
        result = Perplexity(float(value), float(directions[0]), float(directions[1]) if len(directions) > 1 else None,
                            scored, in_text, original_figure)
        logger.info("perplexity %.3f (forward %.3f%s) over %d of the %d targets per direction%s", result,
                    result.forward, "" if result.backward is None else f", backward {result.backward:.3f}",
                    scored, in_text, " (the original's figure)" if original_figure else "")
        return result

    def _carried(self, batch):
        """The feed of ``batch`` with the states carried at sentence starts (no fixed start states)."""
        no_starts = {"sentence_start" + suffix: np.zeros((self.batch_size, 1), bool)
                     for suffix in SUFFIXES[:self.n_directions]}
        return feed([self.model], dict(batch, **no_starts))


def test(options, ckpt_file, data, batch_size=256, original_figure=False):
    """The held-out ``Perplexity`` of a checkpoint on ``data`` (a test-mode dataset), a float.

    Exact and the same whatever ``batch_size`` (parallel streams: the speed only), or with
    ``original_figure`` the original's figure, which depends on it (see the module doc).
    """
    with tf.Graph().as_default():
        with sessions.signals_held():  # Ctrl-C and SIGTERM: once the graph is built
            evaluator = Evaluator(options, batch_size)
        with tf.Session(config=sessions.config(branches=evaluator.config.n_directions)) as sess, precision.exact():
            sess.run(tf.local_variables_initializer())
            restore(sess, ckpt_file, tf.global_variables(), training_parameters(evaluator.config))
            return evaluator.perplexity(sess, data, original_figure, progress=True)


def evaluate_checkpoint(save_dir, test_prefix, vocab_file, batch_size=256, original_figure=False):
    """The ``Perplexity`` of the latest checkpoint of ``save_dir`` on the files of ``test_prefix``."""
    shard_files(test_prefix, what=f"held-out file of {flag('test_prefix', '--test_prefix')}")
    config, ckpt_file = load_save_dir(save_dir)
    data = training_data(config, vocab_file, test_prefix, test=True)
    check_vocabulary(save_dir, data.vocab, config)
    return test(config, ckpt_file, data, batch_size, original_figure)
