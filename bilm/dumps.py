"""Batch jobs that write HDF5 files: token embeddings of a vocabulary, every layer of a dataset, merged shards.

Both dumps write their output part by part (``bilm.outputs.PartsJob``): a part is
closed at least every ``flush_seconds`` and when the job is interrupted, so a killed
or interrupted job loses little, and ``resume=True`` finishes it to the same file.
"""
import itertools
import json
import logging
import os

import h5py
import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

from . import layout, sessions, states
from .precision import check_precision, exact
from .embedder import WINDOW, ElmoEmbedder
from .errors import InputError, flag
from .inference import BidirectionalLanguageModel
from .options import ModelOptions
from .outputs import (FLUSH_SECONDS, ROOM_MARGIN, PartsJob, atomic_output, check_output, check_room,
                      file_fingerprint)
from .pooling import LAYER_CHOICES, POOLINGS, pool_tokens, select_layers
from .prefetch import Prefetch
from .text import DatasetReader, counted, read_text_lines
from .vocabulary import UnicodeCharsVocabulary
from .weights import open_hdf5

logger = logging.getLogger(__name__)

TOKEN_CHUNK = 512  # tokens per char-CNN call of dump_token_embeddings
TOKEN_PART = 16384  # tokens per part file of dump_token_embeddings, at most
SENTENCE_PART = 4096  # sentences per part file of dump_bilm_embeddings, at most
SENTENCE_TO_INDEX = "sentence_to_index"
LINK_BYTES = 64  # an external link of merge_shards takes at most this in the file, besides its names
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


