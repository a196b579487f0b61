"""Training save directories and checkpoints: finding, checking, restoring and exporting them.

A save directory holds ``options.json`` (training form, ``n_characters`` 261) and
TensorFlow checkpoints ``model.ckpt-STEP``; TensorFlow's ``checkpoint`` file names the
latest complete one. ``dump_weights`` turns a checkpoint into the HDF5 weight file of
inference.
"""
import glob
import logging
import os

import tensorflow.compat.v1 as tf

from . import layout
from .errors import CheckpointError, OutputError, OutputExistsError, flag
from .lm_graph import SCOPE
from .options import ModelOptions, load_options, write_options
from .outputs import check_not_an_input, check_output
from .weights import write_weight_file

logger = logging.getLogger(__name__)

OPTIONS_FILE = "options.json"
CHECKPOINT_PREFIX = "model.ckpt"
EVENTS_PATTERN = "events.out.tfevents.*"


def latest_checkpoint(tf_save_dir):
    """The path of the latest complete checkpoint of ``tf_save_dir``, or None."""
    return tf.train.latest_checkpoint(tf_save_dir) if os.path.isdir(tf_save_dir) else None


def load_options_latest_checkpoint(tf_save_dir):
    """(options dict, path of the latest checkpoint) of a training directory."""
    options_file = os.path.join(tf_save_dir, OPTIONS_FILE)
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


def check_new_run(tf_save_dir, overwrite):
    """Raise unless a new run may start in ``tf_save_dir`` (no checkpoints there, or ``overwrite``)."""
    if os.path.exists(tf_save_dir) and not os.path.isdir(tf_save_dir):
        raise OutputError(f"{tf_save_dir}: is a file; expected a save directory")
    if latest_checkpoint(tf_save_dir) is not None and not overwrite:
        raise OutputExistsError(
            f"{tf_save_dir}: has checkpoints of an earlier run; continue it with restart, or pass "
            f"{flag('overwrite=True', '--overwrite')} to start a new model there (its checkpoints are removed)")


def prepare_save_dir(tf_save_dir, tf_log_dir, new_run, overwrite):
    """Create ``tf_save_dir``; for a new run refuse (or with ``overwrite`` clear) earlier checkpoints and events."""
    if new_run:
        check_new_run(tf_save_dir, overwrite)
    try:
        os.makedirs(tf_save_dir, exist_ok=True)
        os.makedirs(tf_log_dir, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{tf_save_dir}: cannot create the save directory ({os.strerror(err.errno)})") from None
    if new_run and overwrite:
        old = glob.glob(os.path.join(tf_save_dir, CHECKPOINT_PREFIX + "-*")) + \
            [os.path.join(tf_save_dir, "checkpoint")] + glob.glob(os.path.join(tf_log_dir, EVENTS_PATTERN))
        for path in old:
            if os.path.isfile(path):
                os.remove(path)


def save_options(options, tf_save_dir):
    write_options(options, os.path.join(tf_save_dir, OPTIONS_FILE))


def checkpoint_values(ckpt_file, parameters):
    """{name: array} of ``parameters`` read from a checkpoint of bilm's training layout."""
    reader = tf.train.load_checkpoint(ckpt_file)
    stored = reader.get_variable_to_shape_map()
    values = {}
    for name, param in parameters.items():
        key = f"{SCOPE}/{name}"
        if key not in stored:
            raise CheckpointError(f"{ckpt_file}: missing variable '{key}' (expected shape {param.shape})")
        if tuple(stored[key]) != param.shape:
            raise CheckpointError(f"{ckpt_file}: variable '{key}' has shape {tuple(stored[key])}; the options "
                                  f"need {param.shape} ({param.explain()})")
        values[name] = reader.get_tensor(key)
    return values


def dump_weights(tf_save_dir, outfile, options_outfile=None, overwrite=False):
    """Write the latest checkpoint's weights as an HDF5 weight file (no softmax).

    Datasets are named as in the original's weight files (``char_embed`` keeps its 261
    rows; token models also get ``embedding``). With ``options_outfile``, also write
    the options for inference (``n_characters`` 262). Existing output files are
    replaced only with ``overwrite``; nothing is written unless both outputs can be.
    """
    options, ckpt_file = load_options_latest_checkpoint(tf_save_dir)
    config = ModelOptions(options, os.path.join(tf_save_dir, OPTIONS_FILE), training=True)
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
