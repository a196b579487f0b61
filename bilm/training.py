"""Training a biLM: the training graph, multi-tower training, evaluation, export.

The network is ``bilm.network``'s, the same one the inference graph uses; this module
adds the inputs, dropout, the softmax and the optimisation. Variables live under the
scope ``lm/`` with the weight file's names, so ``dump_weights`` only strips the scope.
"""
import json
import logging
import os
import time

import h5py
import numpy as np
import tensorflow.compat.v1 as tf

from . import network
from . import options as opts
from .errors import OptionsError, OutputError, OutputExistsError
from .outputs import atomic_output, check_output
from .vocabulary import UnicodeCharsVocabulary, Vocabulary
from .weights import expected_weight_shapes

logger = logging.getLogger(__name__)

SCOPE = "lm"
DEFAULT_LEARNING_RATE = 0.2


def check_training_options(options, source="options"):
    """Check the keys training reads, on top of the network's; return ``options``."""
    opts.check_options(options, source, training=True)
    for key in ("batch_size", "unroll_steps", "n_tokens_vocab", "n_epochs", "n_train_tokens"):
        opts.require(options, key, source, int, minimum=1)
    if options.get("sample_softmax", True):
        opts.require(options, "n_negative_samples_batch", source, int, minimum=1)
    dropout = opts.require(options, "dropout", source, (int, float), required=False, minimum=0)
    if dropout is not None and dropout >= 1:
        raise OptionsError(f"{source}: key 'dropout' is {dropout}; expected a probability in [0, 1)")
    opts.require(options, "all_clip_norm_val", source, (int, float), required=False, minimum=0, nullable=True)
    for key in ("bidirectional", "sample_softmax", "share_embedding_softmax"):
        opts.require(options, key, source, bool, required=False)
    opts.require(options, "learning_rate", source, (int, float), required=False, minimum=0)
    if options.get("share_embedding_softmax") and opts.uses_char_cnn(options):
        raise OptionsError(
            f"{source}: key 'share_embedding_softmax' needs token input; a character model has no token "
            f"embedding matrix to share with the softmax (remove 'char_cnn' or the option)")
    return options


def original_training_options(n_tokens_vocab, n_train_tokens):
    """The original ELMo hyperparameters (bin/train_elmo.py of bilm-tf), per GPU batch 128."""
    return {
        "bidirectional": True,
        "char_cnn": {
            "activation": "relu", "embedding": {"dim": 16},
            "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]],
            "max_characters_per_token": 50, "n_characters": opts.N_CHARACTERS_TRAINING, "n_highway": 2,
        },
        "dropout": 0.1,
        "lstm": {"cell_clip": 3, "dim": 4096, "n_layers": 2, "proj_clip": 3, "projection_dim": 512,
                 "use_skip_connections": True},
        "all_clip_norm_val": 10.0,
        "n_epochs": 10,
        "n_train_tokens": n_train_tokens,
        "batch_size": 128,
        "n_tokens_vocab": n_tokens_vocab,
        "unroll_steps": 20,
        "n_negative_samples_batch": 8192,
    }


def inference_options(options):
    """A copy of training options for use with a weight file: ``n_characters`` 262."""
    options = json.loads(json.dumps(options))
    if opts.uses_char_cnn(options):
        options["char_cnn"]["n_characters"] = opts.N_CHARACTERS_INFERENCE
    return options


