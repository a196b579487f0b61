"""One embedding job: its checked settings, what is written per sentence, and its run in this process.

``embedding_job`` checks a ``dump_bilm_embeddings`` job's arguments and gives its
settings (what ``PartsJob`` records and compares on ``--resume``); ``OutputForm`` is what
is written for each sentence; ``dump_in_process`` runs the job here, part by part. The
runners that share a job among processes (``devices``) or machines (``ray``) build on
these; ``dumps.dump_bilm_embeddings`` chooses the runner.
"""
import itertools
import json
import logging

import h5py
import numpy as np
from tqdm import tqdm

from ..core import sessions, states
from ..core.files import FLUSH_SECONDS, PartsJob, file_fingerprint
from ..core.pooling import LAYER_CHOICES, POOLINGS, pool_tokens, select_layers
from ..core.precision import check_precision
from ..core.prefetch import Prefetch
from ..core.text import DatasetReader, counted, read_text_lines
from ..core.options import ModelOptions
from ..errors import InputError, flag
from .embedder import WINDOW, ElmoEmbedder

logger = logging.getLogger(__name__)

SENTENCE_PART = 4096  # sentences per part file of dump_bilm_embeddings, at most
SENTENCE_TO_INDEX = "sentence_to_index"
DTYPES = ("float32", "float16")
# How the bilm command names the settings of a job whose name is not its flag (``PartsJob`` messages).
SETTING_NAMES = {"dataset_file": "the input text", "vocab_file": "--vocab", "options_file": "--options",
                 "weight_file": "--weights", "chunk": "the tokens per chunk",
                 "window": "the lines sorted by length together (--ray sorts fewer on small inputs)"}


def sentence_index_dataset(index_of):
    """The ``sentence_to_index`` record of {sentence: line index}: a (1,) string array holding its JSON,
    keys in the order of their line index (the same bytes however the job was split)."""
    ordered = dict(sorted(index_of.items(), key=lambda item: int(item[1])))
    return np.array([json.dumps(ordered)], dtype=h5py.string_dtype())


def read_sentence_index(dataset_file, encoding="utf-8", encoding_errors="strict"):
    """{line stripped: str(line index)} of a whole input file; a repeated line keeps its last index."""
    lines = read_text_lines(dataset_file, "input file", InputError, encoding_errors, "", encoding)
    return {line.strip(): str(number - 1) for number, line in lines}


def merge_sentence_index(index_of, record):
    """Add a ``sentence_to_index`` record's entries to ``index_of``; a repeated sentence keeps its last line."""
    for sentence, index in json.loads(record[0]).items():
        if int(index) > int(index_of.get(sentence, -1)):
            index_of[sentence] = index


