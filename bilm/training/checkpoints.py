"""Training save directories and checkpoints: finding, checking, restoring and exporting them.

A save directory holds ``options.json`` (training form, ``n_characters`` 261),
``vocabulary.json`` (what identifies the training vocabulary), ``finetune.json`` for a
fine-tune (its settings and evaluations) and TensorFlow
checkpoints ``model.ckpt-STEP``; TensorFlow's ``checkpoint`` file names the latest
complete one. Checkpoints of two layouts are read (``bilm.core.layout.CHECKPOINT_NAMINGS``):
``bilm``'s, whose variables carry the weight file's names under ``lm/``, and the
original library's (``lm/RNN_0/rnn/multi_rnn_cell/cell_0/lstm_cell/kernel``, ...);
the layout is told by the checkpoint's own variable list. ``dump_weights`` turns a
checkpoint into the HDF5 weight file of inference.
"""
import glob
import hashlib
import json
import logging
import os

import numpy as np
import tensorflow.compat.v1 as tf

from ..core import layout
from ..errors import CheckpointError, OutputError, OutputExistsError, VocabularyError, flag, tensorflow_reason
from ..core.options import ModelOptions, load_options, write_options
from ..core.files import atomic_output, check_not_an_input, check_output
from ..core.weights import write_weight_file

logger = logging.getLogger(__name__)

SCOPE = layout.TRAINING_SCOPE
OPTIONS_FILE = "options.json"
VOCABULARY_RECORD = "vocabulary.json"
FINETUNE_RECORD = "finetune.json"  # a fine-tune's settings and evaluations (bilm.training.finetune)
CHECKPOINT_PREFIX = "model.ckpt"
EVENTS_PATTERN = "events.out.tfevents.*"
GLOBAL_STEP, TOKENS_TRAINED, SLOT = "global_step", "tokens_trained", "Adagrad"


# -- finding and checking checkpoints -------------------------------------------------------------

def _reader(ckpt_file):
    try:
        return tf.train.load_checkpoint(ckpt_file)
    except (tf.errors.OpError, ValueError) as err:
        raise CheckpointError(f"{ckpt_file}: cannot read the checkpoint ({tensorflow_reason(err)})") from None


def verify_checkpoint(ckpt_file):
    """Raise ``CheckpointError`` unless the checkpoint's index and data files are all there, whole."""
    index = ckpt_file + ".index"
    if not os.path.isfile(index):
        raise CheckpointError(f"{ckpt_file}: its index file {os.path.basename(index)} is missing")
    data = sorted(glob.glob(glob.escape(ckpt_file) + ".data-*-of-*"))
    if not data:
        raise CheckpointError(f"{ckpt_file}: its data file {os.path.basename(ckpt_file)}.data-00000-of-00001 is "
                              f"missing")
    reader = _reader(ckpt_file)
    dtypes = reader.get_variable_to_dtype_map()
    expected = sum(int(np.prod(shape)) * dtypes[name].size for name, shape in
                   reader.get_variable_to_shape_map().items())
    found = sum(os.path.getsize(path) for path in data)
    if found < expected:
        raise CheckpointError(f"{ckpt_file}: its data file is truncated ({found:,} bytes of {expected:,}); "
                              f"a partial copy?")


def checkpoint_paths(tf_save_dir):
    """The checkpoints TensorFlow's ``checkpoint`` file lists, newest first."""
    state = tf.train.get_checkpoint_state(tf_save_dir) if os.path.isdir(tf_save_dir) else None
    if state is None:
        return []
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    if state.model_checkpoint_path and state.model_checkpoint_path not in paths:
        paths.append(state.model_checkpoint_path)
    # As TensorFlow resolves them (a relative name is relative to the directory), or beside the file (a
    # moved directory, or a missing checkpoint: named where it belongs).
    resolved = [path if os.path.exists(path + ".index") else os.path.join(tf_save_dir, os.path.basename(path))
                for path in paths]
    return resolved[::-1]


