"""Training across machines on TensorFlow's distributed runtime: synchronous data parallelism.

Every worker of a cluster (``TF_CONFIG``, as Kubernetes' TFJob and TensorFlow's launchers
set it, or ``--workers``/``--worker_index``) runs the same training graph on its own
shards of the corpus, with its own towers (GPUs); after each batch the towers' averaged
gradients are averaged across workers by TensorFlow's collective all-reduce (sparse
gradients of large tables are gathered, not densified), so every worker applies the
same update to its copy of the weights, as one machine would with the whole batch.
The chief (worker 0) initialises or restores the weights and broadcasts them; only it
writes checkpoints, ``options.json`` and TensorBoard events.

TensorFlow's gRPC servers have no authentication and run any graph a client sends
them: run a cluster on a trusted network only (or through an SSH tunnel or a VPN).
TensorFlow's server listens on its port on all interfaces (hard-coded in TensorFlow);
``bilm`` warns when a cluster address is neither loopback nor private.
"""
import hashlib
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np
import tensorflow.compat.v1 as tf

from ..errors import InputError, TrainingError, WorkerLostError, flag

logger = logging.getLogger(__name__)

GROUP_KEY = 1
DENSE_LIMIT = 1 << 20  # sparse gradients of tables up to this many values are reduced densely
SETTINGS_WORDS = 4096  # int64 words (32 KB): room for one worker's settings, compared at start
RUN_FLAGS = ("n_gpus", "softmax_only_batches", "eval_every", "patience", "eval_batch_size")  # settings with a flag
TF_CONFIG_FORM = '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": K}}'


@dataclass(frozen=True)
class Cluster:
    """The workers of a training cluster and this process's place in it.

    Attributes:
        workers: ``["host:port", ...]``; worker 0 is the chief.
        index: this worker's position in ``workers``.
    """

    workers: tuple
    index: int

    @property
    def size(self):
        return len(self.workers)

    @property
    def chief(self):
        return self.index == 0

    @property
    def device(self):
        return f"/job:worker/replica:0/task:{self.index}"

    @classmethod
    def from_tf_config(cls, text=None):
        """The cluster ``TF_CONFIG`` describes (None if unset). A ``chief`` job, as TFJob writes, comes first."""
        text = os.environ.get("TF_CONFIG") if text is None else text
        if not text:
            return None

        def wrong(what):
            return InputError(f"TF_CONFIG: {what}; expected {TF_CONFIG_FORM}")

        try:
            config = json.loads(text)
        except ValueError as err:
            raise wrong(f"not JSON ({err})") from None
        if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) or \
                not isinstance(config.get("task"), dict):
            raise wrong(f"no 'cluster' and 'task' objects in {text[:80]!r}")
        cluster, task = config["cluster"], config["task"]
        jobs = {name: cluster.get(name, []) for name in ("chief", "worker")}
        for name, addresses in jobs.items():
            if not (isinstance(addresses, list) and all(isinstance(a, str) for a in addresses)):
                raise wrong(f"cluster.{name} is {json.dumps(addresses)}, not a list of \"host:port\" strings")
        kind, index = task.get("type"), task.get("index")
        if kind not in ("chief", "worker"):
            raise wrong(f"task.type {json.dumps(kind)}: bilm's synchronous training has only workers (and a chief)")
        if not isinstance(index, int) or isinstance(index, bool):
            raise wrong(f"task.index {json.dumps(index)}, not an integer")
        position = index if kind == "chief" else len(jobs["chief"]) + index
        return cls.of(jobs["chief"] + jobs["worker"], position, "TF_CONFIG")

    @classmethod
    def of(cls, workers, index, source="--workers"):
        workers = tuple(workers)
        if len(workers) < 2:
            raise InputError(f"{source}: a cluster needs at least 2 workers, got {len(workers)}")
        if not 0 <= index < len(workers):
            raise InputError(f"{source}: worker index {index} is not in [0, {len(workers)})")
        for address in workers:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise InputError(f"{source}: worker address {address!r}; expected host:port")
        if len(set(workers)) != len(workers):
            raise InputError(f"{source}: the same address twice in {list(workers)}")
        cluster = cls(workers, index)
        cluster.warn_if_exposed()
        return cluster

    def warn_if_exposed(self):
        for address in self.workers:
            host = address.rpartition(":")[0].strip("[]")
            try:
                ip = ipaddress.ip_address(socket.gethostbyname(host))
            except (OSError, ValueError):
                continue
            if not (ip.is_loopback or ip.is_private or ip.is_link_local):
                logger.warning("cluster address %s is public: TensorFlow's servers have no authentication and run "
                               "any graph sent to them; use a trusted network, an SSH tunnel or a VPN", address)

    def start_server(self, config):
        """Start this worker's TensorFlow server (collective ops led by the chief); return it."""
        config.experimental.collective_group_leader = "/job:worker/replica:0/task:0"
        spec = tf.train.ClusterSpec({"worker": list(self.workers)})
        try:
            return tf.distribute.Server(spec, job_name="worker", task_index=self.index, config=config, start=True)
        except (tf.errors.OpError, RuntimeError) as err:
            raise InputError(f"worker {self.index} ({self.workers[self.index]}): cannot start its server "
                             f"({str(err).strip().splitlines()[0]})") from None

    def wait_for_peers(self, timeout, poll=0.2):
        """Wait until every other worker's server accepts connections, for at most ``timeout`` seconds.

        TensorFlow's first session call waits for every worker of the cluster for ever, and in C++,
        where SIGTERM and Ctrl-C wait too; this wait is a Python loop that they end at once.
        Raises ``WorkerLostError`` naming the workers that never came.
        """
        deadline = time.monotonic() + timeout
        waiting = [k for k in range(self.size) if k != self.index]
        logged = False
        while True:
            waiting = [k for k in waiting if not self._accepts(k, timeout=poll)]
            if not waiting:
                return
            names = ", ".join(f"worker {k} ({self.workers[k]})" for k in waiting)
            if time.monotonic() >= deadline:
                raise WorkerLostError(f"{names}: not started within {flag('worker_timeout', '--worker_timeout')} "
                                      f"{timeout:g} s; start every worker of the cluster (the same command, each with "
                                      f"its own index)")
            if not logged:
                logger.info("waiting for %s (at most %g s)", names, timeout)
                logged = True
            time.sleep(poll)

    def _accepts(self, k, timeout):
        host, _, port = self.workers[k].rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
            return True
        except OSError:
            return False

    def unreachable(self, timeout=2.0):
        """The other workers whose port no longer accepts connections."""
        return [f"worker {k} ({address})" for k, address in enumerate(self.workers)
                if k != self.index and not self._accepts(k, timeout)]


