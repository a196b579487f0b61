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
  take their inputs in the reduced type, while additions, activations, the LSTM states
  and their clips stay in float32. The inference model keeps its matrices in the
  reduced type (half the weights' memory), and on a CPU has the LSTMs' bfloat16 matrices
  packed for its instructions once (``bilm.core.network.packs``); training casts its
  float32 variables once per batch.

Whether the machine computes a reduced type natively (where it can be faster than
float32): ``slow_reduced_type`` (training's check) and ``native_bfloat16`` (which hardware).
"""
import contextlib
import platform

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


def compute_dtype(param, precision):
    """The type a ``layout.Parameter`` computes in: ``precision``'s reduced type for the matrices
    (rank >= 2: kernels, embeddings), float32 for the biases, and with them every addition;
    products and convolutions follow their weight's type (``bilm.core.network``)."""
    reduced = _REDUCED.get(check_precision(precision))
    return reduced if reduced is not None and len(param.shape) > 1 else tf.float32


def reduced_parameters(params, parameters, precision):
    """``params`` with the matrices cast to their ``compute_dtype`` (the others as they are)."""
    dtypes = {name: compute_dtype(parameters[name], precision) for name in params}
    return {name: value if dtypes[name] == tf.float32 else tf.cast(value, dtypes[name])
            for name, value in params.items()}


CPUINFO = "/proc/cpuinfo"


def cpuinfo_fields(text):
    """The first processor's fields of a /proc/cpuinfo text: {name: value} (``"flags"``, ``"model name"``...)."""
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if not name.strip() and fields:  # the blank line after the first processor
            break
        fields.setdefault(name.strip(), value.strip())
    return fields


def _cpuinfo():
    """``cpuinfo_fields`` of this machine's /proc/cpuinfo (empty where there is none: not Linux)."""
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as fin:
            return cpuinfo_fields(fin.read())
    except OSError:
        return {}


def cpu_model():
    """The CPU's model name (Linux's /proc/cpuinfo; ``platform.processor()`` elsewhere)."""
    return _cpuinfo().get("model name") or platform.processor() or "of unknown model"


def _cpu_flags():
    """The CPU's feature flags (Linux's /proc/cpuinfo; empty elsewhere)."""
    return set(_cpuinfo().get("flags", "").split())


# What computes each reduced type faster than float32: CPU flags, GPU compute capability.
_FAST_CPU_FLAGS = {"bfloat16": {"avx512_bf16", "amx_bf16"}, "float16": {"avx512_fp16", "amx_fp16"}}
_FAST_GPU_CAPABILITY = {"bfloat16": (8, 0), "float16": (7, 0)}


def slow_reduced_type(precision, on_gpus):
    """None when this machine computes ``precision``'s reduced type natively (float32: always),
    else a phrase saying what it lacks. ``on_gpus``: the work runs on every GPU (their compute
    capability decides), else on the CPU (its flags: AMX or AVX-512 BF16/FP16)."""
    if precision not in _FAST_CPU_FLAGS:
        return None
    dtype = precision
    if on_gpus:
        want = _FAST_GPU_CAPABILITY[dtype]
        for gpu in tf.config.list_physical_devices("GPU"):
            capability = tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0)
            if tuple(capability) < want:
                return (f"{gpu.name} (compute capability {capability[0]}.{capability[1]}) has no fast {dtype}; "
                        f"it needs {want[0]}.{want[1]} or later")
        return None
    if _cpu_flags() & _FAST_CPU_FLAGS[dtype]:
        return None
    return f"this CPU computes {dtype} no faster than float32 (it has none of {', '.join(sorted(_FAST_CPU_FLAGS[dtype]))})"


def native_bfloat16():
    """Whether this process computes bfloat16 natively: a short description of the hardware, or None.

    The GPUs decide when TensorFlow sees one (their compute capability, ``slow_reduced_type``),
    else the CPU's flags. The description names the model, so it also identifies the hardware:
    ``"CPU AMD EPYC (avx512_bf16)"``, ``"GPU NVIDIA A100-SXM4-40GB (compute capability 8.0)"``.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if slow_reduced_type("bfloat16", on_gpus=bool(gpus)):
        return None
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        capability = ".".join(map(str, details.get("compute_capability") or ()))
        return f"GPU {details.get('device_name', gpus[0].name)} (compute capability {capability})"
    found = ", ".join(sorted(_cpu_flags() & _FAST_CPU_FLAGS["bfloat16"]))
    return f"CPU {cpu_model()} ({found})"