def checkpoints_on_disk(tf_save_dir):
    """Every ``model.ckpt-STEP`` of ``tf_save_dir`` that has an index file, newest (highest step) first."""
    found = []
    for index in glob.glob(os.path.join(glob.escape(tf_save_dir), CHECKPOINT_PREFIX + "-*.index")):
        step = os.path.basename(index)[len(CHECKPOINT_PREFIX) + 1:-len(".index")]
        if step.isdigit():
            found.append((int(step), index[:-len(".index")]))
    return [path for _, path in sorted(found, reverse=True)]


def latest_checkpoint(tf_save_dir):
    """The newest intact checkpoint of ``tf_save_dir`` (None if it has none).

    A newest checkpoint whose files are missing or truncated is passed over with a
    warning; when no listed checkpoint is intact, ``CheckpointError`` names what is wrong.
    """
    problems = []
    for path in checkpoint_paths(tf_save_dir):
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        for problem in problems:
            logger.warning("%s; using the newest intact checkpoint, %s", problem, path)
        return path
    if problems:
        raise CheckpointError(f"{problems[0]}; no intact checkpoint is left in {tf_save_dir}")
    return None


def load_options_latest_checkpoint(tf_save_dir):
    """(options dict, path of the latest intact checkpoint) of a training directory."""
    options_file = os.path.join(tf_save_dir, OPTIONS_FILE)
    if os.path.exists(tf_save_dir) and not os.path.isdir(tf_save_dir):
        raise CheckpointError(f"{tf_save_dir}: is a file; expected a directory (save directory)")
    if not os.path.isdir(tf_save_dir):
        raise CheckpointError(f"{tf_save_dir}: save directory not found")
    if not os.path.isfile(options_file):
        raise CheckpointError(f"{tf_save_dir}: no {OPTIONS_FILE} (expected the options file training writes "
                              f"beside its checkpoints)")
    options = load_options(options_file)
    ckpt_file = latest_checkpoint(tf_save_dir)
    if ckpt_file is None:
        raise CheckpointError(f"{tf_save_dir}: no checkpoint found (expected a 'checkpoint' file written by train)")
    return options, ckpt_file


def load_save_dir(tf_save_dir):
    """(``ModelOptions`` of the run, latest intact checkpoint) of a save directory."""
    options, ckpt_file = load_options_latest_checkpoint(tf_save_dir)
    return ModelOptions(options, os.path.join(tf_save_dir, OPTIONS_FILE), training=True), ckpt_file


# -- names in a checkpoint --------------------------------------------------------------------------

def checkpoint_naming(ckpt_file, stored, parameters):
    """'bilm' or 'original': the layout whose name of the first parameter ``stored`` holds.

    Raises ``CheckpointError`` naming the first parameter neither layout has.
    """
    namings = layout.CHECKPOINT_NAMINGS
    telling = [name for name in parameters if len({name_of(name) for name_of in namings.values()}) > 1]
    for name in telling[:1] + list(parameters)[:1]:  # a name that tells the layouts apart, then the first
        for naming, name_of in namings.items():
            if f"{SCOPE}/{name_of(name)}" in stored:
                missing = [p for p in parameters if f"{SCOPE}/{name_of(p)}" not in stored]
                if not missing:
                    return naming
                raise CheckpointError(f"{ckpt_file}: missing variable '{SCOPE}/{name_of(missing[0])}' (in the "
                                      f"{naming} checkpoint layout these options need; another architecture?)")
    first = telling[0] if telling else next(iter(parameters))
    raise CheckpointError(f"{ckpt_file}: missing variable '{SCOPE}/{first}' (neither bilm's nor the original's "
                          f"checkpoint layout for these options; another architecture?)")


def checkpoint_key(variable_name, naming):
    """The name under which a training-graph variable is stored in a checkpoint of ``naming``."""
    if not variable_name.startswith(SCOPE + "/"):
        return variable_name  # global_step, tokens_trained
    name = variable_name[len(SCOPE) + 1:]
    suffix = ""
    if name.endswith("/" + SLOT):
        name, suffix = name[:-len(SLOT) - 1], "/" + SLOT
    return f"{SCOPE}/{layout.CHECKPOINT_NAMINGS[naming](name)}{suffix}"


