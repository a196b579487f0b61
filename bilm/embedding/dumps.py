"""The batch jobs that write HDF5 files: token embeddings of a vocabulary, every layer of a dataset, merged shards.

``dump_bilm_embeddings`` chooses where a dataset's job runs: in this process
(``job.dump_in_process``) or shared among devices (``devices.dump_on_devices``); Ray's
runner is ``ray.dump_on_ray``. Both dumps write their output part by part
(``bilm.core.files.PartsJob``): a part is closed at least every ``flush_seconds`` and
when the job is interrupted, so a killed or interrupted job loses little, and
``resume=True`` finishes it to the same file.
"""
import logging
import os

import h5py
import tensorflow.compat.v1 as tf
from tqdm import tqdm

from ..core import layout, sessions, states
from ..core.files import FLUSH_SECONDS, ROOM_MARGIN, PartsJob, atomic_output, check_output, check_room, file_fingerprint
from ..core.inference import BidirectionalLanguageModel
from ..core.options import ModelOptions
from ..core.precision import exact
from ..core.text import counted
from ..core.vocabulary import UnicodeCharsVocabulary
from ..core.weights import open_hdf5
from ..errors import InputError, flag
from .devices import dump_on_devices
from .embedder import WINDOW
from .job import (SENTENCE_PART, SENTENCE_TO_INDEX, SETTING_NAMES, dump_in_process, merge_sentence_index,
                  sentence_index_dataset)

logger = logging.getLogger(__name__)

TOKEN_CHUNK = 512  # tokens per char-CNN call of dump_token_embeddings
TOKEN_PART = 16384  # tokens per part file of dump_token_embeddings, at most
LINK_BYTES = 64  # an external link of merge_shards takes at most this in the file, besides its names


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
            with sessions.signals_held():  # Ctrl-C and SIGTERM: once the graph is built
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
                                vectors = sessions.run(sess, embedding_op, {ids: rows[:, None, :]})[:, 0]
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
                         devices=None, progress=None, threads=None, precision_hint=False):
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
            ``bilm.core.text.DatasetReader``): the file's encoding (UTF-8), what to do with
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
            (``bilm.core.precision``).
        sentence_to_index: also write ``sentence_to_index``, a (1,) string dataset
            holding the JSON {sentence (the line, stripped): line index}, as
            ``allennlp elmo`` does; a sentence on several lines maps to the last one.
        window: sentences sorted by length together before batching.
        devices: several devices to share the lines (``bilm.embedding.devices``: e.g.
            ``["gpu:0", "gpu:1"]`` or ``["cpu", "cpu"]``), one process each; the output
            is the same file.
        progress: a function called with the number of sentences each batch adds (instead
            of a progress bar); threads: TensorFlow's threads per operation (default: all cores).
        precision_hint: in float32 on hardware with bfloat16 arithmetic, first log how much
            faster ``precision="bfloat16"`` measured on this model, once per model and machine
            (``bilm.embedding.precision_hint``; the ``bilm embed`` command's line; not with ``devices``).
    """
    if devices:
        if tuple(shard) != (0, 1):
            raise InputError(f"{flag('shard', '--shard')} and {flag('devices', '--devices')} both split the lines: "
                             f"give one of them")
        return dump_on_devices(devices, vocab_file, dataset_file, options_file, weight_file, outfile, state_mode,
                               batch_size, overwrite, resume, encoding_errors, empty_lines, part_size, layers,
                               mix_weights, sentence_to_index, encoding, tokenize, window, flush_seconds, precision,
                               dtype, pool)
    return dump_in_process(vocab_file, dataset_file, options_file, weight_file, outfile, state_mode, batch_size,
                           shard, overwrite, resume, encoding_errors, empty_lines, part_size, layers, mix_weights,
                           sentence_to_index, encoding, tokenize, window, flush_seconds, precision, dtype, pool,
                           progress, threads, precision_hint)


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