def within(timeout, call):
    """``call()``'s result, waited for at most ``timeout`` seconds in a way that Ctrl-C and SIGTERM interrupt.

    A TensorFlow call that waits for other workers blocks in C++, where Python's signal handlers wait
    until it returns, and the first call of a cluster session waits for every worker without a bound:
    the call runs in a thread, this one waits for it. Raises ``TimeoutError`` when it takes longer (the
    call is left running: the process is about to stop), or what the call raised.
    """
    outcome, done = {}, threading.Event()

    def target():
        try:
            outcome["value"] = call()
        except BaseException as err:  # noqa: B036 (re-raised in the waiting thread)
            outcome["error"] = err
        finally:
            done.set()

    thread = threading.Thread(target=target, name="bilm-cluster-wait", daemon=True)
    thread.start()
    try:
        finished = done.wait(timeout)
    except BaseException:  # Ctrl-C or SIGTERM while waiting
        _ABANDONED.append(thread)
        raise
    if not finished:
        _ABANDONED.append(thread)
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


_ABANDONED = []  # ``within``'s threads given up on


def calls_left_running():
    """Whether a call ``within`` gave up on still runs: its session cannot be closed (closing waits for it)
    and the process can only end without its clean-up (``os._exit``)."""
    return any(thread.is_alive() for thread in _ABANDONED)


