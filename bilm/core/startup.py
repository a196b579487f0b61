"""TensorFlow's start-up, quietly: imported with its start-up lines held back, shown only if they are errors.

The ``bilm`` command, the device processes of ``--devices``, the Ray workers and the
usage scripts start TensorFlow through here (``start_tensorflow``), so that a user sees
only ``bilm``'s own lines unless ``--verbose``; a real error still shows.
"""
import contextlib
import glob
import logging
import os
import re
import sys
import tempfile


@contextlib.contextmanager
def silenced_stderr(on):
    """Redirect file descriptor 2 to /dev/null (C++ start-up lines, e.g. Ray's, bypass Python)."""
    if not on:
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


# TensorFlow's start-up lines (TensorFlow 2.21; some are written before its log level applies).
_START_UP_LINES = re.compile("|".join([
    r"All log messages before absl::InitializeLog\(\) is called",
    r"oneDNN custom operations are on",
    r"cpu_feature_guard\.cc", r"^To enable the following instructions",  # one message on two lines
    r"Could not find cuda drivers on your machine, GPU will not be used",  # the GPU build without a driver
]))
_NO_GPU_LINE = "failed call to cuInit"  # the GPU build on a machine without an NVIDIA GPU


def is_start_up_line(line):
    """True for a line TensorFlow writes whenever it starts: noise, not an error. The GPU build's
    ``failed call to cuInit`` is one only where the machine has no NVIDIA GPU (no /dev/nvidia0...)."""
    return bool(_START_UP_LINES.search(line)) or (_NO_GPU_LINE in line and not glob.glob("/dev/nvidia[0-9]*"))


@contextlib.contextmanager
def _start_up_lines_hidden(on):
    """Hold back what is written to file descriptor 2 in the block; then write it, less the start-up lines."""
    if not on:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not is_start_up_line(line)))
            sys.stderr.flush()


def start_tensorflow(verbose=False):
    """Import TensorFlow and let it find its devices, with its start-up lines hidden unless ``verbose``.

    Unless ``verbose``: TensorFlow's C++ INFO and WARNING logs are off (``TF_CPP_MIN_LOG_LEVEL=2``
    unless set), its Python logger shows errors only, and what it writes to stderr while it
    starts is held back and shown less its start-up lines (``is_start_up_line``), so a real
    error still shows. Finding the devices now brings their lines (the GPU build's cuInit
    line) into that window. The ``bilm`` command and the usage scripts call it first.
    """
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _start_up_lines_hidden(not verbose):
        import tensorflow as tf
        tf.config.list_physical_devices()
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.propagate = False  # TensorFlow has its own handler: no line twice
    if not verbose:
        tf_logger.setLevel(logging.ERROR)
