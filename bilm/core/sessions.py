"""The TensorFlow session settings of ``bilm``'s own jobs, in one place."""
import tensorflow.compat.v1 as tf


def config(n_cpu_devices=None, threads=None):
    """Soft placement (ops without a GPU kernel run on the CPU); TensorFlow's default thread pools.

    ``n_cpu_devices``: split the CPU into that many devices (training towers without GPUs);
    ``threads``: threads per operation and between operations (a process sharing the
    machine with others; default: one per core).
    """
    proto = tf.ConfigProto(allow_soft_placement=True)
    if n_cpu_devices:
        proto.device_count["CPU"] = n_cpu_devices
    if threads:
        proto.intra_op_parallelism_threads = proto.inter_op_parallelism_threads = threads
    return proto
