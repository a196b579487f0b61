"""The training graph: the language-model loss of one tower, towers, averaged gradients, the update.

The network is ``bilm.core.network``'s, the same one the inference graph uses; this module
adds the inputs, dropout, the softmax and the optimisation. Variables live under the
scope ``lm/`` with the weight file's names (``bilm.core.layout``).

Shapes: B ``batch_size`` per tower, T ``unroll_steps``, C ``max_characters_per_token``,
P ``projection_dim``, V ``n_tokens_vocab``.
"""
import zlib

import tensorflow.compat.v1 as tf

from ..core import layout, network, precision, sessions, states
from .checkpoints import TOKENS_TRAINED
from ..core.options import ADAGRAD_INITIAL_ACCUMULATOR, ModelOptions

SCOPE = layout.TRAINING_SCOPE


class LanguageModel:
    """The training (or evaluation) graph of one tower.

    Placeholders: ``token_ids`` (B, T) or ``tokens_characters`` (B, T, C),
    ``next_token_id`` (B, T), and the same with ``_reverse`` when ``bidirectional``.
    The LSTM states are carried from batch to batch in local variables (the local
    variables initializer zeroes them); back-propagation stops at the window.

    Args:
        options: training options (a dict, as in the original, or ``ModelOptions``).
        is_training: sampled softmax and dropout (else full softmax, no dropout).
        sentence_starts: (evaluation, ``unroll_steps`` 1) the placeholders ``sentence_start``
            (and ``sentence_start_reverse``), bool (B, 1): a row whose input starts a sentence
            starts from fixed states (``states.SentenceStarts``) instead of the carried ones.
        precision: ``"float32"``, or ``"bfloat16"``/``"float16"`` (mixed precision): the products
            and convolutions of the char CNN and the LSTMs take their inputs in the reduced type
            (the float32 variables cast once per batch: ``bilm.core.precision``); additions,
            activations, states, the softmax and the loss stay float32.

    Attributes: ``total_loss`` (mean over tokens, mean of the directions),
    ``individual_losses`` (per direction, mean over tokens), ``token_losses`` (per
    direction, each target's negative log-probability (B, T); the full softmax's
    when not ``is_training``), ``lstm_outputs`` ([direction][layer] (B, T, P)),
    ``placeholders`` {batch key: placeholder}, ``options`` (the dict).
    """

    def __init__(self, options, is_training, sentence_starts=False, precision="float32"):
        self.config = ModelOptions.of(options, training=True)
        self.precision = precision
        self.sentence_starts = sentence_starts
        self.options = self.config.to_dict()
        self.is_training = is_training
        self.bidirectional = self.config.bidirectional
        self.char_inputs = self.config.char_input
        self.share_embedding_softmax = self.config.share_embedding_softmax
        self.sample_softmax = self.config.sample_softmax
        self.placeholders = {}
        self._build()

    @staticmethod
    def _seed(what):
        """An operation seed for dropout or sampling in a seeded graph (else None: TensorFlow's own): it
        depends on the graph's seed, the tower's name scope and ``what`` only, not on how many operations
        came before, so a run's random streams are the same in every precision (a mixed-precision graph
        has more operations)."""
        graph = tf.get_default_graph()
        if graph.seed is None:
            return None
        return zlib.crc32(f"{graph.get_name_scope()}/{what}".encode()) % 2 ** 30

    def _inputs(self, suffix):
        config = self.config
        batch_size, unroll_steps = config.batch_size, config.unroll_steps
        if self.char_inputs:
            name, shape = "tokens_characters" + suffix, (batch_size, unroll_steps, config.max_characters)
        else:
            name, shape = "token_ids" + suffix, (batch_size, unroll_steps)
        ids = tf.placeholder(tf.int32, shape, name=name)
        next_ids = tf.placeholder(tf.int32, (batch_size, unroll_steps), name="next_token_id" + suffix)
        for placeholder_name, placeholder in ((name, ids), ("next_token_id" + suffix, next_ids)):
            self.placeholders[placeholder_name] = placeholder
            setattr(self, placeholder_name, placeholder)  # the original's attribute names
        return ids, next_ids

    def _build(self):
        config = self.config
        dropout = config.dropout if self.is_training else 0.0
        parameters = layout.model_parameters(config, config.n_directions, softmax=True,
                                             token_rows=None if self.char_inputs else config.n_tokens_vocab)
        self.params = network.create_variables(parameters)
        if self.share_embedding_softmax:
            self.params["softmax/W"] = self.params[layout.TOKEN_EMBEDDING_NAME]
        body = {name: value for name, value in self.params.items() if not name.startswith("softmax/")}
        compute = precision.reduced_parameters(body, parameters, self.precision)  # the softmax stays float32
        policy = states.SentenceStarts if self.sentence_starts else states.Stateful
        self.states = policy(config, config.batch_size, [tf.GraphKeys.LOCAL_VARIABLES])
        if self.sentence_starts:
            for direction in range(config.n_directions):
                self.placeholders["sentence_start" + ("_reverse" if direction else "")] = self.states.starts[direction]
        inputs = [self._inputs("_reverse" if direction else "") for direction in range(config.n_directions)]
        # Both directions' tokens through the char CNN at once: each distinct token once.
        all_ids = tf.concat([ids for ids, _ in inputs], axis=0)  # (directions B, T[, C])
        if self.char_inputs:
            all_embeddings = network.char_cnn_embedding(all_ids, config, compute, distinct=True)
        else:
            all_embeddings = network.token_embedding(all_ids, compute)
        embeddings = tf.split(all_embeddings, config.n_directions, axis=0)  # (B, T, P) each
        self.lstm_outputs, updates, self.token_losses = [], [], []
        for direction, ((_, next_ids), embedding) in enumerate(zip(inputs, embeddings)):
            outputs, finals = network.lstm_stack(embedding, self.states.initial(direction, config.batch_size),
                                                 config, compute, direction, dropout=dropout,
                                                 seed=self._seed(f"dropout_{direction}"))
            self.lstm_outputs.append(outputs)
            updates += self.states.store(direction, finals, config.batch_size)
            top = tf.nn.dropout(outputs[-1], rate=dropout, seed=self._seed(f"dropout_top_{direction}")) \
                if dropout else outputs[-1]
            self.token_losses.append(self._softmax_loss(top, next_ids, self._seed(f"sampling_{direction}")))
        self.individual_losses = [tf.reduce_mean(losses) for losses in self.token_losses]
        self.state_update_op = tf.group(*updates)
        with tf.control_dependencies([self.state_update_op]):
            self.total_loss = tf.add_n(self.individual_losses) / len(self.individual_losses)

    def _softmax_loss(self, outputs, next_ids, seed=None):
        """The loss of each target (B, T): sampled softmax in training, full softmax otherwise."""
        config = self.config
        softmax_w, softmax_b = self.params["softmax/W"], self.params["softmax/b"]
        flat_outputs = tf.reshape(outputs, [-1, config.projection_dim])  # (B T, P)
        flat_ids = tf.reshape(next_ids, [-1, 1])
        if self.is_training and self.sample_softmax:
            losses = tf.nn.sampled_softmax_loss(softmax_w, softmax_b, flat_ids, flat_outputs,
                                                config.n_negative_samples, config.n_tokens_vocab, num_true=1,
                                                seed=seed)
        else:
            logits = tf.matmul(flat_outputs, softmax_w, transpose_b=True) + softmax_b  # (B T, V)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=flat_ids[:, 0], logits=logits)
        return tf.reshape(losses, tf.shape(next_ids))