def dump_in_process(vocab_file, dataset_file, options_file, weight_file, outfile,
                    state_mode=states.JOB_DEFAULT, batch_size=64, shard=(0, 1), overwrite=False, resume=False,
                    encoding_errors="strict", empty_lines="error", part_size=SENTENCE_PART, layers="all",
                    mix_weights=None, sentence_to_index=False, encoding="utf-8", tokenize=None,
                    window=WINDOW, flush_seconds=FLUSH_SECONDS, precision="float32", dtype="float32", pool=None,
                    progress=None, threads=None, precision_hint=False):
    """``dump_bilm_embeddings`` in this process (the arguments are its own; ``progress``: a function called
    with the number of sentences each batch adds, instead of a progress bar; ``threads``: TensorFlow's threads
    per operation, default all cores; ``precision_hint``: first say whether bfloat16 would be faster here,
    ``bilm.embedding.precision_hint``)."""

    options, reader, output, settings, inputs = embedding_job(
        vocab_file, dataset_file, options_file, weight_file, state_mode, batch_size, shard, encoding_errors,
        empty_lines, part_size, layers, mix_weights, encoding, tokenize, window, precision, dtype, pool)
    with PartsJob(outfile, settings, overwrite, resume, inputs, SETTING_NAMES) as job:
        if job.complete:
            return
        n_sentences = reader.scan()
        index_of = {}
        config = sessions.config(threads=threads, branches=2)  # the two directions
        if precision_hint:
            from .precision_hint import log_hint
            log_hint(options_file, weight_file, vocab_file, precision, state_mode, batch_size, config)
        with job.noting_interruption(n_sentences, "sentence"), \
                ElmoEmbedder(options, weight_file, vocab_file, state_mode, batch_size, window, precision,
                             config) as embedder:
            carried = embedder.state_mode == "stateful"
            bar = tqdm(total=n_sentences, desc="sentences", unit="sent", disable=None if progress is None else True)
            units_per_part = max(1, -(-part_size // embedder.batch_size))

            def batches():
                """(unit, indices, sentences, char ids or None if done), made ahead in a thread."""
                unit = 0
                for window_lines in _windows(reader, embedder.window):
                    if sentence_to_index:
                        index_of.update((line, str(index)) for index, line, _ in window_lines)
                    for indices, batch in embedder.batches([(index, tokens) for index, _, tokens in window_lines]):
                        yield unit, indices, batch, None if unit in job.done else embedder.char_ids(batch)
                        unit += 1

            with job.writer(units_per_part, flush_seconds, embedder.get_states if carried else None) as writer, \
                    Prefetch(batches()) as prepared:
                try:
                    for unit, indices, batch, ids in prepared:
                        if ids is not None:
                            if carried and unit - 1 in job.done:
                                embedder.set_states(job.states_before(unit))
                            arrays = embedder.embed_ids(ids, batch)
                            writer.add(unit, {str(index): output(array) for index, array in zip(indices, arrays)})
                        bar.update(len(batch))
                        if progress is not None:
                            progress(len(batch))
                finally:
                    bar.close()
        record = {}
        if sentence_to_index:
            record[SENTENCE_TO_INDEX] = sentence_index_dataset(index_of)
        with job.noting_interruption(n_sentences, "sentence"):
            job.finish(add=record)
    logger.info("wrote %s to %s", counted(n_sentences, "sentence"), outfile)


def embedding_job(vocab_file, dataset_file, options_file, weight_file, state_mode, batch_size, shard, encoding_errors,
                  empty_lines, part_size, layers, mix_weights, encoding, tokenize, window, precision, dtype, pool):
    """Check the arguments of a ``dump_bilm_embeddings`` job (on one machine or on Ray).

    Returns (``ModelOptions``, ``DatasetReader``, ``OutputForm``, the job's settings for
    ``PartsJob``, its inputs {what: path}). Jobs with the same settings have the same
    units (batches), so one can finish the parts of the other.
    """
    options = ModelOptions.of(options_file)
    options.require_char_input("dump_bilm_embeddings")
    states.check_state_mode(state_mode)
    check_precision(precision)
    reader = DatasetReader(dataset_file, shard, encoding, encoding_errors, empty_lines, tokenize)
    if part_size < 1:
        raise InputError(f"part_size is {part_size}; expected at least 1")
    check_layers(layers, mix_weights, options.n_layers + 1)
    output = OutputForm(layers, mix_weights, pool, dtype)
    settings = {"dataset_file": file_fingerprint(dataset_file), "vocab_file": file_fingerprint(vocab_file),
                "options_file": file_fingerprint(options_file), "weight_file": file_fingerprint(weight_file),
                "state_mode": state_mode, "batch_size": batch_size, "shard": list(shard), "window": window,
                "encoding": reader.encoding, "encoding_errors": encoding_errors, "empty_lines": empty_lines,
                "tokenize": tokenize, "precision": precision, **output.settings()}
    inputs = {"input text": dataset_file, "vocabulary": vocab_file, "options file": options_file,
              "weight file": weight_file}
    return options, reader, output, settings, inputs


class OutputForm:
    """What is written for each sentence: which layers, pooled over the tokens or not, in which type."""

    def __init__(self, layers="all", mix_weights=None, pool=None, dtype="float32"):
        if pool is not None and pool not in POOLINGS:
            raise InputError(f"{flag('pool', '--pool')} is {pool!r}; expected one of {POOLINGS} or None")
        if dtype not in DTYPES:
            raise InputError(f"{flag('dtype', '--dtype')} is {dtype!r}; expected one of {DTYPES}")
        self.layers, self.mix_weights, self.pool, self.dtype = layers, mix_weights, pool, dtype

    def __call__(self, embeddings):
        """float32 (n_layers + 1, n_tokens, 2P) -> the array written."""
        array = select_layers(embeddings, self.layers, self.mix_weights)
        if self.pool is not None:
            array = pool_tokens(array, self.pool)
        return array.astype(self.dtype, copy=False)

    def settings(self):
        return {"layers": self.layers, "pool": self.pool, "dtype": self.dtype,
                "mix_weights": None if self.mix_weights is None else [float(w) for w in self.mix_weights]}


def _windows(reader, size):
    lines = iter(reader)
    while True:
        window = list(itertools.islice(lines, size))
        if not window:
            return
        yield window


def check_layers(layers, mix_weights, n_layers):
    """Check a ``layers``/``mix_weights`` choice for a model of ``n_layers`` outputs (LSTM layers + 1)."""
    mix = flag("layers='mix'", "--layers mix")
    if layers not in LAYER_CHOICES:
        raise InputError(f"{flag('layers', '--layers')} is {layers!r}; expected one of {LAYER_CHOICES}")
    if layers == "mix" and (mix_weights is None or len(mix_weights) != n_layers):
        raise InputError(f"{mix} needs {n_layers} "
                         f"{flag('mix_weights', '--mix-weights')} (one per layer), got {mix_weights!r}")
    if layers != "mix" and mix_weights is not None:
        raise InputError(f"{flag('mix_weights', '--mix-weights')} are used only with "
                         f"{mix}, not {flag(f'layers={layers!r}', f'--layers {layers}')}")


