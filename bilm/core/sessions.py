"""The TensorFlow session settings of ``bilm``'s own jobs, in one place."""
import os

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
    if not graph_rewrites:
        proto.graph_options.rewrite_options.disable_meta_optimizer = True
    return proto
