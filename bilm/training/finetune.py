"""Fine-tuning a pretrained biLM on new text, watching held-out perplexity.

``finetune`` starts a *new* save directory from a training checkpoint (bilm's or the
original library's layout; the source is never written) or from a weight file (the
char CNN and LSTMs; the softmax is new for the given vocabulary), trains on the new
shards, evaluates the held-out perplexity every ``eval_every`` batches, keeps the best
checkpoint and stops after ``patience`` evaluations without improvement. The original
library's advice for small corpora (under about 10 million tokens) is to tune only
briefly while watching held-out perplexity, since the model overfits: the defaults
(one epoch, an evaluation every 200 batches, patience 3) follow it.

``finetune.json`` in the save directory records the settings and every evaluation as the
run goes, so an interrupted fine-tune resumes (``resume=True``) with its evaluations,
best checkpoint and patience, and ends where an uninterrupted one would.
"""
import contextlib
import json
import logging
import os

import tensorflow.compat.v1 as tf

from . import checkpoints
from ..errors import CheckpointError, InputError, OutputError, OutputExistsError, VocabularyError, flag
from .evaluation import Evaluator
from .dataset import count_train_tokens, load_vocab, shard_files, training_data
from ..core.options import ELMO_ORIGINAL, N_CHARACTERS_TRAINING, ModelOptions
from ..core.files import OutputLock, atomic_output, check_not_an_input
from .loop import KEEP_CHECKPOINTS, LOCK_FILE, RunSettings, Start, _setup, _train, save_dir_lock
from ..core.vocabulary import count_tokens

logger = logging.getLogger(__name__)

HISTORY_FILE = checkpoints.FINETUNE_RECORD
EVAL_EVERY, PATIENCE, EVAL_BATCH_SIZE, N_EPOCHS = 200, 3, 64, 1