def restore(sess, ckpt_file, variables, parameters, optional=(GLOBAL_STEP, TOKENS_TRAINED)):
    """Load ``variables`` (of a training graph) from a checkpoint of either layout.

    Shapes are checked against the graph's; values are cast to the graph's dtypes (the
    original kept ``global_step`` as a float). Variables named in ``optional`` may be
    missing from the checkpoint. Returns the names of the variables loaded.

    Raises:
        CheckpointError: a missing or mis-shaped variable, named with both shapes.
    """
    reader = _reader(ckpt_file)
    stored = reader.get_variable_to_shape_map()
    naming = checkpoint_naming(ckpt_file, stored, parameters)
    loads, loaded = [], []  # (assign op, its placeholder, checkpoint key): every op made before the first run
    for variable in variables:
        name = variable.op.name
        key = checkpoint_key(name, naming)
        if key not in stored:
            if name in optional:
                continue
            raise CheckpointError(f"{ckpt_file}: missing variable '{key}' (expected shape "
                                  f"{tuple(variable.shape.as_list())})")
        shape = tuple(variable.shape.as_list())
        if tuple(stored[key]) != shape:
            param = parameters.get(name[len(SCOPE) + 1:].replace("/" + SLOT, ""))
            why = f" ({param.explain()})" if param is not None else ""
            raise CheckpointError(f"{ckpt_file}: variable '{key}' has shape {tuple(stored[key])}; the options need "
                                  f"{shape}{why}")
        placeholder = tf.placeholder(variable.dtype.base_dtype, shape)
        loads.append((variable.assign(placeholder), placeholder, key))
        loaded.append(name)
    for assign, placeholder, key in loads:  # one value in memory at a time
        sess.run(assign, {placeholder: reader.get_tensor(key).astype(placeholder.dtype.as_numpy_dtype)})
    logger.info("restored %d variables from %s (%s layout)", len(loaded), ckpt_file, naming)
    return loaded


def checkpoint_values(ckpt_file, parameters):
    """{name: array} of ``parameters`` read from a checkpoint of either layout."""
    reader = _reader(ckpt_file)
    stored = reader.get_variable_to_shape_map()
    naming = checkpoint_naming(ckpt_file, stored, parameters)
    values = {}
    for name, param in parameters.items():
        key = f"{SCOPE}/{layout.CHECKPOINT_NAMINGS[naming](name)}"
        if key not in stored:
            raise CheckpointError(f"{ckpt_file}: missing variable '{key}' (expected shape {param.shape})")
        if tuple(stored[key]) != param.shape:
            raise CheckpointError(f"{ckpt_file}: variable '{key}' has shape {tuple(stored[key])}; the options "
                                  f"need {param.shape} ({param.explain()})")
        values[name] = reader.get_tensor(key)
    return values


def training_parameters(config):
    """{name: Parameter} of a training run's model (softmax included)."""
    return layout.model_parameters(config, config.n_directions, softmax=True,
                                   token_rows=None if config.char_input else config.n_tokens_vocab)


# -- the vocabulary of a run -------------------------------------------------------------------------

def vocabulary_identity(vocab):
    """{"size", "sha256"}: what identifies a vocabulary (its tokens, in order)."""
    tokens = [vocab.id_to_word(i) for i in range(vocab.size)]
    return {"size": vocab.size, "sha256": hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()}


def record_vocabulary(tf_save_dir, vocab):
    record = dict(vocabulary_identity(vocab), file=os.path.abspath(vocab.filename))
    with atomic_output(os.path.join(tf_save_dir, VOCABULARY_RECORD), overwrite=True) as temporary:
        with open(temporary, "w", encoding="utf-8") as fout:
            json.dump(record, fout, indent=1)


