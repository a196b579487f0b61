"""Fine-tuning a pretrained biLM on new text, watching held-out perplexity.

``finetune`` starts a *new* save directory from a training checkpoint (bilm's or the
original library's layout; the source is never written) or from a weight file (the
char CNN and LSTMs; the softmax is new for the given vocabulary), trains on the new
shards, evaluates the held-out perplexity every ``eval_every`` batches, keeps the best
checkpoint and stops after ``patience`` evaluations without improvement. The original
library's advice for small corpora (under about 10 million tokens) is to tune only
briefly while watching held-out perplexity, since the model overfits: the defaults
(one epoch, an evaluation every 200 batches, patience 3) follow it.
"""
import contextlib
import json
import logging
import os

import numpy as np
import tensorflow.compat.v1 as tf

from . import checkpoints
from .errors import InputError, OutputError, VocabularyError
from .lm_dataset import count_train_tokens, load_vocab, training_data
from .lm_graph import SCOPE, LanguageModel, feed
from .options import ELMO_ORIGINAL, N_CHARACTERS_TRAINING, ModelOptions
from .outputs import check_not_an_input
from .trainer import KEEP_CHECKPOINTS, RunSettings, Start, _setup, _train, save_dir_lock

logger = logging.getLogger(__name__)

HISTORY_FILE = "finetune.json"
EVAL_EVERY, PATIENCE, EVAL_BATCH_SIZE = 200, 3, 64


class HeldoutEvaluation:
    """Held-out perplexity during training (full softmax, states carried, one token per step, as ``test``),
    the best checkpoint kept, and early stopping.

    Args:
        heldout: a test-mode dataset of the held-out text.
        every: batches between evaluations.
        patience: evaluations without a lower perplexity before stopping.
        batch_size: parallel token streams of the evaluation.
    """

    def __init__(self, heldout, every=EVAL_EVERY, patience=PATIENCE, batch_size=EVAL_BATCH_SIZE):
        self.heldout, self.every, self.patience, self.batch_size = heldout, every, patience, batch_size
        self.history, self.best = [], None

    def build(self, config, collectives=None):
        """The evaluation graph, sharing the training graph's variables (call inside it). On a cluster
        the chief evaluates and tells every worker whether to stop."""
        eval_config = config.replace(batch_size=self.batch_size, unroll_steps=1)
        with tf.name_scope("heldout"), tf.variable_scope(SCOPE, reuse=True):
            self.model = LanguageModel(eval_config, is_training=False)
        self.reset = tf.variables_initializer(self.model.states.flat_variables())
        self.value = tf.placeholder(tf.float32, [])
        self.summary = tf.summary.scalar("heldout_perplexity", self.value)
        self.stop = tf.placeholder_with_default(False, [])
        self.agreed = self.stop if collectives is None else collectives.broadcast(self.stop)

    def perplexity(self, sess):
        sess.run(self.reset)
        losses = [sess.run(self.model.total_loss, feed([self.model], batch))
                  for batch in self.heldout.iter_batches(self.batch_size, 1)]
        if not losses:
            raise InputError(f"the held-out text has fewer than {self.batch_size} token streams' worth of tokens")
        return float(np.exp(np.mean(losses)))

    def evaluate(self, sess, step, train_perplexity, saver, writer, chief=True):
        """Evaluate after the checkpoint of ``step`` (on the chief); return True (on every worker) to stop."""
        stop = self._evaluate(sess, step, train_perplexity, saver, writer) if chief else False
        return bool(sess.run(self.agreed, {self.stop: stop}))

    def _evaluate(self, sess, step, train_perplexity, saver, writer):
        perplexity = self.perplexity(sess)
        writer.add(sess.run(self.summary, {self.value: perplexity}), step)
        improved = self.best is None or perplexity < self.best["heldout_perplexity"]
        self.history.append({"step": step, "train_perplexity": train_perplexity, "heldout_perplexity": perplexity,
                             "checkpoint": saver.newest})
        if improved:
            self.best = self.history[-1]
            saver.protected = saver.newest
        since = len(self.history) - 1 - self.history.index(self.best)
        logger.info("batch %d: held-out perplexity %.2f (best %.2f at batch %d)", step, perplexity,
                    self.best["heldout_perplexity"], self.best["step"])
        if since >= self.patience:
            logger.info("stopping early: no lower held-out perplexity in %d evaluations", since)
            return True
        return False

    def finish(self, saver):
        """Make the best checkpoint the save directory's latest; write the history beside it."""
        if self.best is not None:
            saver.make_latest(self.best["checkpoint"])
            with open(os.path.join(saver.dir, HISTORY_FILE), "w", encoding="utf-8") as fout:
                json.dump({"best": self.best, "evaluations": self.history}, fout, indent=1)
            logger.info("best checkpoint %s: held-out perplexity %.2f at batch %d", self.best["checkpoint"],
                        self.best["heldout_perplexity"], self.best["step"])