class HeldoutEvaluation:
    """Held-out perplexity during training (``bilm.training.evaluation``: every target once, any batch size), the best
    checkpoint kept, early stopping, and the record of it all in ``finetune.json``.

    Args:
        heldout: a test-mode dataset of the held-out text.
        every: batches between evaluations.
        patience: evaluations without a lower perplexity before stopping.
        batch_size: parallel token streams of the evaluation (the speed only).
        settings: JSON-able settings written in the record (what a resumed run must share).
        record: the record of the interrupted run being resumed (its evaluations and best).
        general: a second test-mode dataset (general text, e.g. the 1B Word Benchmark's test set) evaluated beside
            ``heldout`` at each evaluation: recorded as ``general_heldout_perplexity``, never deciding.
    """

    def __init__(self, heldout, every=EVAL_EVERY, patience=PATIENCE, batch_size=EVAL_BATCH_SIZE, settings=None,
                 record=None, general=None):
        self.heldout, self.every, self.patience, self.batch_size = heldout, every, patience, batch_size
        self.general = general
        self.settings = settings or {}
        self.history = list(record["evaluations"]) if record else []
        self.best = record["best"] if record else None

    @property
    def stopped(self):
        """True once ``patience`` evaluations in a row have not lowered the perplexity."""
        return self.best is not None and len(self.history) - 1 - self.history.index(self.best) >= self.patience

    def build(self, config, collectives=None):
        """The evaluation graph, sharing the training graph's variables (call inside it). On a cluster
        the chief evaluates and tells every worker whether to stop."""
        with tf.name_scope("heldout"):
            self.evaluator = Evaluator(config, self.batch_size, reuse=True)
        self.value = tf.placeholder(tf.float32, [])
        self.summary = tf.summary.scalar("heldout_perplexity", self.value)
        self.general_summary = tf.summary.scalar("general_heldout_perplexity", self.value)
        self.stop = tf.placeholder_with_default(False, [])
        self.agreed = self.stop if collectives is None else collectives.broadcast(self.stop)

    def perplexity(self, sess):
        return self.evaluator.perplexity(sess, self.heldout)

    def start(self, sess, step, total, saver, writer, chief=True):
        """Before the first batch of a run (``step`` done of ``total``): keep the best checkpoint from pruning,
        write the record, and make the evaluation an interrupted run owed (stopped after its batch's checkpoint,
        before the evaluation). Return True if the fine-tune has stopped early (nothing is left to train)."""
        if chief:
            saver.protected = self.best["checkpoint"] if self.best else None
            self._write(saver, finished=False)
        owed = step > 0 and (step % self.every == 0 or step >= total) and (
            not self.history or self.history[-1]["step"] < step)
        if owed and not self.stopped:
            return self.evaluate(sess, step, None, saver, writer, chief)
        return self.stopped

    def evaluate(self, sess, step, train_perplexity, saver, writer, chief=True):
        """Evaluate after the checkpoint of ``step`` (on the chief); return True (on every worker) to stop."""
        stop = self._evaluate(sess, step, train_perplexity, saver, writer) if chief else False
        return bool(sess.run(self.agreed, {self.stop: stop}))

    def _evaluate(self, sess, step, train_perplexity, saver, writer):
        perplexity = self.perplexity(sess)
        writer.add(sess.run(self.summary, {self.value: perplexity}), step)
        improved = self.best is None or perplexity < self.best["heldout_perplexity"]
        self.history.append({"step": step, "train_perplexity": train_perplexity,
                             "heldout_perplexity": float(perplexity), "checkpoint": saver.newest})
        general = ""
        if self.general is not None:
            value = self.evaluator.perplexity(sess, self.general)
            writer.add(sess.run(self.general_summary, {self.value: value}), step)
            self.history[-1]["general_heldout_perplexity"] = float(value)
            general = f", general held-out perplexity {value:.2f}"
        if improved:
            self.best = self.history[-1]
            saver.protected = saver.newest
        self._write(saver, finished=False)
        since = len(self.history) - 1 - self.history.index(self.best)
        logger.info("batch %d: held-out perplexity %.2f (best %.2f at batch %d)%s", step, perplexity,
                    self.best["heldout_perplexity"], self.best["step"], general)
        if since >= self.patience:
            logger.info("stopping early: no lower held-out perplexity in %d evaluations", since)
            return True
        return False

    def finish(self, saver):
        """Make the best checkpoint the save directory's latest; mark the record finished."""
        if self.best is not None and saver.enabled:  # the chief's
            saver.make_latest(self.best["checkpoint"])
            self._write(saver, finished=True)
            logger.info("best checkpoint %s: held-out perplexity %.2f at batch %d", self.best["checkpoint"],
                        self.best["heldout_perplexity"], self.best["step"])

    def _write(self, saver, finished):
        """The record, in the save directory of ``saver`` (a ``trainer._Checkpoints``)."""
        record = {"settings": self.settings, "finished": finished, "best": self.best, "evaluations": self.history}
        with atomic_output(os.path.join(saver.dir, HISTORY_FILE), overwrite=True) as temporary:
            with open(temporary, "w", encoding="utf-8") as fout:
                json.dump(record, fout, indent=1)