def local_addresses(n):
    """``n`` addresses ``127.0.0.1:PORT`` on free ports: a cluster of processes on this machine, to try it."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return addresses


class Collectives:
    """TensorFlow collective ops among the workers of a ``Cluster``, each with its own instance key."""

    def __init__(self, cluster):
        self.cluster = cluster
        self._next_key = 1

    def _key(self):
        self._next_key += 1
        return self._next_key

    def mean(self, tensor):
        return tf.raw_ops.CollectiveReduceV2(input=tensor, group_size=self.cluster.size, group_key=GROUP_KEY,
                                             instance_key=self._key(), ordering_token=[], merge_op="Add",
                                             final_op="Div")

    def gather(self, tensor):
        """Concatenation of every worker's ``tensor`` along axis 0 (shapes must be equal)."""
        return tf.raw_ops.CollectiveGatherV2(input=tensor, group_size=self.cluster.size, group_key=GROUP_KEY,
                                             instance_key=self._key(), ordering_token=[])

    def mean_gradients(self, grads_and_vars):
        """Average [(gradient, variable)] across workers.

        Sparse gradients of large tables (the softmax, a token embedding) stay sparse:
        every worker's rows are gathered. A collective keeps its shape from step to step,
        so only sparse gradients with a fixed number of rows are gathered; the others
        (the char embedding's, whose rows follow the distinct tokens of a batch) are
        reduced densely, as small tables are.
        """
        averaged = []
        for grad, var in grads_and_vars:
            sparse = isinstance(grad, tf.IndexedSlices) and grad.values.shape[0] is not None
            if sparse and var.shape.num_elements() > DENSE_LIMIT:
                values = self.gather(grad.values) / self.cluster.size
                averaged.append((tf.IndexedSlices(values, self.gather(grad.indices), grad.dense_shape), var))
            else:
                averaged.append((self.mean(tf.convert_to_tensor(grad)), var))
        return averaged

    def broadcast(self, tensor):
        """The chief's value of ``tensor`` (static shape), on every worker."""
        key = self._key()
        if self.cluster.chief:
            sent = tf.raw_ops.CollectiveBcastSendV2(input=tensor, group_size=self.cluster.size, group_key=GROUP_KEY,
                                                    instance_key=key)
            with tf.control_dependencies([sent]):
                return tf.identity(tensor)
        return tf.raw_ops.CollectiveBcastRecvV2(group_size=self.cluster.size, group_key=GROUP_KEY, instance_key=key,
                                                shape=tensor.shape.as_list(), T=tensor.dtype.base_dtype)

    def broadcast_from_chief(self, variables):
        """An op giving every worker the chief's values of ``variables``."""
        return tf.group(*[variable.assign(self.broadcast(variable.read_value())) for variable in variables])

    def gather_settings(self, settings):
        """Every worker's ``settings`` (see ``encode_settings``): int64 (W, SETTINGS_WORDS)."""
        return tf.reshape(self.gather(tf.constant(encode_settings(settings))), [self.cluster.size, SETTINGS_WORDS])


def encode_settings(settings):
    """A worker's settings (a JSON dict; nested dicts flattened to dotted names, long values to a SHA-256
    prefix) as SETTINGS_WORDS int64: what every worker must share, to compare at start."""
    flat = {}

    def add(prefix, value):
        if isinstance(value, dict):
            for key, item in value.items():
                add(f"{prefix}.{key}" if prefix else key, item)
            return
        text = json.dumps(value, sort_keys=True)
        flat[prefix] = text if len(text) <= 80 else "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    add("", settings)
    data = json.dumps(flat, sort_keys=True).encode("utf-8")
    if len(data) > 8 * SETTINGS_WORDS:
        raise InputError(f"the training settings take {len(data)} bytes, more than the {8 * SETTINGS_WORDS} a worker "
                         f"can compare with the others")
    return np.frombuffer(data.ljust(8 * SETTINGS_WORDS, b"\0"), dtype=np.int64)


def decode_settings(words):
    return json.loads(np.asarray(words, np.int64).tobytes().rstrip(b"\0").decode("utf-8"))


def check_same_setup(sess, gathered, cluster, options=None):
    """Raise ``TrainingError`` naming the workers whose settings (``Collectives.gather_settings``: options,
    vocabulary, data, towers, evaluation) are not the chief's, and the settings that differ."""
    settings = [decode_settings(words) for words in sess.run(gathered, options=options)]
    chief, differences = settings[0], []
    for k, theirs in enumerate(settings[1:], start=1):
        names = [name for name in sorted(set(chief) | set(theirs)) if chief.get(name) != theirs.get(name)]
        if names:
            what = ", ".join(f"{flag(name, '--' + name) if name in RUN_FLAGS else name} {theirs.get(name, 'unset')} "
                             f"(the chief's: {chief.get(name, 'unset')})" for name in names)
            differences.append(f"worker {k} ({cluster.workers[k]}) has {what}")
    if differences:
        raise TrainingError(f"{'; '.join(differences)}: every worker must start with the chief's settings (options, "
                            f"vocabulary, training files, towers, evaluation)")


LOST_PROBE_SECONDS = 10  # how long a worker whose step failed looks for the worker that went away


def lost_worker_error(err, cluster, step):
    """A one-line ``WorkerLostError`` for a step that failed because another worker is gone, naming it.

    In training, the failed step can come before the lost worker's port closes (a stopped chief saves its
    checkpoint first), so its port is looked for again for at most ``LOST_PROBE_SECONDS``.
    """
    lost = cluster.unreachable()
    deadline = time.monotonic() + (LOST_PROBE_SECONDS if step >= 0 else 0)
    while not lost and time.monotonic() < deadline:
        time.sleep(0.5)
        lost = cluster.unreachable()
    who = ", ".join(lost) if lost else "another worker"
    if step < 0:
        return WorkerLostError(f"{who} did not answer before training began ({type(err).__name__}); start every "
                               f"worker of the cluster (the same command, each with its own index)")
    return WorkerLostError(f"{who} stopped responding at batch {step + 1} ({type(err).__name__}); the cluster "
                           f"stops: continue with restart on every worker once it is back")
