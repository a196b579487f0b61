"""What a training run will do, before it starts (``bilm train --plan``): nothing is trained or written.

``plan_training`` gives a ``Plan``: the parameters (counted from ``bilm.layout``), the
tokens per epoch and batches (the trainer's own arithmetic), the memory estimated from the
options (float32 weights and Adagrad accumulators, shared by the towers; per tower the
gradients and the activations kept for back-propagation), and, measured on a few real
training steps of the run's own configuration and data on this machine's devices, the
memory and the step time, with the time to the end that follows. Beside them, the time
to the end at the GPU step times the README states for the paper's model (assumptions,
not measurements): 1.21 s on a GTX 1080, derived from the original's "two weeks for 10
epochs on 3 GPUs", and 0.30 s assumed for a current GPU.
"""
import logging
import math
import resource
import statistics
import time
from dataclasses import dataclass

from .checkpoints import training_parameters
from ..core.download import CATALOGUE
from ..errors import TrainingError, tensorflow_reason
from ..core.layout import SOFTMAX
from .dataset import shard_files
from ..core.options import ELMO_ORIGINAL
from .loop import new_model, tokens_per_step

logger = logging.getLogger(__name__)

# The original's run: 10 epochs of its n_train_tokens in two weeks on 3 GTX 1080s, 128 x 20 tokens per GPU a step.
_ORIGINAL_BATCHES = 10 * CATALOGUE["lm1b"]["n_train_tokens"] // (128 * 20 * 3)
ASSUMED_STEPS = [(14 * 86400 / _ORIGINAL_BATCHES, "a GTX 1080 per tower, from the original's two weeks for 10 epochs "
                                                  "on 3 GPUs"),
                 (0.30, "a current GPU per tower: an assumption, not a measurement")]
PAPER_MODEL_KEYS = ("char_cnn", "lstm", "batch_size", "unroll_steps", "n_negative_samples_batch")
FLOAT32 = 4


@dataclass
class Measurement:
    """A few training steps run here: ``step_seconds`` (median, after a first step not counted: set-up excluded),
    ``peak_bytes`` and what it measures, ``devices``."""

    steps: int
    step_seconds: float
    peak_bytes: int
    memory_what: str
    devices: str


@dataclass
class Plan:
    """A training run on paper: see the module doc. ``memory`` holds bytes: ``weights`` and ``accumulators``
    (shared by the towers), ``gradients`` and ``activations`` (per tower)."""

    config: object
    n_towers: int
    n_workers: int
    train_files: int
    tokens_source: str
    parameters: int
    softmax_parameters: int
    memory: dict
    measured: Measurement = None

    @property
    def tokens_per_batch(self):
        return tokens_per_step(self.config, self.n_towers) * self.n_workers

    @property
    def batches(self):
        """Batches of the whole run, as the trainer counts them (at least one)."""
        return max(1, self.config.n_epochs * self.config.n_train_tokens // self.tokens_per_batch)

    def lines(self):
        """The plan, as ``bilm train --plan`` prints it."""
        c = self.config
        model = (f"character input (char CNN of {len(c.filters)} filters, {c.n_filters:,} channels, {c.n_highway} "
                 f"highway layers)" if c.char_input else "token input")
        towers = f"{self.n_towers} tower(s)" + (f" x {self.n_workers} workers" if self.n_workers > 1 else "")
        memory = {key: f"{value / 1e9:.2f} GB" for key, value in self.memory.items()}
        lines = [
            f"model: {model}, {c.n_layers} x LSTM {c.lstm_dim:,} projected to {c.projection_dim:,}, "
            f"{'bidirectional' if c.bidirectional else 'forward only'}, vocabulary {c.n_tokens_vocab:,}",
            f"parameters: {self.parameters:,} trained ({self.softmax_parameters:,} of them the softmax)",
            f"data: {self.train_files} training file(s); tokens per epoch: {c.n_train_tokens:,} ({self.tokens_source})",
            f"batches: {self.batches:,} = {c.n_epochs} epochs x {c.n_train_tokens:,} tokens / "
            f"{self.tokens_per_batch:,} tokens a batch ({c.batch_size} streams x {c.unroll_steps} steps x {towers})",
            f"memory, estimated (float32): shared by the towers, weights {memory['weights']} + Adagrad accumulators "
            f"{memory['accumulators']}; per tower, gradients {memory['gradients']} + activations "
            f"{memory['activations']} (the tensors kept for back-propagation)",
        ]
        if self.measured is None:
            lines.append("measured: nothing (--plan_steps 0)")
        else:
            m = self.measured
            lines += [
                f"memory, measured over {m.steps + 1} steps on {m.devices}: {m.memory_what} "
                f"{m.peak_bytes / 1e9:.2f} GB",
                f"step time, measured on {m.devices}: {_seconds(m.step_seconds)} s (median of {m.steps} steps after a first "
                f"one; set-up excluded), {self.tokens_per_batch / m.step_seconds:,.0f} tokens/s -> "
                f"{self.batches:,} batches in {duration(self.batches * m.step_seconds)}",
            ]
        paper = all(c.to_dict().get(key) == ELMO_ORIGINAL[key] for key in PAPER_MODEL_KEYS)
        for seconds, what in ASSUMED_STEPS:
            lines.append(f"step time, assumed: {seconds:.2f} s ({what}) -> {duration(self.batches * seconds)}"
                         + ("" if paper else " (for the paper's model at 128 x 20 tokens a tower, not this one)"))
        lines.append("nothing was trained or written (--plan)")
        return lines


def _seconds(value):
    """Three significant digits ('0.00848', '41.2'), whole seconds from 100."""
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def duration(seconds):
    """'42 min', '5.2 hours', '14.0 days'."""
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.1f} days"