def finetune(save_dir, train_prefix, vocab_file, heldout_prefix, source_dir=None, options_file=None,
             weight_file=None, n_epochs=None, n_train_tokens=None, batch_size=None, learning_rate=None, dropout=None,
             n_negative_samples=None, eval_every=None, patience=None, eval_batch_size=EVAL_BATCH_SIZE,
             softmax_only_batches=None, n_gpus=1, log_dir=None, keep_checkpoints=KEEP_CHECKPOINTS, log_every=100,
             seed=None, overwrite=False, resume=False, cluster=None, worker_timeout=600.0, general_heldout_prefix=None,
             precision="float32"):
    """Fine-tune a pretrained biLM into a new save directory; return the best held-out perplexity.

    Start from ``source_dir`` (a training save directory: its latest checkpoint, either
    layout, with its optimizer state; refused while another process trains in it) or
    from ``options_file`` + ``weight_file`` (the body; the softmax is new, initialised
    at random for the vocabulary, and alone trained for the first
    ``softmax_only_batches`` batches, default 0). The vocabulary must be the checkpoint's
    (its softmax rows are tied to it). ``n_epochs`` (default 1), ``batch_size``,
    ``learning_rate``, ``dropout``, ``n_negative_samples`` change the source's options
    (None: keep them, or the original ELMo ones for a weight file). The held-out text is
    read and checked before training; it is evaluated every ``eval_every`` batches
    (default 200) and at the end, the best checkpoint is kept (the latest of
    ``save_dir`` at the end, so ``dump_weights`` exports it) and the run stops after
    ``patience`` (default 3) evaluations without improvement; ``finetune.json`` in
    ``save_dir`` holds the settings and the evaluations. ``general_heldout_prefix``: a second
    held-out set evaluated beside it each time (e.g. the 1B Word Benchmark's test set, to
    see how much general ability the fine-tune costs), recorded, never deciding. ``precision``: of
    the training steps (``bilm.training.train``); the evaluations are float32 whatever it is.

    ``resume``: continue the interrupted fine-tune of ``save_dir`` from its latest
    checkpoint, with its evaluations, best checkpoint and patience (the source need not
    be given; settings left None are the interrupted run's, others must equal them;
    option changes apply as in ``restart``). A finished fine-tune returns its best at once.
    """
    if overwrite and resume:
        raise InputError(f"{flag('overwrite', '--overwrite')} and {flag('resume', '--resume')} contradict each other")
    given_source = source_dir or weight_file
    if (not resume or given_source) and ((source_dir is None) == (weight_file is None)
                                         or (weight_file is None) != (options_file is None)):
        raise InputError("fine-tuning starts from a save directory (source_dir, --from) or from options_file and "
                         "weight_file (--options and --weights): give one of them")
    for source in (source_dir, weight_file):
        if source is not None:
            check_not_an_input(save_dir, {"source": source}, directory=True)
    if source_dir is not None:  # not in the middle of being trained
        OutputLock(source_dir, os.path.join(source_dir, LOCK_FILE)).check_free()
    run = RunSettings(n_gpus, log_every=log_every, keep_checkpoints=keep_checkpoints, seed=seed, cluster=cluster,
                      worker_timeout=worker_timeout, precision=precision)
    with save_dir_lock(save_dir) if run.chief else contextlib.nullcontext():
        record = _interrupted_record(save_dir) if resume else None
        if not resume and run.chief:
            _check_new_finetune(save_dir, overwrite)
        if resume:
            source, ckpt_file = checkpoints.load_save_dir(save_dir)
            raw, start = source.to_dict(), Start(restart=ckpt_file)
        elif source_dir is not None:
            source, ckpt_file = checkpoints.load_save_dir(source_dir)
            raw, start = source.to_dict(), Start(checkpoint=ckpt_file)
        else:
            source, raw, start = None, _training_options(options_file), Start(weight_file=weight_file)
        vocab = load_vocab(vocab_file, raw["char_cnn"]["max_characters_per_token"] if "char_cnn" in raw else None)
        if source is not None:
            checkpoints.check_vocabulary(save_dir if resume else source_dir, vocab, source)
            if vocab.size != source.n_tokens_vocab:
                raise VocabularyError(f"{vocab_file}: {vocab.size} tokens; the checkpoint's softmax has "
                                      f"{source.n_tokens_vocab} rows: fine-tune with the vocabulary it was trained with")
        changes = {"n_epochs": n_epochs or (None if resume else N_EPOCHS), "batch_size": batch_size,
                   "learning_rate": learning_rate, "dropout": dropout, "n_negative_samples_batch": n_negative_samples,
                   "n_tokens_vocab": vocab.size, "n_train_tokens": n_train_tokens or (None if resume else 1)}
        raw.update({key: value for key, value in changes.items() if value is not None})
        config = ModelOptions(raw, save_dir if resume else source_dir or options_file, training=True)
        data = training_data(config, vocab, train_prefix, worker=run.worker())
        heldout, targets = _heldout(config, vocab, heldout_prefix)
        general = None
        if general_heldout_prefix:
            general, _ = _heldout(config, vocab, general_heldout_prefix, "general_heldout")
        settings = _settings(save_dir, record, source=given_source and os.path.abspath(given_source),
                             eval_every=eval_every, patience=patience, softmax_only_batches=softmax_only_batches,
                             heldout_targets=targets)
        run.checkpoint_every = settings["eval_every"]  # checkpoints follow the evaluations
        if n_train_tokens is None and not resume:
            config = config.replace(n_train_tokens=count_train_tokens(train_prefix, vocab))
        evaluation = HeldoutEvaluation(heldout, settings["eval_every"], settings["patience"], eval_batch_size,
                                       settings, record, general)
        if record is not None and record["finished"]:
            logger.info("%s: the fine-tune had finished; best held-out perplexity %.2f at batch %d", save_dir,
                        evaluation.best["heldout_perplexity"], evaluation.best["step"])
        else:
            _train(config, data, save_dir, log_dir or save_dir, run, start, vocab, overwrite, evaluation,
                   settings["softmax_only_batches"], setup=_setup(vocab, train_prefix, heldout_prefix))
        if not run.chief:
            return None  # the chief evaluates
        if evaluation.best is None:
            raise OutputError(f"{save_dir}: no evaluation was made")
        return evaluation.best["heldout_perplexity"]


