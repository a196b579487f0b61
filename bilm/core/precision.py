"""Numeric precision of inference: exact float32 by default, or faster reduced precisions on GPUs.

On NVIDIA Ampere and later GPUs, TensorFlow runs float32 matrix products and
convolutions in TensorFloat-32 (a 10-bit mantissa) unless told otherwise; the
original ran in full float32. ``bilm``'s own jobs (``ElmoEmbedder``, the dumps,
``bilm embed``, training and evaluation) turn TF32 off while they run (``exact``), so
their numbers are the original's on any GPU. TF32 is a process-wide TensorFlow
setting: in your own sessions, call
``tf.config.experimental.enable_tensor_float_32_execution(False)`` for exact numbers.

``precision`` of the inference graph:

- ``"float32"``: exact (the default);
- ``"tf32"``: TensorFloat-32 products on GPUs that have it (float32 elsewhere);
- ``"bfloat16"``, ``"float16"``: mixed precision: matrix products and convolutions
  take their inputs in the reduced type (the weights are cast once per batch), while
  additions, activations, the LSTM states and their clips stay in float32.
"""
import contextlib

import tensorflow.compat.v1 as tf

from ..errors import InputError, flag

PRECISIONS = ("float32", "tf32", "bfloat16", "float16")
_REDUCED = {"bfloat16": tf.bfloat16, "float16": tf.float16}


def check_precision(precision):
    if precision not in PRECISIONS:
        raise InputError(f"{flag('precision', '--precision')} is {precision!r}; expected one of {PRECISIONS}")
    return precision


@contextlib.contextmanager
def tensor_float_32(enabled):
    """TensorFlow's TF32 setting for the duration of the block, then back as it was."""
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(enabled)
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(before)


def session_precision(precision="float32"):
    """The TF32 setting ``precision`` needs while a job's sessions run."""
    return tensor_float_32(check_precision(precision) == "tf32")


def exact():
    """A block in which TensorFlow computes in full float32 (TF32 off)."""
    return tensor_float_32(False)


def reduced_parameters(params, parameters, precision):
    """``params`` with the matrices (rank >= 2: kernels, embeddings) cast to ``precision``'s type.

    Biases stay float32, and with them every addition; products and convolutions follow
    their weight's type (``bilm.core.network``).
    """
    dtype = _REDUCED.get(check_precision(precision))
    if dtype is None:
        return params
    return {name: tf.cast(value, dtype) if len(parameters[name].shape) > 1 else value
            for name, value in params.items()}