def check_vocabulary(tf_save_dir, vocab, config):
    """Raise ``VocabularyError`` unless ``vocab`` is the one the run in ``tf_save_dir`` was trained with.

    Without a record (a save directory of the original library, or of an earlier
    release) only the size is checked against the softmax, with a warning.
    """
    if vocab.size > config.n_tokens_vocab:
        raise VocabularyError(f"{vocab.filename}: {vocab.size} tokens, more than the {config.n_tokens_vocab} rows of "
                              f"the model's softmax (n_tokens_vocab); not the model's vocabulary")
    path = os.path.join(tf_save_dir, VOCABULARY_RECORD)
    if not os.path.isfile(path):
        logger.warning("%s: no %s, so the vocabulary cannot be checked; it must be the one the model was trained "
                       "with (same tokens, same order)", tf_save_dir, VOCABULARY_RECORD)
        return
    with open(path, encoding="utf-8") as fin:
        recorded = json.load(fin)
    found = vocabulary_identity(vocab)
    if found["sha256"] != recorded.get("sha256"):
        detail = ("the same number of tokens, in another order or other tokens" if found["size"] == recorded.get("size")
                  else f"{found['size']} tokens instead of {recorded.get('size')}")
        raise VocabularyError(f"{vocab.filename}: not the vocabulary this model was trained with "
                              f"({recorded.get('file')}): {detail}; token ids would mean other words")


# -- save directories --------------------------------------------------------------------------------

def check_new_run(tf_save_dir, overwrite):
    """Raise unless a new run may start in ``tf_save_dir`` (no checkpoints there, or ``overwrite``)."""
    if os.path.exists(tf_save_dir) and not os.path.isdir(tf_save_dir):
        raise OutputError(f"{tf_save_dir}: is a file; expected a save directory")
    if checkpoint_paths(tf_save_dir) and not overwrite:
        raise OutputExistsError(
            f"{tf_save_dir}: has checkpoints of an earlier run; continue it with restart, or pass "
            f"{flag('overwrite=True', '--overwrite')} to start a new model there (its checkpoints are removed)")


def check_not_a_finetune(tf_save_dir):
    """Raise unless ``tf_save_dir`` is a plain training run: ``restart`` would train a fine-tune without its
    evaluations and early stopping, and lose its best checkpoint."""
    if os.path.isfile(os.path.join(tf_save_dir, FINETUNE_RECORD)):
        raise CheckpointError(
            f"{tf_save_dir}: is a fine-tune ({FINETUNE_RECORD}); continue it with "
            f"{flag('finetune(..., resume=True)', 'bilm finetune --resume')} (its evaluations, best checkpoint and "
            f"early stopping go on), or train it further as a new fine-tune from it into another directory")


def clear_earlier_run(tf_save_dir, tf_log_dir):
    """Remove the checkpoints, TensorBoard events and fine-tuning record of an earlier run."""
    old = glob.glob(os.path.join(glob.escape(tf_save_dir), CHECKPOINT_PREFIX + "-*")) + \
        [os.path.join(tf_save_dir, name) for name in ("checkpoint", FINETUNE_RECORD)] + \
        glob.glob(os.path.join(glob.escape(tf_log_dir), EVENTS_PATTERN))
    for path in old:
        if os.path.isfile(path):
            os.remove(path)


def save_options(options, tf_save_dir):
    write_options(options, os.path.join(tf_save_dir, OPTIONS_FILE))


def dump_weights(tf_save_dir, outfile, options_outfile=None, overwrite=False):
    """Write the latest checkpoint's weights as an HDF5 weight file (no softmax).

    Datasets are named as in the original's weight files (``char_embed`` keeps its 261
    rows; token models also get ``embedding``), from a checkpoint of either layout.
    With ``options_outfile``, also write the options for inference (``n_characters``
    262). Existing output files are replaced only with ``overwrite``; nothing is
    written unless both outputs can be.
    """
    config, ckpt_file = load_save_dir(tf_save_dir)
    inputs = {"save directory's options": os.path.join(tf_save_dir, OPTIONS_FILE)}
    check_output(outfile, overwrite, inputs)
    if options_outfile:
        check_output(options_outfile, overwrite, inputs)
        check_not_an_input(options_outfile, {"weight output (--outfile)": outfile})
    parameters = layout.model_parameters(config, config.n_directions,
                                         token_rows=None if config.char_input else config.n_tokens_vocab)
    values = checkpoint_values(ckpt_file, parameters)
    write_weight_file(outfile, values, overwrite)
    if options_outfile:
        write_options(config.for_inference(), options_outfile, overwrite)
    logger.info("wrote %d weight datasets of %s to %s", len(values), ckpt_file, outfile)
