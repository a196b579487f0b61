"""The TensorFlow session settings of ``bilm``'s own jobs, in one place."""
import tensorflow.compat.v1 as tf


def config(n_cpu_devices=None):
    """Soft placement (ops without a GPU kernel run on the CPU); TensorFlow's default thread pools.

    ``n_cpu_devices``: split the CPU into that many devices (training towers without GPUs).
    """
    proto = tf.ConfigProto(allow_soft_placement=True)
    if n_cpu_devices:
        proto.device_count["CPU"] = n_cpu_devices
    return proto