class LanguageModel:
    """The training (or evaluation) graph of one tower.

    Placeholders (B = ``batch_size``, T = ``unroll_steps``, C = max characters):
    ``token_ids`` (B, T) or ``tokens_characters`` (B, T, C), ``next_token_id`` (B, T),
    and the same with ``_reverse`` when ``bidirectional``. The LSTM states are carried
    from batch to batch in local variables (``state_update_op`` writes them; the local
    variables initializer zeroes them); back-propagation stops at the window.

    Attributes: ``total_loss`` (mean over tokens, mean of the directions),
    ``individual_losses``, ``lstm_outputs`` ([direction][layer] (B, T, P)).
    """

    def __init__(self, options, is_training):
        self.options = options
        self.is_training = is_training
        self.bidirectional = options.get("bidirectional", False)
        self.char_inputs = opts.uses_char_cnn(options)
        self.share_embedding_softmax = options.get("share_embedding_softmax", False)
        check_training_options(options)
        self.sample_softmax = options.get("sample_softmax", True)
        self.placeholders = {}  # batch key (as LMDataset names it) -> placeholder
        self._build()

    def _inputs(self, suffix):
        batch_size, unroll_steps = self.options["batch_size"], self.options["unroll_steps"]
        if self.char_inputs:
            max_chars = self.options["char_cnn"]["max_characters_per_token"]
            name, shape = "tokens_characters" + suffix, (batch_size, unroll_steps, max_chars)
        else:
            name, shape = "token_ids" + suffix, (batch_size, unroll_steps)
        ids = tf.placeholder(tf.int32, shape, name=name)
        next_ids = tf.placeholder(tf.int32, (batch_size, unroll_steps), name="next_token_id" + suffix)
        for placeholder_name, placeholder in ((name, ids), ("next_token_id" + suffix, next_ids)):
            self.placeholders[placeholder_name] = placeholder
            setattr(self, placeholder_name, placeholder)  # the original's attribute names
        return ids, next_ids

    def _embed(self, ids):
        if self.char_inputs:
            return network.char_cnn_embedding(ids, self.options)
        return network.token_embedding(ids, self.options["n_tokens_vocab"], opts.projection_dim(self.options))

    def _build(self):
        options = self.options
        dropout = (options.get("dropout") or None) if self.is_training else None  # a rate, or no dropout
        suffixes = ["", "_reverse"] if self.bidirectional else [""]

        self.states = network.CarriedStates(options, options["batch_size"], [tf.GraphKeys.LOCAL_VARIABLES])
        self.lstm_outputs, updates, self.individual_losses = [], [], []
        for direction, suffix in enumerate(suffixes):
            ids, next_ids = self._inputs(suffix)
            with tf.variable_scope(tf.get_variable_scope(), reuse=True if direction else None):
                embedding = self._embed(ids)  # (B, T, P); the reverse input shares the weights
                if self.share_embedding_softmax and direction == 0:
                    with tf.variable_scope(tf.get_variable_scope(), reuse=True):
                        self.embedding_weights = tf.get_variable("embedding")  # (n_vocab, P)
            outputs, finals = network.lstm_stack(
                embedding, self.states.read(direction, options["batch_size"]), options, direction,
                dropout=dropout)
            self.lstm_outputs.append(outputs)
            updates += self.states.write(direction, finals, options["batch_size"])
            top = outputs[-1]
            if dropout is not None:
                top = tf.nn.dropout(top, rate=dropout)
            self.individual_losses.append(self._softmax_loss(top, next_ids, reuse=direction > 0))
        self.state_update_op = tf.group(*updates)
        with tf.control_dependencies([self.state_update_op]):
            self.total_loss = tf.add_n(self.individual_losses) / len(self.individual_losses)

    def _softmax_loss(self, outputs, next_ids, reuse):
        """Mean loss per token: sampled softmax in training, full softmax otherwise."""
        proj_dim = opts.projection_dim(self.options)
        n_vocab = self.options["n_tokens_vocab"]
        with tf.variable_scope("softmax", reuse=True if reuse else None):
            if self.share_embedding_softmax:
                softmax_w = self.embedding_weights
            else:
                softmax_w = tf.get_variable("W", [n_vocab, proj_dim], network.DTYPE,
                                            tf.random_normal_initializer(0.0, 1.0 / np.sqrt(proj_dim)))
            softmax_b = tf.get_variable("b", [n_vocab], network.DTYPE, tf.zeros_initializer())
        flat_outputs = tf.reshape(outputs, [-1, proj_dim])
        flat_ids = tf.reshape(next_ids, [-1, 1])
        if self.is_training and self.sample_softmax:
            losses = tf.nn.sampled_softmax_loss(softmax_w, softmax_b, flat_ids, flat_outputs,
                                                self.options["n_negative_samples_batch"], n_vocab, num_true=1)
        else:
            logits = tf.matmul(flat_outputs, softmax_w, transpose_b=True) + softmax_b
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=flat_ids[:, 0], logits=logits)
        return tf.reduce_mean(losses)


def load_vocab(vocab_file, max_word_length=None):
    """The training vocabulary: characters too when ``max_word_length`` is given."""
    if max_word_length:
        return UnicodeCharsVocabulary(vocab_file, max_word_length, validate_file=True)
    return Vocabulary(vocab_file, validate_file=True)


