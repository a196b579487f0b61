"""The training loop: batches in, checkpoints and summaries out, and nothing lost on the way.

Progress is counted in tokens (``tokens_trained``, kept in every checkpoint): a run
trains ``n_epochs * n_train_tokens`` tokens in batches of ``batch_size * unroll_steps``
tokens per tower, so a restart with another batch size or number of towers trains
exactly the tokens that are left. A run interrupted (Ctrl-C, SIGTERM through the
``bilm`` command) or stopped by an error saves a checkpoint of its last completed batch
first. A checkpoint becomes the latest once the next batch's loss shows its weights are
good; a run that diverges (``bilm.training.divergence``) stops, or rolls back to its last good
checkpoint, and no checkpoint of the diverged weights is kept.
"""
import contextlib
import dataclasses
import glob
import logging
import os
import random
import shutil
import time

import tensorflow.compat.v1 as tf

from . import checkpoints

from ..core import layout, precision, sessions, weights
from .divergence import MAX_ROLLBACKS, MAX_SKIPPED_BATCHES, DivergenceWatch
from ..errors import (BilmError, InputError, OptionsError, OutputError, TrainingError, WorkerLostError, flag,
                     tensorflow_reason)
from .dataset import count_train_tokens, load_vocab, shard_files, training_data
from .cluster import Collectives, calls_left_running, check_same_setup, lost_worker_error, within
from .graph import available_gpus, build_training_graph, feed, session_config
from ..core.options import ELMO_ORIGINAL, ModelOptions, training_options
from ..core.prefetch import Prefetch
from ..core.files import OutputLock

logger = logging.getLogger(__name__)

LOCK_FILE = "train.lock"
KEEP_CHECKPOINTS = 2
ON_DIVERGENCE = ("stop", "rollback")
TRAINING_PRECISIONS = ("float32", "bfloat16", "float16")


def tokens_per_step(config, n_gpus):
    return config.batch_size * config.unroll_steps * n_gpus