DEFAULTS = {"eval_every": EVAL_EVERY, "patience": PATIENCE, "softmax_only_batches": 0}


def _settings(save_dir, record, **given):
    """The run's settings: those given (not None), else the interrupted run's (``record``), else the defaults.
    A resumed run must have the interrupted run's: another value is an error naming it."""
    recorded = record["settings"] if record else {}
    settings = dict(recorded)
    for key, value in given.items():
        if value is None:
            settings.setdefault(key, DEFAULTS.get(key))
        elif key in recorded and recorded[key] != value:
            what = {"source": f"the source ({flag('source_dir, weight_file', '--from, --weights')})",
                    "heldout_targets": f"held-out targets per direction ({flag('heldout_prefix', '--heldout_prefix')})"
                    }.get(key, flag(key, "--" + key))
            raise InputError(f"{os.path.join(save_dir, HISTORY_FILE)}: the interrupted fine-tune had {what} "
                             f"{recorded[key]!r}, this one {value!r}; resume it with the same settings")
        else:
            settings[key] = value
    return settings


def _interrupted_record(save_dir):
    """The record of the fine-tune to resume in ``save_dir``, its checkpoint paths as spelled here."""
    path = os.path.join(save_dir, HISTORY_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{save_dir}: no {HISTORY_FILE}, so no fine-tune to resume there (a training run "
                              f"continues with restart)")
    with open(path, encoding="utf-8") as fin:
        record = json.load(fin)
    record.setdefault("settings", {})
    record.setdefault("finished", True)  # an earlier release wrote the record at the end only
    for entry in record["evaluations"] + ([record["best"]] if record["best"] else []):
        entry["checkpoint"] = os.path.join(save_dir, os.path.basename(entry["checkpoint"]))
    if record["best"]:
        record["best"] = next((entry for entry in record["evaluations"] if entry == record["best"]), record["best"])
    return record


def _check_new_finetune(save_dir, overwrite):
    """Raise unless a new fine-tune may start in ``save_dir`` (an interrupted one is resumed or overwritten)."""
    if not overwrite and os.path.isfile(os.path.join(save_dir, HISTORY_FILE)) and checkpoints.checkpoint_paths(save_dir):
        raise OutputExistsError(f"{save_dir}: holds an earlier fine-tune; continue it with "
                                f"{flag('resume=True', '--resume')}, or pass {flag('overwrite=True', '--overwrite')} "
                                f"to start afresh there (its checkpoints are removed)")
    checkpoints.check_new_run(save_dir, overwrite)


def _heldout(config, vocab, heldout_prefix, name="heldout_prefix"):
    """The held-out dataset and its targets per direction, every line read and checked now (not at the first
    evaluation, after training); ``name``: the argument it came from."""
    what = f"held-out text of {flag(name, '--' + name)}"
    files = shard_files(heldout_prefix, what=what.replace("text", "file"))
    counts, n_sentences = count_tokens(files)
    if not n_sentences:
        raise InputError(f"the {what}, {heldout_prefix!r} ({len(files)} file(s)), holds no sentence; expected one "
                         f"whitespace-tokenized sentence per line")
    n_tokens = sum(counts.values())
    unknown = sum(count for token, count in counts.items() if vocab.word_to_id(token) == vocab.unk)
    logger.info("held-out text %s: %d sentences, %d tokens (%.1f%% not in the vocabulary), %d targets per direction",
                heldout_prefix, n_sentences, n_tokens, 100.0 * unknown / n_tokens, n_tokens + n_sentences)
    return training_data(config, vocab, heldout_prefix, test=True), n_tokens + n_sentences


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
    from ..core.download import checkpoint_dir, is_checkpoint

    return checkpoint_dir(name_or_path) if is_checkpoint(name_or_path) else name_or_path