def load_options_latest_checkpoint(tf_save_dir):
    """(options dict, path of the latest checkpoint) of a training directory."""
    options = opts.load_options(os.path.join(tf_save_dir, "options.json"))
    ckpt_file = tf.train.latest_checkpoint(tf_save_dir)
    if ckpt_file is None:
        raise OptionsError(f"{tf_save_dir}: no checkpoint found (expected a 'checkpoint' file written by train)")
    return options, ckpt_file


def _available_gpus():
    return len(tf.config.list_physical_devices("GPU"))


def _tower_device(worker):
    """Variables on the CPU (shared by the towers), every other op on ``worker``."""
    variable_ops = {"Variable", "VariableV2", "VarHandleOp", "AutoReloadVariable"}

    def device(op):
        return "/cpu:0" if op.type in variable_ops else worker

    return device


def _session_config(n_towers):
    """Soft placement; without GPUs, one CPU device per tower."""
    config = tf.ConfigProto(allow_soft_placement=True)
    if _available_gpus() == 0:
        config.device_count["CPU"] = max(n_towers, 1)
    return config


def average_gradients(tower_grads):
    """Average per-tower [(gradient, variable)] lists; sparse gradients stay sparse."""
    averaged = []
    n_towers = len(tower_grads)
    for pairs in zip(*tower_grads):
        grads, var = [g for g, _ in pairs], pairs[0][1]
        if grads[0] is None:
            continue
        if isinstance(grads[0], tf.IndexedSlices):
            values = tf.concat([g.values for g in grads], axis=0) / n_towers
            indices = tf.concat([g.indices for g in grads], axis=0)
            averaged.append((tf.IndexedSlices(values, indices, grads[0].dense_shape), var))
        else:
            averaged.append((tf.add_n(grads) / n_towers, var))
    return averaged


def build_training_graph(options, n_gpus):
    """Towers, averaged and clipped gradients, the Adagrad update and the summaries.

    Returns a dict of the ops ``train`` runs.
    """
    n_gpus_present = _available_gpus()
    global_step = tf.train.get_or_create_global_step()
    optimizer = tf.train.AdagradOptimizer(options.get("learning_rate", DEFAULT_LEARNING_RATE),
                                          initial_accumulator_value=1.0)
    models, tower_grads, losses = [], [], []
    for k in range(n_gpus):
        worker = f"/gpu:{k}" if n_gpus_present else f"/cpu:{k}"
        with tf.device(_tower_device(worker)), tf.name_scope(f"tower_{k}"):
            with tf.variable_scope(SCOPE, reuse=True if k else None):
                model = LanguageModel(options, is_training=True)
            grads = optimizer.compute_gradients(model.total_loss * options["unroll_steps"],
                                                aggregation_method=tf.AggregationMethod.EXPERIMENTAL_TREE)
        models.append(model)
        tower_grads.append(grads)
        losses.append(model.total_loss)

    with tf.device("/cpu:0"):
        grads_and_vars = average_gradients(tower_grads)
        grads, variables = zip(*grads_and_vars)
        grad_norm = tf.global_norm(grads)
        clip_norm = options.get("all_clip_norm_val")
        if clip_norm:
            grads, _ = tf.clip_by_global_norm(grads, clip_norm, use_norm=grad_norm)
        train_op = optimizer.apply_gradients(zip(grads, variables), global_step=global_step)
        train_perplexity = tf.exp(tf.add_n(losses) / n_gpus)
        with tf.control_dependencies([train_op]):
            step_after_update = tf.identity(global_step)
        summaries = tf.summary.merge([
            tf.summary.scalar("train_perplexity", train_perplexity),
            tf.summary.scalar("gradient_norm", grad_norm),
            tf.summary.scalar("gradient_norm_clipped", tf.global_norm(grads)),
        ])
        histograms = tf.summary.merge(
            [tf.summary.histogram(v.op.name, v) for v in variables]
            + [tf.summary.histogram(v.op.name + "/gradient", g) for g, v in zip(grads, variables)]
        )
    return {"models": models, "train_op": train_op, "train_perplexity": train_perplexity,
            "global_step": global_step, "step_after_update": step_after_update, "summaries": summaries,
            "histograms": histograms}


