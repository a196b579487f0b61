"""The training loop: batches in, checkpoints and summaries out."""
import logging
import os
import random
import time

import tensorflow.compat.v1 as tf

from . import checkpoints
from .errors import OptionsError, OutputError
from .lm_dataset import count_train_tokens, load_vocab, training_data
from .lm_graph import build_training_graph, feed, session_config
from .options import ELMO_ORIGINAL, ModelOptions, training_options
from .outputs import OutputLock

LOCK_FILE = "train.lock"

logger = logging.getLogger(__name__)


def n_batches_total(options, n_gpus):
    """Training steps: epochs x tokens / tokens per step (all towers)."""
    config = ModelOptions.of(options, training=True)
    tokens_per_step = config.batch_size * config.unroll_steps * n_gpus
    return max(1, config.n_epochs * config.n_train_tokens // tokens_per_step)


def _log_interval(log_every, total):
    """Batches between progress lines: ``log_every``, or fewer for short runs (about 10 lines a run)."""
    return max(1, min(log_every, total // 10))


def train(options, data, n_gpus, tf_save_dir, tf_log_dir, restart_ckpt_file=None,
          checkpoint_every=1250, log_every=100, histogram_every=1250, seed=None, overwrite=False):
    """Train a biLM on ``data`` (an ``LMDataset``/``BidirectionalLMDataset``).

    Args:
        options: training options (see README); written to ``tf_save_dir/options.json``.
        n_gpus: number of towers; each reads ``batch_size`` rows of every batch. On
            GPUs when present, else on as many CPU devices.
        tf_save_dir: checkpoints (``model.ckpt-STEP``) every ``checkpoint_every``
            batches and at the end. One process at a time trains in a save directory.
        tf_log_dir: TensorBoard summaries (perplexity and gradient norms every
            ``log_every`` batches or more often for short runs, histograms every
            ``histogram_every``).
        restart_ckpt_file: continue from this checkpoint: its global step counts
            toward the total number of batches, its optimizer state is kept.
        seed: graph-level TensorFlow seed (initialisation, dropout, sampling).
        overwrite: start a new model in a ``tf_save_dir`` that already has checkpoints
            (their files and the earlier TensorBoard events are removed); without it
            that is an error (use restart).
    Returns:
        the final training perplexity.
    """
    with save_dir_lock(tf_save_dir):
        return _train(ModelOptions.of(options, training=True), data, n_gpus, tf_save_dir, tf_log_dir,
                      restart_ckpt_file, checkpoint_every, log_every, histogram_every, seed, overwrite)


def save_dir_lock(tf_save_dir):
    """The lock that one training process at a time holds on a save directory (created if needed)."""
    try:
        os.makedirs(tf_save_dir, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{tf_save_dir}: cannot create the save directory ({os.strerror(err.errno)})") from None
    return OutputLock(tf_save_dir, os.path.join(tf_save_dir, LOCK_FILE))


def _train(config, data, n_gpus, tf_save_dir, tf_log_dir, restart_ckpt_file, checkpoint_every, log_every,
           histogram_every, seed, overwrite):
    vocab_size = getattr(getattr(data, "vocab", None), "size", None)
    if vocab_size is not None and vocab_size > config.n_tokens_vocab:
        raise OptionsError(f"options: key 'n_tokens_vocab' is {config.n_tokens_vocab}; the training "
                           f"vocabulary has {vocab_size} tokens, so expected at least {vocab_size}")
    checkpoints.prepare_save_dir(tf_save_dir, tf_log_dir, new_run=restart_ckpt_file is None, overwrite=overwrite)
    checkpoints.save_options(config, tf_save_dir)

    total = n_batches_total(config, n_gpus)
    tokens_per_step = config.batch_size * config.unroll_steps * n_gpus
    interval = _log_interval(log_every, total)
    with tf.Graph().as_default():
        if seed is not None:
            tf.set_random_seed(seed)
        graph = build_training_graph(config, n_gpus)
        saver = tf.train.Saver(tf.global_variables(), max_to_keep=2)
        models = graph["models"]
        with tf.Session(config=session_config(n_gpus)) as sess:
            sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
            if restart_ckpt_file:
                saver.restore(sess, restart_ckpt_file)
            writer = tf.summary.FileWriter(tf_log_dir, sess.graph)
            step = int(sess.run(graph["global_step"]))
            logger.info("training %d batches of %d tokens (%d done), %d tower(s)", total, tokens_per_step, step, n_gpus)
            perplexity, start, start_step, began = float("nan"), time.time(), step, time.time()
            batches = data.iter_batches(config.batch_size * n_gpus, config.unroll_steps)
            saved = restart_ckpt_file
            while step < total:
                batch = next(batches)
                fetches = [graph["train_op"], graph["train_perplexity"], graph["step_after_update"]]
                want_summary = (step + 1) % interval == 0 or step + 1 == total
                want_histograms = (step + 1) % histogram_every == 0
                if want_summary:
                    fetches.append(graph["summaries"])
                if want_histograms:
                    fetches.append(graph["histograms"])
                _, perplexity, step, *summaries = sess.run(fetches, feed(models, batch))
                for summary in summaries:
                    writer.add_summary(summary, step)
                if step == start_step + 1:  # time from the end of the first batch (graph set-up excluded)
                    start = time.time()
                if want_summary and step > start_step + 1:
                    rate = (step - start_step - 1) * tokens_per_step / max(time.time() - start, 1e-9)
                    eta = (total - step) * tokens_per_step / rate
                    logger.info("batch %d/%d: train perplexity %.2f, %.0f tokens/s, ETA %s",
                                step, total, perplexity, rate, time.strftime("%H:%M:%S", time.gmtime(eta)))
                if step % checkpoint_every == 0 or step >= total:
                    saved = saver.save(sess, os.path.join(tf_save_dir, checkpoints.CHECKPOINT_PREFIX),
                                       global_step=step)
            writer.close()
    trained = step - start_step
    logger.info("trained %d batches (%d tokens) in %s; train perplexity %.2f; latest checkpoint %s",
                trained, trained * tokens_per_step, time.strftime("%H:%M:%S", time.gmtime(time.time() - began)),
                perplexity, saved)
    return float(perplexity)


def train_new_model(train_prefix, vocab_file, save_dir, log_dir=None, n_gpus=1, n_train_tokens=None,
                    token_input=False, seed=None, overwrite=False, checkpoint_every=1250, log_every=100,
                    **option_changes):
    """Train a new model on the files of ``train_prefix``: the original ELMo hyperparameters, then changes.

    Args:
        option_changes: options changed from ``bilm.options.ELMO_ORIGINAL``, as top-level
            keys (``batch_size=32``) or dotted paths (``**{"lstm.dim": 512}``).
        n_train_tokens: tokens per epoch (counted from the files when None).
        seed: seeds the shard order (``random``) and TensorFlow's initialisation,
            dropout and sampling.
    Everything that can be checked (the save directory, the options, the vocabulary)
    is checked before the corpus is counted or anything is written.
    Returns the final training perplexity.
    """
    with save_dir_lock(save_dir):
        checkpoints.check_new_run(save_dir, overwrite)
        max_chars = ELMO_ORIGINAL["char_cnn"]["max_characters_per_token"]
        vocab = load_vocab(vocab_file, None if token_input else max_chars)
        options = training_options(vocab.size, n_train_tokens or 1, token_input, **option_changes)
        config = ModelOptions(options, "the training options", training=True)  # checked before counting
        data = training_data(config, vocab, train_prefix)
        if n_train_tokens is None:
            config = config.replace(n_train_tokens=count_train_tokens(train_prefix, vocab))
        if seed is not None:
            random.seed(seed)
        return _train(config, data, n_gpus, save_dir, log_dir or save_dir, None, checkpoint_every, log_every,
                      1250, seed, overwrite)


def restart_training(train_prefix, vocab_file, save_dir, log_dir=None, n_gpus=1, checkpoint_every=1250,
                     log_every=100, **option_changes):
    """Continue training from the latest checkpoint of ``save_dir`` (changes: ``n_train_tokens``,
    ``n_epochs``, ``batch_size``; None values are ignored). Returns the final training perplexity."""
    with save_dir_lock(save_dir):
        options, ckpt_file = checkpoints.load_options_latest_checkpoint(save_dir)
        options.update({key: value for key, value in option_changes.items() if value is not None})
        config = ModelOptions(options, os.path.join(save_dir, checkpoints.OPTIONS_FILE), training=True)
        return _train(config, training_data(config, vocab_file, train_prefix), n_gpus, save_dir,
                      log_dir or save_dir, ckpt_file, checkpoint_every, log_every, 1250, None, False)
