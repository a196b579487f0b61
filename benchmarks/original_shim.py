"""Run AllenAI's original ``bilm-tf`` (written for TensorFlow 1.x) on TensorFlow 2.

Used only by ``benchmarks/vs_original.py``, inside a child process that runs the
original library and nothing else: it changes what ``import tensorflow`` means for the
whole process. No code of the original is copied here; the original is imported from a
checkout given at run time::

    import original_shim
    bilm = original_shim.import_original("/path/to/bilm-tf")   # the original's bilm package
    bilm.training.train(...)

What the original needs from TensorFlow 1.x, and where it comes from here:

- every ``tf.X`` it uses (``tf.placeholder``, ``tf.Session``, ``tf.ConfigProto``,
  ``tf.variable_scope``, ``tf.get_variable``, ``tf.train.AdagradOptimizer``,
  ``tf.train.Saver``, ``tf.summary.FileWriter``, ``tf.logging``, ``tf.assign``,
  ``tf.initialize_all_variables``, ``tf.unsorted_segment_sum``, ``tf.squeeze(...,
  squeeze_dims=...)``, ``tf.nn.dropout(x, keep_prob)``, ...) exists with its 1.x
  signature in ``tensorflow.compat.v1``, which behaves as 1.x after
  ``disable_v2_behavior()`` (graph mode, reference variables, v1 control flow);
- ``tf.nn.rnn_cell.*`` (``LSTMCell``, ``MultiRNNCell``, ``ResidualWrapper``,
  ``DropoutWrapper``, ``LSTMStateTuple``) and ``tf.nn.static_rnn`` /
  ``tf.nn.dynamic_rnn``: ``tensorflow.compat.v1`` serves them from the ``tf_keras``
  package (Keras 2), the 1.x cell code, when ``TF_USE_LEGACY_KERAS=1`` is set before
  TensorFlow is imported (with Keras 3 they are missing);
- ``from tensorflow.python.ops.init_ops import glorot_uniform_initializer`` (training.py):
  still there, reached through the real package's ``__path__``.

So the shim is a module object named ``tensorflow`` that answers each attribute from
``tensorflow.compat.v1`` first and from the real ``tensorflow`` otherwise.
"""
import importlib
import logging
import os
import sys
import types

logger = logging.getLogger(__name__)


class _TF1Module(types.ModuleType):
    """``tensorflow`` as TF 1.x code sees it: ``compat.v1`` first, then the real package."""

    def __init__(self, real, v1):
        super().__init__("tensorflow", "TensorFlow 1.x names over tensorflow.compat.v1 (benchmarks/original_shim.py)")
        self.__path__ = real.__path__  # so that `tensorflow.python.*` submodules still import
        self.__version__ = real.__version__
        self._real, self._v1 = real, v1

    def __getattr__(self, name):
        for source in (self._v1, self._real):
            try:
                return getattr(source, name)
            except AttributeError:
                pass
        raise AttributeError(f"the TF 1.x shim has no 'tensorflow.{name}' (neither compat.v1 nor TF 2 has it)")


def install():
    """Make ``import tensorflow`` give TensorFlow 1.x names from now on (idempotent)."""
    if isinstance(sys.modules.get("tensorflow"), _TF1Module):
        return sys.modules["tensorflow"]
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise RuntimeError("install() must run before TensorFlow is imported (TF_USE_LEGACY_KERAS=1 must be seen)")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf.compat.v1.nn.rnn_cell from tf_keras (the 1.x cells)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    real = importlib.import_module("tensorflow")
    v1 = real.compat.v1
    v1.disable_v2_behavior()
    # Resolve the lazily loaded RNN names now, while `tensorflow` is still the real package.
    rnn = v1.nn.rnn_cell
    for name in ("LSTMCell", "MultiRNNCell", "ResidualWrapper", "DropoutWrapper", "LSTMStateTuple"):
        getattr(rnn, name)
    v1.nn.static_rnn, v1.nn.dynamic_rnn  # noqa: B018 (import side effect)
    shim = _TF1Module(real, v1)
    sys.modules["tensorflow"] = shim
    logger.info("TF 1.x shim installed over TensorFlow %s (rnn cells from %s)", real.__version__,
                rnn.LSTMCell.__module__)
    return shim


def import_original(checkout):
    """Install the shim and import the original's ``bilm`` package from ``checkout``.

    ``checkout`` is a directory with the original's ``bilm/`` (e.g. a clone of
    https://github.com/allenai/bilm-tf). Raises if another ``bilm`` (this repository's)
    would be imported instead.
    """
    install()
    checkout = os.path.abspath(checkout)
    if not os.path.isfile(os.path.join(checkout, "bilm", "training.py")):
        raise FileNotFoundError(f"{checkout}: no bilm/training.py; expected a checkout of allenai/bilm-tf")
    if "bilm" in sys.modules:
        raise RuntimeError("a bilm package is already imported in this process; the original needs its own process")
    sys.path.insert(0, checkout)
    bilm = importlib.import_module("bilm")
    for name in ("training", "model", "data"):
        importlib.import_module(f"bilm.{name}")
    if not os.path.abspath(bilm.__file__).startswith(checkout + os.sep):
        raise RuntimeError(f"imported bilm from {bilm.__file__}, not from the original at {checkout}")
    return bilm