def dump_token_embeddings(vocab_file, options_file, weight_file, outfile, overwrite=False, resume=False,
                          part_size=TOKEN_PART, flush_seconds=FLUSH_SECONDS):
    """Write the context-independent token vectors of every vocabulary token.

    Output: HDF5 dataset ``embedding`` float32 (n_vocab, P), row i for line i of the
    vocabulary (``<S>``/``</S>`` get the sentence begin/end vectors). It is the
    ``embedding_weight_file`` of a token-input ``BidirectionalLanguageModel``.
    Tokens run through the character CNN in chunks of ``TOKEN_CHUNK`` (only the char
    CNN's weights are read).

    Args:
        overwrite: replace an existing ``outfile`` (once the new one is complete).
        resume: finish the job a killed or interrupted run left in ``outfile + ".parts"``.
        part_size: tokens per part file, at most (a part also closes every ``flush_seconds``).
    """
    options = ModelOptions.of(options_file)
    options.require_char_input("dump_token_embeddings")
    vocab = UnicodeCharsVocabulary(vocab_file, options.max_characters)
    chunk = max(1, min(TOKEN_CHUNK, part_size))
    settings = {"vocab_file": file_fingerprint(vocab_file), "options_file": file_fingerprint(options_file),
                "weight_file": file_fingerprint(weight_file), "chunk": chunk}
    inputs = {"vocabulary": vocab_file, "options file": options_file, "weight file": weight_file}
    with PartsJob(outfile, settings, overwrite, resume, inputs, SETTING_NAMES) as job:
        if job.complete:
            return
        char_ids = vocab.word_char_ids + 1  # (n_vocab, C), shifted as the Batcher does
        starts = range(0, vocab.size, chunk)
        with tf.Graph().as_default():
            ids = tf.placeholder(tf.int32, shape=(None, None, options.max_characters))
            model = BidirectionalLanguageModel(options, weight_file, state_mode="zero")
            embedding_op = model(ids)["token_embeddings"]  # (n, 1, P); the LSTMs are not run
            with tf.Session(config=sessions.config()) as sess, exact():
                sess.run(tf.variables_initializer(model.weight_variables(layout.CHAR_CNN_GROUPS)))  # not the LSTMs'
                progress = tqdm(total=vocab.size, desc="token embeddings", unit="tok", disable=None)
                with job.noting_interruption(vocab.size, "token", rows=True), \
                        job.writer(max_units=max(1, part_size // chunk), flush_seconds=flush_seconds) as writer:
                    try:
                        for unit, start in enumerate(starts):
                            rows = char_ids[start:start + chunk]
                            if unit not in job.done:
                                vectors = sess.run(embedding_op, {ids: rows[:, None, :]})[:, 0]
                                writer.add(unit, {str(unit): vectors})  # concatenated at the end
                            progress.update(len(rows))
                    finally:
                        progress.close()
        with job.noting_interruption(vocab.size, "token", rows=True):
            job.finish(concatenate=layout.TOKEN_EMBEDDING_NAME)
    logger.info("wrote %s to %s", counted(vocab.size, "token embedding"), outfile)


def dump_bilm_embeddings(vocab_file, dataset_file, options_file, weight_file, outfile,
                         state_mode=states.JOB_DEFAULT, batch_size=64, shard=(0, 1), overwrite=False, resume=False,
                         encoding_errors="strict", empty_lines="error", part_size=SENTENCE_PART, layers="all",
                         mix_weights=None, sentence_to_index=False, encoding="utf-8", tokenize=None,
                         window=WINDOW, flush_seconds=FLUSH_SECONDS, precision="float32", dtype="float32", pool=None,
                         devices=None, progress=None, threads=None):
    """Write every biLM layer of every sentence of a dataset.

    ``dataset_file`` has one sentence per line (whitespace-tokenized, or see
    ``tokenize``). Output: one HDF5 dataset per line, keyed ``str(line_index)``,
    float32 (n_layers + 1, n_tokens, 2P). The whole input is checked (encoding, empty
    lines) before any computing starts.

    Args:
        state_mode: ``"warm"`` (default: deterministic, batched by length),
            ``"zero"``, or ``"stateful"``: one sentence at a time with states carried
            from line to line, exactly the original's output.
        batch_size: sentences per batch in the deterministic modes.
        shard: ``(k, n)``: only lines whose index % n == k (for n machines or
            processes); ``merge_shards`` presents the n outputs as one file.
        overwrite: replace an existing ``outfile`` (once the new one is complete).
        resume: finish the job a killed or interrupted run left in
            ``outfile + ".parts"``; the result equals that of an uninterrupted run.
        encoding, encoding_errors, empty_lines, tokenize: how lines are read (see
            ``bilm.text.DatasetReader``): the file's encoding (UTF-8), what to do with
            bytes not in it and with empty lines, and None (split on whitespace) or
            ``"moses"`` (tokenize as the published models' training text was).
        part_size: sentences per part file, at most (a part also closes every
            ``flush_seconds`` and when the job is interrupted).
        layers: ``"all"`` (the original's layout), or ``"top"``, ``"average"``, ``"mix"``
            (with ``mix_weights``, one per layer): one (n_tokens, 2P) array per line
            (see ``bilm.pooling.select_layers``).
        pool: None, or ``"mean"``/``"max"`` over the tokens: one vector per line (per
            layer with ``layers="all"``: (n_layers + 1, 2P); else (2P,)).
        dtype: ``"float32"`` (default) or ``"float16"`` (half the size) for the datasets.
        precision: ``"float32"`` (exact, default), ``"tf32"``, ``"bfloat16"``, ``"float16"``
            (``bilm.precision``).
        sentence_to_index: also write ``sentence_to_index``, a (1,) string dataset
            holding the JSON {sentence (the line, stripped): line index}, as
            ``allennlp elmo`` does; a sentence on several lines maps to the last one.
        window: sentences sorted by length together before batching.
        devices: several devices to share the lines (``bilm.devices``: e.g.
            ``["gpu:0", "gpu:1"]`` or ``["cpu", "cpu"]``), one process each; the output
            is the same file.
        progress: a function called with the number of sentences each batch adds (instead
            of a progress bar); threads: TensorFlow's threads per operation (default: all cores).
    """
    if devices:
        if tuple(shard) != (0, 1):
            raise InputError(f"{flag('shard', '--shard')} and {flag('devices', '--devices')} both split the lines: "
                             f"give one of them")
        from .devices import dump_on_devices
        return dump_on_devices(devices, vocab_file, dataset_file, options_file, weight_file, outfile, state_mode,
                               batch_size, overwrite, resume, encoding_errors, empty_lines, part_size, layers,
                               mix_weights, sentence_to_index, encoding, tokenize, window, flush_seconds, precision,
                               dtype, pool)
    options, reader, output, settings, inputs = embedding_job(
        vocab_file, dataset_file, options_file, weight_file, state_mode, batch_size, shard, encoding_errors,
        empty_lines, part_size, layers, mix_weights, encoding, tokenize, window, precision, dtype, pool)
    with PartsJob(outfile, settings, overwrite, resume, inputs, SETTING_NAMES) as job:
        if job.complete:
            return
        n_sentences = reader.scan()
        index_of = {}
        config = sessions.config(threads=threads)
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


def merge_shards(shard_files, outfile, overwrite=False):
    """One HDF5 file presenting the datasets of several shard outputs (external links, no copy).

    Shards are linked by path relative to ``outfile``'s directory, so keep them together.
    Their ``sentence_to_index`` records, if any, are merged into one (a small copy). Nothing
    is written unless the disk has room for the file.
    """
    base = os.path.dirname(os.path.abspath(outfile))
    inputs = {f"shard {k}": path for k, path in enumerate(shard_files)}
    check_output(outfile, overwrite, inputs)
    links, index_of = {}, None  # {dataset: shard path relative to the output}
    for shard_file in shard_files:
        relative = os.path.relpath(os.path.abspath(shard_file), base)
        with open_hdf5(shard_file, "shard output") as fin:
            for key in fin:
                if key == SENTENCE_TO_INDEX:
                    index_of = index_of or {}
                    merge_sentence_index(index_of, fin[key])
                elif key in links:
                    raise InputError(f"{shard_file}: dataset '{key}' is also in another shard")
                else:
                    links[key] = relative
    record = None if index_of is None else sentence_index_dataset(index_of)
    needed = sum(LINK_BYTES + len(key) + len(path) for key, path in links.items())
    check_room(outfile, needed + (0 if record is None else 2 * len(record[0].encode("utf-8"))) + ROOM_MARGIN)
    with atomic_output(outfile, overwrite, inputs) as temporary, h5py.File(temporary, "w") as fout:
        for key, relative in links.items():
            fout[key] = h5py.ExternalLink(relative, key)
        if record is not None:
            fout.create_dataset(SENTENCE_TO_INDEX, data=record)
    logger.info("linked %s into %s", counted(len(shard_files), "shard"), outfile)
