"""Whether ``--precision bfloat16`` would be faster here: measured once per model and machine, said in one line.

When the hardware computes bfloat16 natively (``bilm.core.precision.native_bfloat16``) and
an embedding job runs in exact float32 (the default), ``log_hint`` logs one INFO line, e.g.

    --precision bfloat16 would embed about 1.9x faster on this machine (measured on this model:
    top-layer vectors' mean cosine 0.99994 to float32); float32 stays the default (exact)

``measure`` makes the numbers: the first ``SAMPLE_SENTENCES`` sentences of the shipped
held-out sample, embedded with the job's model, batch size and state mode in both
precisions: one pass each to warm up (whose top-layer vectors are compared: the mean over
the tokens of their cosine similarity), then ``REPEATS`` passes each, alternating; the
ratio is the fastest float32 pass's time over the fastest bfloat16 pass's. The result is
cached in ``cache_dir()/precision-hints/`` under the weight and options files (path, size,
modification time), the batch size and state mode, the hardware (its model name), and the
TensorFlow version: it is measured once per model and machine, and the line is the same
when it comes from the cache.

No line (and no measurement) when the job's precision is not float32, when the hardware has
no bfloat16 arithmetic, when INFO lines are not shown (``bilm --quiet``), or with
``$BILM_NO_PRECISION_HINT=1``; no line either when bfloat16 was not at least
``MIN_SPEEDUP`` times as fast. Only jobs computed in this process ask (``devices`` and Ray
compute in others). A measurement that fails is logged at DEBUG and the job
goes on as if nothing happened.
"""
import contextlib
import hashlib
import json
import logging
import os
import time

import numpy as np

from ..core import states
from ..core.download import cache_dir
from ..core.files import atomic_output, file_fingerprint
from ..core.precision import native_bfloat16
from ..errors import flag
from ..models import SAMPLE_DIR
from .embedder import ElmoEmbedder

logger = logging.getLogger(__name__)

ENV_SILENCE = "BILM_NO_PRECISION_HINT"
CACHE_SUBDIR = "precision-hints"
SAMPLE_FILE = SAMPLE_DIR / "heldout.txt"
SAMPLE_SENTENCES = 64
REPEATS = 2  # timed passes per precision, after one pass to warm up
MIN_SPEEDUP = 1.2  # bfloat16 must be at least this many times as fast to be worth a line
COMPARED = ("float32", "bfloat16")
clock = time.perf_counter  # (the tests count in their own units)


def silenced():
    """Whether ``$BILM_NO_PRECISION_HINT`` asks for no hint (any value but empty or 0)."""
    return os.environ.get(ENV_SILENCE, "") not in ("", "0")


def sample_sentences(n=SAMPLE_SENTENCES):
    """The first ``n`` sentences of the shipped held-out sample, tokenized (lists of str)."""
    with open(SAMPLE_FILE, encoding="utf-8") as fin:
        return [line.split() for line, _ in zip(fin, range(n))]


def top_layer_cosine(exact, reduced):
    """Mean cosine similarity of the top-layer vectors of two embeddings of the same sentences.

    ``exact``, ``reduced``: lists of float32 (n_layers + 1, n_tokens, 2P), one per sentence.
    """
    a = np.concatenate([array[-1] for array in exact]).astype(np.float64)  # (tokens, 2P)
    b = np.concatenate([array[-1] for array in reduced]).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.sum(a * b, axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)))


def measure(options_file, weight_file, vocab_file=None, state_mode=states.JOB_DEFAULT, batch_size=64,
            session_config=None, sentences=None):
    """Embed ``sentences`` (default: ``sample_sentences()``) in float32 and in bfloat16; return
    {"float32_seconds", "bfloat16_seconds": the fastest of ``REPEATS`` passes, "cosine": the mean
    top-layer cosine (``top_layer_cosine``), "sentences", "tokens": the sample's size}."""
    sentences = sample_sentences() if sentences is None else sentences
    with contextlib.ExitStack() as stack:
        embedders = {precision: stack.enter_context(
            ElmoEmbedder(options_file, weight_file, vocab_file, state_mode, batch_size, precision=precision,
                         session_config=session_config)) for precision in COMPARED}
        vectors = {precision: embedder.embed_sentences(sentences) for precision, embedder in embedders.items()}
        seconds = {precision: [] for precision in COMPARED}
        for _ in range(REPEATS):
            for precision, embedder in embedders.items():
                start = clock()
                embedder.embed_sentences(sentences)
                seconds[precision].append(clock() - start)
    return {"float32_seconds": min(seconds["float32"]), "bfloat16_seconds": min(seconds["bfloat16"]),
            "cosine": top_layer_cosine(vectors["float32"], vectors["bfloat16"]),
            "sentences": len(sentences), "tokens": sum(map(len, sentences))}


def _cache_path(key):
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:32]
    return os.path.join(cache_dir(), CACHE_SUBDIR, f"{digest}.json")


def cached_measurement(key, measure_now):
    """The measurement cached under ``key`` (a JSON-able dict), or ``measure_now()``'s, then cached
    (where the cache can be written)."""
    path = _cache_path(key)
    with contextlib.suppress(OSError, ValueError):
        with open(path, encoding="utf-8") as fin:
            record = json.load(fin)
        if record.get("key") == key:
            return record["measured"]
    measured = measure_now()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_output(path, overwrite=True) as temporary, open(temporary, "w", encoding="utf-8") as fout:
            json.dump({"key": key, "measured": measured}, fout, indent=1, sort_keys=True)
    except OSError as err:  # (OutputError too) said, and measured again next time
        logger.debug("precision hint: cannot cache the measurement in %s (%s)", path, err)
    return measured


def hint_line(measured):
    """The line for a measurement, or None when bfloat16 was not ``MIN_SPEEDUP`` times as fast."""
    speedup = measured["float32_seconds"] / measured["bfloat16_seconds"]
    if speedup < MIN_SPEEDUP:
        return None
    option = flag('precision="bfloat16"', "--precision bfloat16")
    return (f"{option} would embed about {speedup:.1f}x faster on "
            f"this machine (measured on this model: top-layer vectors' mean cosine {measured['cosine']:.5f} to "
            f"float32); float32 stays the default (exact)")


def log_hint(options_file, weight_file, vocab_file=None, precision="float32", state_mode=states.JOB_DEFAULT,
             batch_size=64, session_config=None):
    """Log whether bfloat16 would be faster for this job (see the module); never raises, but on Ctrl-C."""
    if precision != "float32" or silenced() or not logger.isEnabledFor(logging.INFO):
        return
    try:
        hardware = native_bfloat16()
        if hardware is None:
            logger.debug("precision hint: no bfloat16 arithmetic on this machine")
            return
        import tensorflow as tf

        key = {"weight_file": file_fingerprint(weight_file), "options_file": file_fingerprint(options_file),
               "state_mode": state_mode, "batch_size": batch_size, "hardware": hardware,
               "tensorflow": tf.__version__}
        measured = cached_measurement(key, lambda: measure(options_file, weight_file, vocab_file, state_mode,
                                                           batch_size, session_config))
        line = hint_line(measured)
        if line is None:
            logger.debug("precision hint: bfloat16 is not faster here (%s)", measured)
        else:
            logger.info("%s", line)
    except Exception as err:  # the hint must never cost the user's job anything but its time
        logger.debug("precision hint: not measured (%s)", err, exc_info=True)