def _log_interval(log_every, total):
    """Batches between progress lines: ``log_every``, or fewer for short runs (about 10 lines a run)."""
    return max(1, min(log_every, total // 10))


@contextlib.contextmanager
def save_dir_lock(tf_save_dir):
    """Hold the lock that one training process at a time holds on a save directory (created if needed;
    removed again if the run leaves it empty, e.g. when it fails before training)."""
    created = not os.path.exists(tf_save_dir)
    if not created and not os.path.isdir(tf_save_dir):
        raise OutputError(f"{tf_save_dir}: is a file; expected a directory (save directory)")
    try:
        os.makedirs(tf_save_dir, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{tf_save_dir}: cannot create the save directory ({os.strerror(err.errno)})") from None
    try:
        with OutputLock(tf_save_dir, os.path.join(tf_save_dir, LOCK_FILE)):
            yield
    finally:
        if created:
            with contextlib.suppress(OSError):  # not empty: the run wrote there
                os.rmdir(tf_save_dir)


def train(options, data, n_gpus, tf_save_dir, tf_log_dir, restart_ckpt_file=None,
          checkpoint_every=1250, log_every=100, histogram_every=1250, seed=None, overwrite=False,
          keep_checkpoints=KEEP_CHECKPOINTS, cluster=None, worker_timeout=600.0, on_divergence="stop",
          max_rollbacks=MAX_ROLLBACKS, precision="float32"):
    """Train a biLM on ``data`` (an ``LMDataset``/``BidirectionalLMDataset``).

    Args:
        options: training options (see README); written to ``tf_save_dir/options.json``.
        n_gpus: number of towers; each reads ``batch_size`` rows of every batch. On
            GPUs when present, else on as many CPU devices.
        tf_save_dir: checkpoints (``model.ckpt-STEP``) every ``checkpoint_every``
            batches, at the end, and when the run is interrupted or stopped by an
            error; the newest ``keep_checkpoints`` are kept (across restarts). One
            process at a time trains in a save directory.
        tf_log_dir: TensorBoard summaries (perplexity and gradient norms every
            ``log_every`` batches or more often for short runs, histograms every
            ``histogram_every``).
        restart_ckpt_file: continue from this checkpoint (either layout): its weights,
            optimizer state, global step and tokens trained.
        seed: graph-level TensorFlow seed (initialisation, dropout, sampling).
        overwrite: start a new model in a ``tf_save_dir`` that already has checkpoints
            (their files and the earlier TensorBoard events are removed once the new
            graph is built); without it that is an error (use restart).
        cluster: a ``bilm.training.cluster.Cluster``: this process is one of its workers; ``data``
            is this worker's share (``worker=(index, size)``), and each batch is averaged
            over every worker (``worker_timeout``: seconds to wait for them, at start too).
        on_divergence: ``"stop"`` or ``"rollback"`` (at most ``max_rollbacks`` times) when the
            run diverges (``bilm.training.divergence``).
        precision: ``"float32"`` (default), or mixed precision ``"bfloat16"`` or ``"float16"`` (with
            dynamic loss scaling): the products in the reduced type; weights, optimizer state, loss,
            softmax and checkpoints float32, interchangeable with a float32 run's.
    Returns:
        the final training perplexity.
    Raises:
        TrainingError: the run diverged (no checkpoint of the diverged weights is kept).
    """
    run = RunSettings(n_gpus, checkpoint_every, log_every, histogram_every, keep_checkpoints, seed, cluster,
                      worker_timeout, on_divergence, max_rollbacks, precision)
    with _guard(tf_save_dir, run):
        config = ModelOptions.of(options, training=True)
        vocab = getattr(data, "vocab", None)
        if restart_ckpt_file is None and run.chief:
            checkpoints.check_new_run(tf_save_dir, overwrite)
        elif vocab is not None and run.chief:
            checkpoints.check_vocabulary(tf_save_dir, vocab, config)
        return _train(config, data, tf_save_dir, tf_log_dir, run, Start(restart=restart_ckpt_file), vocab, overwrite)


class _Checkpoints:
    """Saves the training session's checkpoints: only sound weights, the newest ``keep`` of them (earlier
    runs' included) plus a ``protected`` one (fine-tuning's best), with clear errors on a full disk.

    A checkpoint is written at once but becomes the save directory's latest (``latest``, what ``restart``
    and ``test`` read) only when the next batch's loss shows its weights are good (``confirm``), or
    when the run ends or stops on a good batch (``save(publish=True)``); until then it is ``pending``, and
    a run that diverges removes it (``discard``). ``newest`` is the newest written, pending or not.
    """

    def __init__(self, sess, graph, tf_save_dir, keep, enabled=True):
        self.sess, self.graph, self.dir, self.keep, self.enabled = sess, graph, tf_save_dir, keep, enabled
        self.saver = tf.train.Saver(tf.global_variables(), max_to_keep=None)
        earlier = checkpoints.checkpoint_paths(tf_save_dir) if enabled else []  # newest first
        self.latest = self.newest = earlier[0] if earlier else None
        self.pending = self.protected = None

    def save(self, publish=False):
        """Write a checkpoint of the current step (the chief of a cluster only), pending unless ``publish``;
        return its path."""
        if not self.enabled:
            return self.latest
        if not self.sess.run(self.graph["weights_finite"]):
            raise TrainingError(f"{self.dir}: the weights are not finite; not saved (the latest checkpoint, "
                                f"{self.latest}, is the last good one)")
        step = int(self.sess.run(self.graph["global_step"]))
        prefix = os.path.join(self.dir, checkpoints.CHECKPOINT_PREFIX)
        self.discard()  # a pending checkpoint not confirmed by now is not known to be good
        try:
            path = self.saver.save(self.sess, prefix, global_step=step, write_meta_graph=False, write_state=False)
        except (tf.errors.OpError, OSError) as err:
            _remove_checkpoint(f"{prefix}-{step}", partial=True)
            error = OutputError(f"{self.dir}: cannot write checkpoint {os.path.basename(prefix)}-{step} "
                                f"({tensorflow_reason(err)}); the latest complete checkpoint is {self.latest}: "
                                f"make room, then continue with restart")
            error.bilm_checkpoint = self.latest  # nothing more to save: say how to continue
            raise error from None
        self.pending = self.newest = path
        if publish:
            self.confirm()
        return path

    def confirm(self):
        """The pending checkpoint's weights are good: make it the latest."""
        if self.pending is not None:
            self._prune(latest=self.pending, saved_step=int(self.pending.rsplit("-", 1)[1]))
            self.latest, self.pending = self.pending, None

    def discard(self):
        """Remove the pending checkpoint (unless protected): its weights are not known to be good."""
        if self.pending is not None and self.pending != self.protected:
            _remove_checkpoint(self.pending)
            self.newest = self.latest
        self.pending = None

    def restore_latest(self):
        """Load the latest checkpoint into the session (a rollback)."""
        self.saver.restore(self.sess, self.latest)

    def _prune(self, latest=None, saved_step=None):
        """Keep the newest ``keep`` checkpoints, ``latest`` and the protected one, and list them in
        TensorFlow's ``checkpoint`` file with ``latest`` (default: the newest) as the latest. After a save
        of ``saved_step``, checkpoints of higher steps belong to a run this one restarted before (from an
        earlier or intact checkpoint): they are dropped, never named the latest."""
        paths = checkpoints.checkpoints_on_disk(self.dir)  # newest first, earlier runs' included
        current = [p for p in paths if saved_step is None or int(p.rsplit("-", 1)[1]) <= saved_step]
        kept = [p for k, p in enumerate(current) if k < self.keep or p in (self.protected, latest)]
        kept += [p for p in paths if p == self.protected and p not in kept]
        for path in paths:
            if path not in kept:
                _remove_checkpoint(path)
        latest = latest or kept[0]
        tf.train.update_checkpoint_state(self.dir, latest, [p for p in kept[::-1] if p != latest] + [latest])

    def make_latest(self, path):
        """Name ``path`` (a kept checkpoint) the latest, so that every reader of the directory uses it."""
        if self.enabled:
            self._prune(latest=path)
            self.latest = path


def _remove_checkpoint(path, partial=False):
    """Remove the files of checkpoint ``path`` (``partial``: what a failed save left, its temporary
    directories included; a complete checkpoint of that step is kept)."""
    for name in glob.glob(glob.escape(path) + ".*") + glob.glob(glob.escape(path) + "_temp*"):
        if os.path.isdir(name):
            shutil.rmtree(name, ignore_errors=True)
        elif not (partial and os.path.exists(f"{path}.index")):
            os.remove(name)


class _Events:
    """TensorBoard events: TensorFlow's writer drops what it cannot write (a full disk) without a word;
    a flush after which the events file has not grown although summaries were added is an error."""

    def __init__(self, tf_log_dir, graph):
        self.dir = tf_log_dir
        self.writer = tf.summary.FileWriter(tf_log_dir, graph)
        self.writer.flush()
        self._file = max(glob.glob(os.path.join(glob.escape(tf_log_dir), checkpoints.EVENTS_PATTERN)),
                         key=os.path.getmtime, default=None)
        self._size, self._added = self._current_size(), 0

    def _current_size(self):
        return os.path.getsize(self._file) if self._file and os.path.exists(self._file) else 0

    def add(self, summary, step):
        self.writer.add_summary(summary, step)
        self._added += 1

    def flush(self, latest_checkpoint):
        self.writer.flush()
        size = self._current_size()
        if self._added and size <= self._size:
            error = OutputError(f"{self.dir}: TensorBoard events cannot be written (is the disk full?); the latest "
                                f"checkpoint is {latest_checkpoint}: make room, then continue with restart")
            error.bilm_checkpoint = latest_checkpoint
            raise error
        self._size, self._added = size, 0

    def close(self):
        self.writer.close()


@dataclasses.dataclass
class RunSettings:
    """How a training run goes (not the model): towers, checkpoints, logging, seed, cluster.

    ``cluster``: a ``bilm.training.cluster.Cluster`` to train across machines (None: this one);
    ``worker_timeout``: seconds a step (or the start) may wait for the other workers
    before the run stops naming the ones that are gone (or never came).
    ``on_divergence``: what a diverged run does (``bilm.training.divergence``): ``"stop"``, or
    ``"rollback"``: restore the latest checkpoint, skip the data that diverged and go on,
    at most ``max_rollbacks`` times (one machine only).
    ``precision``: of the training step's products (``bilm.training.graph.build_training_graph``):
    ``"float32"`` (exact: TensorFloat-32 off on GPUs), ``"bfloat16"`` or ``"float16"`` (mixed
    precision); the weights, the optimizer, the loss, evaluations and the checkpoints stay float32.
    """

    n_gpus: int = 1
    checkpoint_every: int = 1250
    log_every: int = 100
    histogram_every: int = 1250
    keep_checkpoints: int = KEEP_CHECKPOINTS
    seed: int = None
    cluster: object = None
    worker_timeout: float = 600.0
    on_divergence: str = "stop"
    max_rollbacks: int = MAX_ROLLBACKS
    precision: str = "float32"

    def __post_init__(self):
        if self.precision not in TRAINING_PRECISIONS:
            raise InputError(f"{flag('precision', '--precision')} is {self.precision!r}; expected one of "
                             f"{', '.join(TRAINING_PRECISIONS)}")
        if self.on_divergence not in ON_DIVERGENCE:
            raise InputError(f"{flag('on_divergence', '--on_divergence')} is {self.on_divergence!r}; expected one "
                             f"of {', '.join(ON_DIVERGENCE)}")
        if self.on_divergence == "rollback" and self.cluster is not None:
            raise InputError(f"{flag('on_divergence', '--on_divergence')} rollback: not on a cluster (it restores "
                             f"the chief's checkpoint on one machine); use stop, then restart")

    @property
    def chief(self):
        """True where checkpoints, options and summaries are written (worker 0 of a cluster)."""
        return self.cluster is None or self.cluster.chief

    def worker(self):
        """(k, n): this worker's share of the shards."""
        return (0, 1) if self.cluster is None else (self.cluster.index, self.cluster.size)


@dataclasses.dataclass
class Start:
    """Where a run's variables start: from scratch, or (one of) a checkpoint to continue (``restart``),
    a checkpoint to fine-tune from (weights and optimizer state, a new count of steps and tokens), or
    a weight file (the body; the softmax is new)."""

    restart: str = None
    checkpoint: str = None
    weight_file: str = None
    restart_step_tokens: int = None  # tokens per step of the run that wrote ``restart`` (its own options)

    @property
    def new_run(self):
        return self.restart is None

    def initialize(self, sess, graph, config):
        parameters = checkpoints.training_parameters(config)
        if self.restart:
            restored = checkpoints.restore(sess, self.restart, tf.global_variables(), parameters)
            if checkpoints.TOKENS_TRAINED not in restored:  # an original's or earlier checkpoint
                step = int(sess.run(graph["global_step"]))
                step_tokens = self.restart_step_tokens or graph["tokens_per_step"]
                sess.run(graph["tokens_trained"].assign(step * step_tokens))
                logger.warning("%s records no tokens trained: counting %d batches of %d tokens", self.restart, step,
                               step_tokens)
        elif self.checkpoint:
            counters = {graph["global_step"].op.name, graph["tokens_trained"].op.name}
            checkpoints.restore(sess, self.checkpoint, [v for v in tf.global_variables()
                                                        if v.op.name not in counters], parameters)
        elif self.weight_file:
            body = {name: p for name, p in parameters.items() if p.group != layout.SOFTMAX}
            variables = {v.op.name: v for v in tf.global_variables()}
            weights.check_weight_file(self.weight_file, config.for_inference(), body)
            for name in body:
                variable = variables[f"{checkpoints.SCOPE}/{name}"]
                value = weights.read_dataset(self.weight_file, name)
                placeholder = tf.placeholder(tf.float32, value.shape)
                sess.run(variable.assign(placeholder), {placeholder: value})
            logger.info("the model's body starts from %s; its softmax is new", self.weight_file)


def _train(config, data, save_dir, log_dir, run, start=Start(), vocab=None, overwrite=False, evaluation=None,
           softmax_only_batches=0, setup=""):
    """The run itself (the save directory is locked and checked). ``setup``: what every worker of a
    cluster must share (options, vocabulary, data), compared at start."""
    if vocab is not None and vocab.size > config.n_tokens_vocab:
        raise OptionsError(f"options: key 'n_tokens_vocab' is {config.n_tokens_vocab}; the training "
                           f"vocabulary has {vocab.size} tokens, so expected at least {vocab.size}")
    slow = precision.slow_reduced_type(run.precision, on_gpus=available_gpus() > 0)
    if slow:
        logger.warning("%s %s: %s; training in float32", flag("precision", "--precision"), run.precision, slow)
        run = dataclasses.replace(run, precision="float32")
    session = session_config(run.n_gpus, config.n_directions)
    server = run.cluster.start_server(session) if run.cluster else None
    if server is not None:
        run.cluster.wait_for_peers(run.worker_timeout)
    placement = tf.device(run.cluster.device) if run.cluster else contextlib.nullcontext()
    with tf.Graph().as_default(), placement:
        if run.seed is not None:  # the graph's sampling and dropout; the shard order and shuffling
            tf.set_random_seed(run.seed + (run.cluster.index if run.cluster else 0))
            random.seed(run.seed + run.worker()[0])
        with sessions.signals_held():
            collectives = Collectives(run.cluster) if run.cluster else None
            graph = build_training_graph(config, run.n_gpus, collectives, run.precision)
            graph["tokens_per_step"] = tokens_per_step(config, run.n_gpus) * (run.cluster.size if run.cluster else 1)
            if evaluation is not None:
                evaluation.build(config, collectives)
            if collectives is not None:
                broadcast = collectives.broadcast_from_chief(tf.global_variables())
                settings = collectives.gather_settings(_step_settings(config, run, setup, evaluation,
                                                                      softmax_only_batches))
            initialize = [tf.global_variables_initializer(), tf.local_variables_initializer()]
        with _session(server.target if server else "", session) as sess, precision.exact():
            if collectives is None:
                with sessions.signals_held():
                    sess.run(initialize)
                    start.initialize(sess, graph, config)
            else:  # every call that waits for the other workers: bounded, and Ctrl-C and SIGTERM end it
                limit = tf.RunOptions(timeout_in_ms=int(run.worker_timeout * 1000))
                try:
                    within(run.worker_timeout, lambda: sess.run(initialize))  # the session waits for every worker
                    within(run.worker_timeout, lambda: check_same_setup(sess, settings, run.cluster, limit))
                    if run.chief:
                        start.initialize(sess, graph, config)
                    within(run.worker_timeout, lambda: sess.run(broadcast, options=limit))
                except (tf.errors.OpError, TimeoutError) as err:
                    raise lost_worker_error(err, run.cluster, -1) from None
            if run.chief:
                for directory in (save_dir, log_dir):
                    try:
                        os.makedirs(directory, exist_ok=True)
                    except OSError as err:
                        raise OutputError(f"{directory}: cannot create the directory ({err.strerror})") from None
                if start.new_run:
                    if overwrite:  # only now that the new graph is built and initialised
                        checkpoints.clear_earlier_run(save_dir, log_dir)
                    if vocab is not None:
                        checkpoints.record_vocabulary(save_dir, vocab)
                checkpoints.save_options(config, save_dir)
            saver = _Checkpoints(sess, graph, save_dir, run.keep_checkpoints, enabled=run.chief)
            writer = _Events(log_dir, sess.graph) if run.chief else None
            try:
                return _loop(sess, graph, data, config, run, saver, writer, evaluation, softmax_only_batches)
            finally:
                if writer is not None:
                    writer.close()


@contextlib.contextmanager
def _session(target, config):
    """A ``tf.Session``, the default one inside; closed at the end unless a call on it was left running
    (``bilm.training.cluster.within``: closing would wait for it)."""
    sess = tf.Session(target, config=config)
    try:
        with sess.as_default():
            yield sess
    finally:
        if not calls_left_running():
            sess.close()


def _loop(sess, graph, data, config, run, saver, writer, evaluation, softmax_only_batches):
    step_tokens, total_tokens = graph["tokens_per_step"], config.n_epochs * config.n_train_tokens
    step, tokens = (int(v) for v in sess.run([graph["global_step"], graph["tokens_trained"]]))
    remaining = max(0, total_tokens - tokens) // step_tokens
    if tokens == 0:
        remaining = max(1, remaining)
    total = step + remaining
    if softmax_only_batches >= total > step:
        logger.warning("%s is %d, at least the %d batches of the run: only the softmax is trained, no weight of the "
                       "body (char CNN, LSTMs) changes", flag("softmax_only_batches", "--softmax_only_batches"),
                       softmax_only_batches, total)
    interval = _log_interval(run.log_every, remaining)
    where = f" on worker {run.cluster.index} of {run.cluster.size}" if run.cluster else ""
    logger.info("training %d batches of %d tokens (%d done, %d of %d tokens), %d tower(s)%s", total, step_tokens, step,
                tokens, total_tokens, run.n_gpus, where)
    perplexity, start_step, began = float("nan"), step, time.time()
    start = began
    batches = Prefetch(data.iter_batches(config.batch_size * run.n_gpus, config.unroll_steps))
    fetches = {"loss": graph["train_loss"], "perplexity": graph["train_perplexity"], "grad_norm": graph["grad_norm"],
               "skipped": graph["skipped"]}
    overflows = 0
    limit = tf.RunOptions(timeout_in_ms=int(run.worker_timeout * 1000)) if run.cluster else None
    watch, rollbacks = DivergenceWatch(config.n_tokens_vocab), []
    try:
        if evaluation is not None and evaluation.start(sess, step, total, saver, writer, run.chief):
            total = step  # a fine-tune that had stopped early: nothing is left to train
        with sessions.signals_held():  # Ctrl-C and SIGTERM: between TensorFlow calls
            while step < total:
                batch = next(batches)
                want = dict(fetches, step=graph["softmax_train_op" if step < softmax_only_batches else "train_op"])
                if run.chief and ((step + 1) % interval == 0 or step + 1 == total):
                    want["summaries"] = graph["summaries"]
                if run.chief and (step + 1) % run.histogram_every == 0:
                    want["histograms"] = graph["histograms"]
                try:
                    result = sessions.run(sess, want, feed(graph["models"], batch), options=limit)
                except tf.errors.OpError as err:
                    if run.cluster is None:
                        raise
                    raise lost_worker_error(err, run.cluster, step) from None
                if result["skipped"]:  # float16 gradients overflowed: nothing changed but the loss scale
                    overflows += 1
                    continue
                diverged = watch.judge(int(result["step"]), float(result["loss"]), float(result["grad_norm"]),
                                       last=int(result["step"]) >= total)
                if not watch.bad:
                    saver.confirm()  # this batch's loss shows that the weights it started from are good
                if diverged:
                    saver.discard()
                    if run.on_divergence != "rollback" or saver.latest is None or len(rollbacks) >= run.max_rollbacks:
                        raise _divergence_error(int(result["step"]), diverged, saver, run, rollbacks)
                    rollbacks.append(int(result["step"]))
                    step = _roll_back(sess, graph, saver, watch, batches, f"batch {result['step']}: {diverged}", run,
                                      len(rollbacks))
                    continue
                step, perplexity = int(result["step"]), float(result["perplexity"])
                for key in ("summaries", "histograms"):
                    if key in result:
                        writer.add(result[key], step)
                if step == start_step + 1:  # time from the end of the first batch (graph set-up excluded)
                    start = time.time()
                if (step % interval == 0 or step == total) and step > start_step + 1:
                    rate = (step - start_step - 1) * step_tokens / max(time.time() - start, 1e-9)
                    eta = (total - step) * step_tokens / rate
                    logger.info("batch %d/%d: train perplexity %.2f, %.0f tokens/s, ETA %s",
                                step, total, perplexity, rate, time.strftime("%H:%M:%S", time.gmtime(eta)))
                evaluate = evaluation is not None and (step % evaluation.every == 0 or step >= total)
                if evaluate or step % run.checkpoint_every == 0 or step >= total:
                    saver.save(publish=evaluate and not watch.bad)  # an evaluated checkpoint: the latest at once
                    if writer is not None:
                        writer.flush(saver.latest)
                if evaluate and evaluation.evaluate(sess, step, perplexity, saver, writer, run.chief):
                    break  # stopped early
        saver.confirm()  # the run ended without diverging: its last checkpoint is the latest
    except WorkerLostError as err:
        _save_on_stop(err, sess, graph, saver, total_tokens, watch)  # the chief keeps the last complete batch
        raise
    except TrainingError:
        raise
    except (KeyboardInterrupt, BilmError, OSError, tf.errors.OpError) as err:
        if getattr(err, "bilm_checkpoint", None) is None:  # not a failed save: save now
            _save_on_stop(err, sess, graph, saver, total_tokens, watch)
        if isinstance(err, tf.errors.OpError):  # TensorFlow's multi-line message: one line of it
            stopped = TrainingError(f"TensorFlow stopped training: {tensorflow_reason(err)}")
            stopped.bilm_note, stopped.bilm_checkpoint = err.bilm_note, getattr(err, "bilm_checkpoint", None)
            raise stopped from None
        raise
    finally:
        batches.close()
    if evaluation is not None:
        evaluation.finish(saver)
    tokens = int(sess.run(graph["tokens_trained"]))
    latest = saver.latest if run.chief else "(the chief's)"
    if step == start_step:  # a finished run continued: no batch, so no train perplexity either
        if remaining:
            why = "the fine-tune had stopped early"
        elif tokens > total_tokens:  # restarted with fewer epochs than it has trained
            why = (f"already past the {config.n_epochs} epoch(s) asked for: pass a larger "
                   f"{flag('n_epochs', '--n_epochs')} to train more")
        else:
            why = f"less than a batch of {step_tokens} left"
        logger.info("nothing left to train: %d of %d tokens trained (%s); latest checkpoint %s", tokens, total_tokens,
                    why, latest)
        return perplexity
    undone = f", after {len(rollbacks)} rollback(s) (at batches {', '.join(map(str, rollbacks))})" if rollbacks else ""
    if overflows:
        undone += (f"; {overflows} more batch{'es' if overflows > 1 else ''} skipped: their float16 gradients "
                   f"overflowed (the loss scale was lowered)")
    logger.info("trained %d batches (%d tokens, %d of %d in all) in %s%s; train perplexity %.2f; latest checkpoint %s",
                step - start_step, (step - start_step) * step_tokens, tokens, total_tokens,
                time.strftime("%H:%M:%S", time.gmtime(time.time() - began)), undone, perplexity, latest)
    return perplexity


def _divergence_error(step, reason, saver, run, rollbacks):
    """The one-line error of a diverged run: the batch, the loss, and the checkpoint that stays the latest."""
    if not saver.enabled:
        kept = "the chief keeps its last good checkpoint as the latest"
    elif saver.latest is None:
        kept = "no checkpoint of this run is known to be good, so none was kept"
    else:
        kept = f"nothing after the last good checkpoint, {saver.latest}, was saved: it stays the latest"
    tried = ""
    if run.on_divergence == "rollback":
        most = flag("max_rollbacks", "--max_rollbacks")
        tried = f" after {len(rollbacks)} rollback(s), the most {most} allows" if rollbacks else \
            " with no good checkpoint to roll back to"
    return TrainingError(f"training diverged at batch {step}{tried}: {reason}; {kept} (a lower learning rate may "
                         f"help)")


def _roll_back(sess, graph, saver, watch, batches, diverged, run, count):
    """Restore the latest (good) checkpoint and skip the data that diverged: the batches from the checkpoint
    to the divergence are not repeated, and the next ones are skipped while the restored weights find them
    bad (a window of bad data). Returns the restored global step."""
    saver.restore_latest()
    sess.run(graph["reset_states"])  # the LSTM states were those of the diverged weights
    step = int(sess.run(graph["global_step"]))
    skipped = 0
    while True:
        skipped += 1
        loss = float(sessions.run(sess, graph["train_loss"], feed(graph["models"], next(batches))))
        if not watch.is_bad(loss):
            break
        if skipped >= MAX_SKIPPED_BATCHES:
            raise TrainingError(f"training diverged at {diverged}; rolled back to {saver.latest}, whose loss stayed "
                                f"bad for the next {skipped} batches (loss {loss:.4g}): the data, not the weights?")
    watch.streak = []
    logger.warning("diverged at %s; rolled back to %s (rollback %d of at most %d) and skipped the next %d batch(es) "
                   "of data, to the first the restored weights find good", diverged, saver.latest, count,
                   run.max_rollbacks, skipped)
    return step


def _save_on_stop(err, sess, graph, saver, total_tokens, watch):
    """Save the last completed batch of a stopped run; note on ``err`` what was kept. Ctrl-C and SIGTERM
    are ignored meanwhile: the run is stopping already."""
    with sessions.signals_held(drop=True):
        _save_last_batch(err, sess, graph, saver, total_tokens, watch)


def _save_last_batch(err, sess, graph, saver, total_tokens, watch):
    step, tokens = (int(v) for v in sess.run([graph["global_step"], graph["tokens_trained"]]))
    where = f"batch {step} ({tokens:,} of {total_tokens:,} tokens)"
    if not saver.enabled:
        err.bilm_note = f"stopped after {where}; the chief saves the checkpoints"
        return
    if step == 0:
        note = "no batch was trained: nothing to save"
    elif watch.bad:
        saver.discard()
        note = (f"not saved: {watch.reason()}; the latest checkpoint, {saver.latest}, is the last good one"
                if saver.latest else f"not saved: {watch.reason()}")
    elif saver.pending is not None and saver.pending.endswith(f"-{step}"):
        saver.confirm()
        note = f"the latest checkpoint, {saver.latest}, holds {where}"
    elif saver.latest is not None and saver.latest.endswith(f"-{step}"):
        note = f"the latest checkpoint, {saver.latest}, holds {where}"
    else:
        try:
            note = f"saved {saver.save(publish=True)} after {where}"
        except BilmError as save_error:
            note = f"not saved: {save_error}"
    err.bilm_note, err.bilm_checkpoint = note, saver.latest
    logger.warning("training stopped at batch %d: %s", step, note)


def _guard(save_dir, run):
    """The save directory's lock on the chief (the other workers of a cluster do not write there)."""
    return save_dir_lock(save_dir) if run.chief else contextlib.nullcontext()


def _setup(vocab, train_prefix, heldout_prefix=None):
    """What every worker of a cluster must share besides the options: the vocabulary and the shard names
    (and the held-out files' of fine-tuning)."""
    setup = {"vocabulary": checkpoints.vocabulary_identity(vocab)["sha256"],
             "training files": [os.path.basename(path) for path in shard_files(train_prefix)]}
    if heldout_prefix is not None:
        setup["held-out files"] = [os.path.basename(path) for path in shard_files(heldout_prefix)]
    return setup


def _step_settings(config, run, setup, evaluation, softmax_only_batches):
    """Every setting that changes a training step, which the workers of a cluster compare at start: the
    options, ``setup`` (vocabulary, data), the towers, and when each step evaluates (fine-tuning)."""
    settings = dict(setup, options=config.to_dict(), n_gpus=run.n_gpus, precision=run.precision,
                    softmax_only_batches=softmax_only_batches)
    if evaluation is not None:
        settings.update(eval_every=evaluation.every, patience=evaluation.patience,
                        eval_batch_size=evaluation.batch_size)
    return settings


def train_new_model(train_prefix, vocab_file, save_dir, log_dir=None, n_gpus=1, n_train_tokens=None,
                    token_input=False, seed=None, overwrite=False, checkpoint_every=1250, log_every=100,
                    keep_checkpoints=KEEP_CHECKPOINTS, cluster=None, worker_timeout=600.0, on_divergence="stop",
                    max_rollbacks=MAX_ROLLBACKS, precision="float32", **option_changes):
    """Train a new model on the files of ``train_prefix``: the original ELMo hyperparameters, then changes.

    Args:
        option_changes: options changed from ``bilm.core.options.ELMO_ORIGINAL``, as top-level
            keys (``batch_size=32``) or dotted paths (``**{"lstm.dim": 512}``).
        n_train_tokens: tokens per epoch (counted from the files when None).
        seed: seeds the shard order (``random``) and TensorFlow's initialisation,
            dropout and sampling.
        cluster: a ``bilm.training.cluster.Cluster``: this process is one of its workers (every
            worker runs this function with the same arguments).
        on_divergence, max_rollbacks, precision: as ``train``.
    Everything that can be checked (the save directory, the options, the vocabulary)
    is checked before the corpus is counted or anything is written.
    Returns the final training perplexity.
    """
    run = RunSettings(n_gpus, checkpoint_every, log_every, keep_checkpoints=keep_checkpoints, seed=seed,
                      cluster=cluster, worker_timeout=worker_timeout, on_divergence=on_divergence,
                      max_rollbacks=max_rollbacks, precision=precision)
    with _guard(save_dir, run):
        if run.chief:
            checkpoints.check_new_run(save_dir, overwrite)
        config, vocab, data = new_model(train_prefix, vocab_file, n_train_tokens, token_input, run.worker(),
                                        **option_changes)
        return _train(config, data, save_dir, log_dir or save_dir, run, Start(), vocab, overwrite,
                      setup=_setup(vocab, train_prefix))


def new_model(train_prefix, vocab_file, n_train_tokens=None, token_input=False, worker=(0, 1), **option_changes):
    """(config, vocab, data) of a new model on ``train_prefix`` (see ``train_new_model``), checked in that order:
    the options before the corpus is counted (``n_train_tokens`` None)."""
    max_chars = ELMO_ORIGINAL["char_cnn"]["max_characters_per_token"]
    vocab = load_vocab(vocab_file, None if token_input else max_chars)
    options = training_options(vocab.size, n_train_tokens or 1, token_input, **option_changes)
    config = ModelOptions(options, "the training options", training=True)  # checked before counting
    data = training_data(config, vocab, train_prefix, worker=worker)
    if n_train_tokens is None:
        config = config.replace(n_train_tokens=count_train_tokens(train_prefix, vocab))
    return config, vocab, data


def restart_training(train_prefix, vocab_file, save_dir, log_dir=None, n_gpus=1, checkpoint_every=1250,
                     log_every=100, keep_checkpoints=KEEP_CHECKPOINTS, cluster=None, worker_timeout=600.0,
                     on_divergence="stop", max_rollbacks=MAX_ROLLBACKS, precision="float32", **option_changes):
    """Continue training from the latest intact checkpoint of ``save_dir``.

    ``option_changes``: ``n_train_tokens``, ``n_epochs``, ``batch_size`` (None values are
    ignored). The tokens already trained count: the run trains the tokens left of
    ``n_epochs * n_train_tokens``, in batches of the new size. The vocabulary must be
    the run's (checked against ``vocabulary.json``). On a cluster every worker reads
    the options of ``save_dir``; the chief restores the checkpoint and gives the weights
    to the others. ``on_divergence``, ``max_rollbacks``, ``precision``: as ``train`` (a run may
    continue in another precision). Returns the final
    training perplexity.
    """
    run = RunSettings(n_gpus, checkpoint_every, log_every, keep_checkpoints=keep_checkpoints, cluster=cluster,
                      worker_timeout=worker_timeout, on_divergence=on_divergence, max_rollbacks=max_rollbacks,
                      precision=precision)
    with _guard(save_dir, run):
        checkpoints.check_not_a_finetune(save_dir)
        saved, ckpt_file = checkpoints.load_save_dir(save_dir)
        config = saved.replace(**{key: value for key, value in option_changes.items() if value is not None})
        data = training_data(config, vocab_file, train_prefix, worker=run.worker())
        checkpoints.check_vocabulary(save_dir, data.vocab, config)
        # A checkpoint that records no tokens trained counts its steps at the batch size it was trained with.
        start = Start(restart=ckpt_file, restart_step_tokens=tokens_per_step(saved, run.n_gpus) * run.worker()[1])
        return _train(config, data, save_dir, log_dir or save_dir, run, start,
                      setup=_setup(data.vocab, train_prefix))