def finetune(save_dir, train_prefix, vocab_file, heldout_prefix, source_dir=None, options_file=None,
             weight_file=None, n_epochs=1, n_train_tokens=None, batch_size=None, learning_rate=None, dropout=None,
             n_negative_samples=None, eval_every=EVAL_EVERY, patience=PATIENCE, eval_batch_size=EVAL_BATCH_SIZE,
             softmax_only_batches=0, n_gpus=1, log_dir=None, keep_checkpoints=KEEP_CHECKPOINTS, log_every=100,
             seed=None, overwrite=False, cluster=None, worker_timeout=600.0):
    """Fine-tune a pretrained biLM into a new save directory; return the best held-out perplexity.

    Start from ``source_dir`` (a training save directory: its latest checkpoint, either
    layout, with its optimizer state) or from ``options_file`` + ``weight_file`` (the
    body; the softmax is new, initialised at random for the vocabulary, and alone
    trained for the first ``softmax_only_batches`` batches). The vocabulary must be the
    checkpoint's (its softmax rows are tied to it). ``batch_size``, ``learning_rate``,
    ``dropout``, ``n_negative_samples`` change the source's options (None: keep them,
    or the original ELMo ones for a weight file). Evaluates on ``heldout_prefix`` every
    ``eval_every`` batches and at the end, keeps the best checkpoint (the latest of
    ``save_dir`` at the end, so ``dump_weights`` exports it) and stops after
    ``patience`` evaluations without improvement; ``finetune.json`` in ``save_dir``
    holds the evaluations.
    """
    if (source_dir is None) == (weight_file is None) or (weight_file is None) != (options_file is None):
        raise InputError("fine-tuning starts from a save directory (source_dir, --from) or from options_file and "
                         "weight_file (--options and --weights): give one of them")
    for source in (source_dir, weight_file):
        if source is not None:
            check_not_an_input(save_dir, {"source": source}, directory=True)
    run = RunSettings(n_gpus, checkpoint_every=eval_every, log_every=log_every, keep_checkpoints=keep_checkpoints,
                      seed=seed, cluster=cluster, worker_timeout=worker_timeout)
    with save_dir_lock(save_dir) if run.chief else contextlib.nullcontext():
        if run.chief:
            checkpoints.check_new_run(save_dir, overwrite)
        if source_dir is not None:
            source, ckpt_file = checkpoints.load_save_dir(source_dir)
            raw, start = source.to_dict(), Start(checkpoint=ckpt_file)
        else:
            source, raw, start = None, _training_options(options_file), Start(weight_file=weight_file)
        vocab = load_vocab(vocab_file, raw["char_cnn"]["max_characters_per_token"] if "char_cnn" in raw else None)
        if source is not None:
            checkpoints.check_vocabulary(source_dir, vocab, source)
            if vocab.size != source.n_tokens_vocab:
                raise VocabularyError(f"{vocab_file}: {vocab.size} tokens; the checkpoint's softmax has "
                                      f"{source.n_tokens_vocab} rows: fine-tune with the vocabulary it was trained with")
        changes = {"n_epochs": n_epochs, "batch_size": batch_size, "learning_rate": learning_rate, "dropout": dropout,
                   "n_negative_samples_batch": n_negative_samples, "n_tokens_vocab": vocab.size,
                   "n_train_tokens": n_train_tokens or 1}
        raw.update({key: value for key, value in changes.items() if value is not None})
        config = ModelOptions(raw, source_dir or options_file, training=True)
        data = training_data(config, vocab, train_prefix, worker=run.worker())
        heldout = training_data(config, vocab, heldout_prefix, test=True)
        if n_train_tokens is None:
            config = config.replace(n_train_tokens=count_train_tokens(train_prefix, vocab))
        evaluation = HeldoutEvaluation(heldout, eval_every, patience, eval_batch_size)
        _train(config, data, save_dir, log_dir or save_dir, run, start, vocab, overwrite, evaluation,
               softmax_only_batches, setup=_setup(vocab, train_prefix, heldout_prefix))
        if evaluation.best is None:
            if not run.chief:
                return None  # the chief evaluates
            raise OutputError(f"{save_dir}: no evaluation was made")
        return evaluation.best["heldout_perplexity"]


def _training_options(options_file):
    """Training options for the model of an options.json: its model, the original ELMo training settings."""
    raw = {key: value for key, value in ELMO_ORIGINAL.items() if key not in ("char_cnn", "lstm")}
    raw.update(ModelOptions.from_file(options_file).to_dict())
    if "char_cnn" in raw:
        raw["char_cnn"]["n_characters"] = N_CHARACTERS_TRAINING
    return raw


def resolve_save_dir(name_or_path):
    """A save directory, or the directory of a downloaded checkpoint of the catalogue (e.g. ``original-checkpoint``)."""
    if os.path.isdir(name_or_path):
        return name_or_path
    from .download import checkpoint_dir, is_checkpoint

    return checkpoint_dir(name_or_path) if is_checkpoint(name_or_path) else name_or_path