def _feed(models, batch):
    """Split a (n_towers * B, ...) batch into the towers' placeholders."""
    feed = {}
    for k, model in enumerate(models):
        rows = slice(k * model.options["batch_size"], (k + 1) * model.options["batch_size"])
        feed.update({placeholder: batch[name][rows] for name, placeholder in model.placeholders.items()})
    return feed


def _prepare_save_dir(tf_save_dir, restart_ckpt_file, overwrite):
    """Create ``tf_save_dir``; refuse (or with ``overwrite`` clear) earlier checkpoints of a new run."""
    try:
        os.makedirs(tf_save_dir, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{tf_save_dir}: cannot create the save directory ({os.strerror(err.errno)})") from None
    if restart_ckpt_file is not None or tf.train.latest_checkpoint(tf_save_dir) is None:
        return
    if not overwrite:
        raise OutputExistsError(f"{tf_save_dir}: has checkpoints of an earlier run; continue it with restart, or "
                                f"pass overwrite=True (--overwrite) to start a new model there")
    for name in os.listdir(tf_save_dir):
        if name == "checkpoint" or name.startswith("model.ckpt-"):
            os.remove(os.path.join(tf_save_dir, name))


def n_batches_total(options, n_gpus):
    """Training steps: epochs x tokens / tokens per step (all towers)."""
    tokens_per_step = options["batch_size"] * options["unroll_steps"] * n_gpus
    return max(1, options["n_epochs"] * options["n_train_tokens"] // tokens_per_step)


def train(options, data, n_gpus, tf_save_dir, tf_log_dir, restart_ckpt_file=None,
          checkpoint_every=1250, log_every=100, histogram_every=1250, seed=None, overwrite=False):
    """Train a biLM on ``data`` (an ``LMDataset``/``BidirectionalLMDataset``).

    Args:
        options: training options (see README); written to ``tf_save_dir/options.json``.
        n_gpus: number of towers; each reads ``batch_size`` rows of every batch. On
            GPUs when present, else on as many CPU devices.
        tf_save_dir: checkpoints (``model.ckpt-STEP``) every ``checkpoint_every``
            batches and at the end.
        tf_log_dir: TensorBoard summaries (perplexity and gradient norms every
            ``log_every`` batches, histograms every ``histogram_every``).
        restart_ckpt_file: continue from this checkpoint: its global step counts
            toward the total number of batches, its optimizer state is kept.
        seed: graph-level TensorFlow seed (initialisation, dropout, sampling).
        overwrite: start a new model in a ``tf_save_dir`` that already has checkpoints
            (their files are removed); without it that is an error (use restart).
    Returns:
        the final training perplexity.
    """
    check_training_options(options)
    vocab_size = getattr(getattr(data, "vocab", None), "size", None)
    if vocab_size is not None and vocab_size > options["n_tokens_vocab"]:
        raise OptionsError(f"options: key 'n_tokens_vocab' is {options['n_tokens_vocab']}; the training "
                           f"vocabulary has {vocab_size} tokens, so expected at least {vocab_size}")
    _prepare_save_dir(tf_save_dir, restart_ckpt_file, overwrite)
    with atomic_output(os.path.join(tf_save_dir, "options.json"), overwrite=True) as temporary:
        with open(temporary, "w", encoding="utf-8") as fout:
            json.dump(options, fout, indent=1)

    total = n_batches_total(options, n_gpus)
    tokens_per_step = options["batch_size"] * options["unroll_steps"] * n_gpus
    with tf.Graph().as_default():
        if seed is not None:
            tf.set_random_seed(seed)
        graph = build_training_graph(options, n_gpus)
        saver = tf.train.Saver(tf.global_variables(), max_to_keep=2)
        models = graph["models"]
        with tf.Session(config=_session_config(n_gpus)) as sess:
            sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
            if restart_ckpt_file:
                saver.restore(sess, restart_ckpt_file)
            writer = tf.summary.FileWriter(tf_log_dir, sess.graph)
            step = int(sess.run(graph["global_step"]))
            logger.info("training %d batches of %d tokens (%d done), %d tower(s)", total, tokens_per_step, step, n_gpus)
            perplexity, start, start_step = float("nan"), time.time(), step
            batches = data.iter_batches(options["batch_size"] * n_gpus, options["unroll_steps"])
            while step < total:
                batch = next(batches)
                fetches = [graph["train_op"], graph["train_perplexity"], graph["step_after_update"]]
                want_summary = (step + 1) % log_every == 0
                want_histograms = (step + 1) % histogram_every == 0
                if want_summary:
                    fetches.append(graph["summaries"])
                if want_histograms:
                    fetches.append(graph["histograms"])
                _, perplexity, step, *summaries = sess.run(fetches, _feed(models, batch))
                for summary in summaries:
                    writer.add_summary(summary, step)
                if step == start_step + 1:  # time from the end of the first batch (graph set-up excluded)
                    start = time.time()
                if want_summary and step > start_step + 1:
                    elapsed = time.time() - start
                    rate = (step - start_step - 1) * tokens_per_step / elapsed
                    eta = (total - step) * tokens_per_step / rate
                    logger.info("batch %d/%d: train perplexity %.2f, %.0f tokens/s, ETA %s",
                                step, total, perplexity, rate, time.strftime("%H:%M:%S", time.gmtime(eta)))
                if step % checkpoint_every == 0 or step >= total:
                    saver.save(sess, os.path.join(tf_save_dir, "model.ckpt"), global_step=step)
            writer.close()
    return float(perplexity)


def test(options, ckpt_file, data, batch_size=256):
    """Perplexity of a checkpoint on ``data`` (test mode), full softmax, states carried.

    Runs one token per row per step (``unroll_steps`` 1) as the original did; the final
    incomplete batch is not counted. Returns exp(mean batch loss).
    """
    test_options = dict(options, batch_size=batch_size, unroll_steps=1)
    with tf.Graph().as_default():
        with tf.variable_scope(SCOPE):
            model = LanguageModel(test_options, is_training=False)
        with tf.Session(config=tf.ConfigProto(allow_soft_placement=True)) as sess:
            sess.run(tf.local_variables_initializer())
            tf.train.Saver(tf.global_variables()).restore(sess, ckpt_file)
            losses = []
            for batch in data.iter_batches(batch_size, 1):
                losses.append(sess.run(model.total_loss, _feed([model], batch)))
    if not losses:
        raise OptionsError(f"the test data has fewer than batch_size={batch_size} token streams' worth of "
                           f"tokens; use a smaller batch_size")
    perplexity = float(np.exp(np.mean(losses)))
    logger.info("perplexity %.3f over %d batches", perplexity, len(losses))
    return perplexity


def dump_weights(tf_save_dir, outfile, options_outfile=None, overwrite=False):
    """Write the latest checkpoint's weights as an HDF5 weight file (no softmax).

    Datasets are the trainable variables, named as in the original's weight files
    (``char_embed`` keeps its 261 rows; token models also get ``embedding``). With
    ``options_outfile``, also write the options for inference (``n_characters`` 262).
    Existing output files are replaced only with ``overwrite``.
    """
    check_output(outfile, overwrite)
    if options_outfile:
        check_output(options_outfile, overwrite)
    options, ckpt_file = load_options_latest_checkpoint(tf_save_dir)
    with tf.Graph().as_default():
        with tf.variable_scope(SCOPE):
            LanguageModel(options, is_training=False)
        variables = [v for v in tf.trainable_variables() if "/softmax/" not in v.name]
        with tf.Session() as sess:
            tf.train.Saver(variables).restore(sess, ckpt_file)
            values = sess.run(variables)
    expected = expected_weight_shapes(options, n_directions=2 if options.get("bidirectional") else 1)
    with atomic_output(outfile, overwrite) as temporary, h5py.File(temporary, "w") as fout:
        for var, value in zip(variables, values):
            name = var.op.name[len(SCOPE) + 1:]
            if name in expected and tuple(value.shape) != expected[name]:
                raise OptionsError(f"{ckpt_file}: variable {name} has shape {value.shape}, expected {expected[name]}")
            fout.create_dataset(name, data=value, dtype="float32")
    if options_outfile:
        with atomic_output(options_outfile, overwrite) as temporary, open(temporary, "w", encoding="utf-8") as fout:
            json.dump(inference_options(options), fout, indent=1)
    logger.info("wrote %d weight datasets to %s", len(variables), outfile)