def available_gpus():
    return len(tf.config.list_physical_devices("GPU"))


def _tower_device(worker):
    """Variables on the CPU (shared by the towers), every other op on ``worker``."""
    variable_ops = {"Variable", "VariableV2", "VarHandleOp", "AutoReloadVariable"}

    def device(op):
        return "/cpu:0" if op.type in variable_ops else worker

    return device


def session_config(n_towers, n_directions=2):
    """Soft placement; no Grappler rewrites; without GPUs, one CPU device per tower and the cores shared
    by the towers' LSTM directions, which run side by side (``sessions.config``)."""
    if available_gpus():
        return sessions.config(graph_rewrites=False)
    n_towers = max(n_towers, 1)
    return sessions.config(n_cpu_devices=n_towers, graph_rewrites=False, branches=n_towers * n_directions)


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


def _where_finite(finite, grad):
    """``grad`` if ``finite``, else zeros (sparse gradients stay sparse)."""
    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(tf.where_v2(finite, grad.values, 0.0), grad.indices, grad.dense_shape)
    return tf.where_v2(finite, grad, 0.0)


class LossScale:
    """Dynamic loss scaling (float16 training): the loss is multiplied by ``value`` before
    back-propagation, so that small gradients survive float16, and the gradients divided by it
    after. A batch whose scaled gradients overflow is skipped and the scale halved (down to 1);
    after ``GROWTH_STEPS`` batches without overflow it doubles. Local variables: not saved in
    checkpoints, which stay those of a float32 run; a restarted run starts from ``START`` again.
    """
    START, GROWTH_STEPS = 2.0 ** 15, 2000

    def __init__(self):
        local = [tf.GraphKeys.LOCAL_VARIABLES]
        self.value = tf.Variable(self.START, trainable=False, collections=local, name="loss_scale")
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, collections=local, name="loss_scale_good")

    def unscale(self, grad):
        if isinstance(grad, tf.IndexedSlices):
            return tf.IndexedSlices(grad.values / self.value, grad.indices, grad.dense_shape)
        return None if grad is None else grad / self.value

    def update(self, overflow):
        """Halve on overflow, double after ``GROWTH_STEPS`` good batches."""
        grow = tf.logical_and(tf.logical_not(overflow), self.good_steps + 1 >= self.GROWTH_STEPS)
        new_value = tf.where_v2(overflow, tf.maximum(self.value / 2.0, 1.0),
                                tf.where_v2(grow, self.value * 2.0, self.value))
        new_good = tf.where_v2(tf.logical_or(overflow, grow), tf.constant(0, tf.int64), self.good_steps + 1)
        return tf.group(self.value.assign(new_value), self.good_steps.assign(new_good))