def parameter_counts(config):
    """(all trained parameters, those of the softmax) of a training run's model."""
    parameters = training_parameters(config).values()
    total = sum(math.prod(p.shape) for p in parameters)
    return total, sum(math.prod(p.shape) for p in parameters if p.group == SOFTMAX)


def memory_estimate(config):
    """Bytes (float32): {"weights", "accumulators"} shared by the towers, {"gradients", "activations"} per tower.

    Gradients: dense for the body, the sampled rows of the softmax (targets and negatives,
    each direction). Activations, per direction and token of the tower's B x T: the char
    CNN's (char embeddings, every convolution's outputs, highway gates, projection; for both
    directions' tokens, an upper bound: each distinct token runs once), each LSTM layer's
    (gates before and after their activations 8D, cell and its tanh 2D, output D, projection
    and input 2P) and the softmax's logits and probabilities.
    """
    total, softmax = parameter_counts(config)
    tokens = config.batch_size * config.unroll_steps * config.n_directions
    d, p = config.lstm_dim, config.projection_dim
    if config.char_input:
        c, f = config.max_characters, config.n_filters
        per_token = (c * config.char_embedding_dim + sum((c - width + 1) * n for width, n in config.filters)
                     + f + 3 * f * config.n_highway + p)
    else:
        per_token = p
    sampled = config.sample_softmax
    classes = config.n_negative_samples + 1 if sampled else config.n_tokens_vocab
    rows = tokens + config.n_directions * config.n_negative_samples if sampled else config.n_tokens_vocab
    activations = tokens * (per_token + config.n_layers * (11 * d + 2 * p) + 2 * classes)
    return {"weights": FLOAT32 * total, "accumulators": FLOAT32 * total,
            "gradients": FLOAT32 * (total - softmax + min(rows, config.n_tokens_vocab) * (p + 1)),
            "activations": FLOAT32 * activations}


def _peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _gpu_peak(tf, reset=False):
    """GPU 0's peak bytes from TensorFlow's allocator, or None where it does not say (``reset``: start again)."""
    try:
        if reset:
            tf.config.experimental.reset_memory_stats("GPU:0")
            return None
        return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    except (ValueError, RuntimeError):
        return None


def measure(config, data, n_towers, steps):
    """Run ``steps`` + 1 training steps of ``config`` on ``data`` here (nothing saved); the first is not timed."""
    import tensorflow.compat.v1 as tf

    from ..core import precision, sessions
    from .graph import available_gpus, build_training_graph, feed, session_config

    gpus = available_gpus()
    devices = f"{n_towers} GPU(s)" if gpus else f"{n_towers} CPU device(s)"
    logger.info("measuring %d training steps on %s (and a first one, not timed)", steps, devices)
    batches = data.iter_batches(config.batch_size * n_towers, config.unroll_steps)
    try:
        with tf.Graph().as_default():
            graph = build_training_graph(config, n_towers)
            feeds = [feed(graph["models"], next(batches)) for _ in range(steps + 1)]  # read before the clock
            with tf.Session(config=session_config(n_towers, config.n_directions)) as sess, precision.exact():
                sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
                if gpus:
                    _gpu_peak(tf, reset=True)
                sessions.run(sess, graph["train_op"], feeds[0])
                times = []
                for step_feed in feeds[1:]:
                    start = time.perf_counter()
                    sessions.run(sess, graph["train_op"], step_feed)
                    times.append(time.perf_counter() - start)
                peak, what = _gpu_peak(tf) if gpus else None, "peak memory of GPU 0"
                if peak is None:
                    peak, what = _peak_rss(), "peak resident memory of the process (all towers, weights included)"
    except tf.errors.OpError as err:
        raise TrainingError(f"measuring the training step failed: {tensorflow_reason(err)}") from None
    finally:
        batches.close()
    return Measurement(steps, statistics.median(times), peak, what, devices)


def plan_training(train_prefix, vocab_file, n_gpus=1, n_train_tokens=None, tokens_source=None, token_input=False,
                  n_workers=1, steps=3, **option_changes):
    """The ``Plan`` of ``train_new_model`` with these arguments (``steps`` measured steps, 0 for none).

    ``tokens_source`` says where ``n_train_tokens`` comes from (counted from the files when None).
    """
    config, _, data = new_model(train_prefix, vocab_file, n_train_tokens, token_input, **option_changes)
    total, softmax = parameter_counts(config)
    source = tokens_source or ("--n_train_tokens" if n_train_tokens else "counted from the files")
    measured = measure(config, data, n_gpus, steps) if steps else None
    return Plan(config, n_gpus, n_workers, len(shard_files(train_prefix)), source, total, softmax,
                memory_estimate(config), measured)
