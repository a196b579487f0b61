"""The TensorFlow session settings of ``bilm``'s own jobs, and their steps' signal handling."""
import contextlib
import os
import signal
import sys
import threading

import tensorflow.compat.v1 as tf


def cpu_cores():
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def config(n_cpu_devices=None, threads=None, graph_rewrites=True, branches=1):
    """Soft placement (ops without a GPU kernel run on the CPU); TensorFlow's default thread pools
    unless ``threads`` or ``branches`` say otherwise.

    ``n_cpu_devices``: split the CPU into that many devices (training towers without GPUs);
    ``threads``: threads per operation and between operations (a process sharing the
    machine with others; default: one per core); ``graph_rewrites=False``: no Grappler
    optimisation of the graph before its first run (the training graph: its passes took 4-6 s on
    the reference configuration's ~8,000 nodes and made no step faster, measured in
    ``benchmarks/vs_original.py``); ``branches``: independent chains of operations that run side
    by side (training's LSTM directions and towers): each operation gets ``cores // branches``
    threads, so the chains share the cores instead of each operation taking them all (on 2
    cores the reference configuration's training step ran 1.14x-1.17x faster so, the original
    ELMo configuration's the same: ``benchmarks/training_step.py``).
    """
    proto = tf.ConfigProto(allow_soft_placement=True)
    if n_cpu_devices:
        proto.device_count["CPU"] = n_cpu_devices
    if threads:
        proto.intra_op_parallelism_threads = proto.inter_op_parallelism_threads = threads
    elif branches > 1:
        proto.intra_op_parallelism_threads = max(1, cpu_cores() // branches)
    return proto if graph_rewrites else without_graph_rewrites(proto)


def without_graph_rewrites(proto):
    """A copy of the ``tf.ConfigProto`` with Grappler's optimisation of graphs turned off."""
    proto = tf.ConfigProto.FromString(proto.SerializeToString())
    proto.graph_options.rewrite_options.disable_meta_optimizer = True
    return proto


# Ctrl-C and SIGTERM held while TensorFlow's Python runs (signals_held), in the main thread only.
_HELD = (signal.SIGINT, signal.SIGTERM)
_held = {"depth": 0, "dropping": 0, "handlers": {}, "caught": []}


@contextlib.contextmanager
def signals_held(drop=False):
    """Within the block, Ctrl-C and SIGTERM wait; when it ends, the first is handled as it would have
    been (KeyboardInterrupt, the command line's SIGTERM exception, the default action). Blocks nest:
    a signal is handled at the end of the innermost one. ``drop``: the signals that come within the
    block are ignored (a job saving what it did because it was stopped: pressing Ctrl-C again does
    not cut the save short).

    TensorFlow's C++ calls Python (``isinstance`` while it flattens structures, a tensor's hash while
    it reads a step's feeds) and does not expect an exception there: a handler raising at that
    moment crashed the process (a segmentation fault, a ``SystemError``) or lost the signal, a few
    times in a hundred signals sent while a graph was built or a step started. So the graphs are
    built, and the steps run, in these blocks. A step runs without Python's lock, so a signal during
    it is handled no later than before: when it returns. Outside the main thread (where handlers
    cannot be set) the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread() or (
            _held["depth"] == 0 and None in map(signal.getsignal, _HELD)):  # None: a handler set outside Python
        yield
        return
    if _held["depth"] == 0:
        _held["handlers"] = {signum: signal.getsignal(signum) for signum in _HELD}
        for signum, handler in _held["handlers"].items():
            if handler != signal.SIG_IGN:
                signal.signal(signum, lambda signum, frame: _held["caught"].append(signum))
    _held["depth"] += 1
    _held["dropping"] += drop
    try:
        yield
    finally:
        _held["depth"] -= 1
        _held["dropping"] -= drop
        if _held["depth"] == 0:
            for signum, handler in _held["handlers"].items():
                signal.signal(signum, handler)
        if _held["dropping"] or drop:
            _held["caught"].clear()
        if _held["caught"]:  # the first (a signal sent again meanwhile says no more)
            signum = _held["caught"][0]
            _held["caught"].clear()
            handler = _held["handlers"][signum]
            if callable(handler):
                handler(signum, sys._getframe())
            else:  # the default action: the process ends
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)


def run(sess, fetches, feed_dict=None, options=None):
    """``sess.run(fetches, feed_dict, options)`` with Ctrl-C and SIGTERM held until it returns
    (:func:`signals_held`)."""
    with signals_held():
        return sess.run(fetches, feed_dict, options=options)