def build_training_graph(options, n_gpus, collectives=None, precision="float32"):
    """Towers, averaged and clipped gradients, the Adagrad update and the summaries.

    A batch whose loss or gradient norm is not finite changes no weight (its gradients
    are replaced by zeros) and is reported by ``finite``, so a diverging run can stop
    with its weights still those of the last good batch.

    Args:
        options: training options (dict or ``ModelOptions``); ``batch_size`` per tower.
        n_gpus: towers: on GPUs when present, else on as many CPU devices.
        collectives: a ``bilm.training.cluster.Collectives``: average the gradients (and the loss)
            across the workers of a cluster too.
        precision: of the towers' products (``LanguageModel``); the variables, the optimizer's
            state and the update are float32 whatever it is. ``"float16"`` scales the loss
            (``LossScale``): a batch whose gradients overflow is ``skipped`` (no weight, step or
            token count changes).
    Returns:
        a dict of the ops ``train`` runs: ``models`` (one ``LanguageModel`` per tower),
        ``train_op`` and ``softmax_train_op`` (the update of all weights, of the softmax alone; their
        value is the global step after the update),
        ``train_loss`` (the batch's loss, mean over towers and workers), ``train_perplexity`` (its exp),
        ``finite`` (bool: the batch was applied), ``skipped`` (bool: float16 gradients overflowed, the
        batch was not applied and the loss scale lowered), ``reset_states`` (zero the LSTM states),
        ``global_step``, ``tokens_trained`` (int64 variable: tokens trained on, all
        towers), ``grad_norm``, ``weights_finite``,
        ``summaries``, ``histograms``.
    """
    config = ModelOptions.of(options, training=True)
    gpus = available_gpus()
    global_step = tf.train.get_or_create_global_step()
    tokens_trained = tf.Variable(0, dtype=tf.int64, trainable=False, name=TOKENS_TRAINED)
    optimizer = tf.train.AdagradOptimizer(config.learning_rate, initial_accumulator_value=ADAGRAD_INITIAL_ACCUMULATOR)
    loss_scale = LossScale() if precision == "float16" else None
    models, tower_grads, losses = [], [], []
    for k in range(n_gpus):
        worker = f"/gpu:{k}" if gpus else f"/cpu:{k}"
        with tf.device(_tower_device(worker)), tf.name_scope(f"tower_{k}"):
            with tf.variable_scope(SCOPE, reuse=True if k else None):
                model = LanguageModel(config, is_training=True, precision=precision)
            scaled_loss = model.total_loss * config.unroll_steps
            if loss_scale is not None:
                scaled_loss *= loss_scale.value
            grads = optimizer.compute_gradients(scaled_loss, aggregation_method=tf.AggregationMethod.EXPERIMENTAL_TREE)
            if loss_scale is not None:
                grads = [(loss_scale.unscale(g), v) for g, v in grads]
        models.append(model)
        tower_grads.append(grads)
        losses.append(model.total_loss)

    with tf.device("/cpu:0"):
        grads_and_vars = average_gradients(tower_grads)
        loss = tf.add_n(losses) / n_gpus
        n_workers = 1
        if collectives is not None:  # the average over every worker's towers
            grads_and_vars = collectives.mean_gradients(grads_and_vars)
            loss = collectives.mean(loss)
            n_workers = collectives.cluster.size
        grads, variables = zip(*grads_and_vars)
        grad_norm = tf.global_norm(grads)
        loss_finite, grads_finite = tf.math.is_finite(loss), tf.math.is_finite(grad_norm)
        finite = tf.logical_and(grads_finite, loss_finite)
        skipped, scale_update = tf.constant(False), tf.no_op()
        if loss_scale is not None:  # an overflow, not a divergence, while the scale can still go down
            skipped = tf.logical_and(tf.logical_and(loss_finite, tf.logical_not(grads_finite)), loss_scale.value > 1.0)
            scale_update = loss_scale.update(tf.logical_and(loss_finite, tf.logical_not(grads_finite)))
            grad_norm = tf.where_v2(skipped, 0.0, grad_norm)
        if config.clip_norm:
            grads, _ = tf.clip_by_global_norm(grads, config.clip_norm, use_norm=grad_norm)
        grads = [_where_finite(finite, g) for g in grads]
        tokens_per_step = config.batch_size * config.unroll_steps * n_gpus * n_workers
        counted = 1 - tf.cast(skipped, tf.int64)

        def update(pairs):
            """Apply the gradients; the value is the global step after the update."""
            with tf.control_dependencies([optimizer.apply_gradients(pairs), scale_update]):
                with tf.control_dependencies([global_step.assign_add(counted),
                                              tokens_trained.assign_add(tokens_per_step * counted)]):
                    return tf.identity(global_step)

        train_op = update(list(zip(grads, variables)))
        # Only the softmax learns (fine-tuning a pretrained body with a new softmax, at first).
        softmax = {f"{SCOPE}/{param.name}" for param in layout.softmax_parameters(config)}
        softmax_train_op = update([(g, v) for g, v in zip(grads, variables) if v.op.name in softmax])
        train_perplexity = tf.exp(loss)
        weights_finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])
        summaries = tf.summary.merge([
            tf.summary.scalar("train_perplexity", train_perplexity),
            tf.summary.scalar("gradient_norm", grad_norm),
            tf.summary.scalar("gradient_norm_clipped", tf.global_norm(grads)),
        ] + ([tf.summary.scalar("loss_scale", loss_scale.value)] if loss_scale is not None else []))
        histograms = tf.summary.merge(
            [tf.summary.histogram(v.op.name, v) for v in variables]
            + [tf.summary.histogram(v.op.name + "/gradient", g.values if isinstance(g, tf.IndexedSlices) else g)
               for g, v in zip(grads, variables)]  # the rows a sparse gradient has (not densified)
        )
    return {"models": models, "train_op": train_op, "softmax_train_op": softmax_train_op,
            "train_perplexity": train_perplexity, "train_loss": loss, "finite": finite, "skipped": skipped,
            "reset_states": tf.variables_initializer([v for m in models for v in m.states.flat_variables()]),
            "global_step": global_step, "tokens_trained": tokens_trained,
            "grad_norm": grad_norm, "weights_finite": weights_finite, "summaries": summaries,
            "histograms": histograms}


def feed(models, batch):
    """Split a (n_towers * B, ...) batch into the towers' placeholders."""
    feed_dict = {}
    for k, model in enumerate(models):
        rows = slice(k * model.config.batch_size, (k + 1) * model.config.batch_size)
        feed_dict.update({placeholder: batch[name][rows] for name, placeholder in model.placeholders.items()})
    return feed_dict
