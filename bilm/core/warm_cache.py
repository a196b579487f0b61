"""The ``"warm"`` states of a model, kept on disk under the content of what decides them.

Computing the warm-up states (``bilm.core.states.Warm``) runs the model over the warm-up
text one token at a time, and its graph takes as long to build: about 2 s of a
full-size model's set-up. The values depend only on the weights, the options, the warm-up
ids and how this machine computes, so they are kept after the first computation and read
back afterwards, bit for bit the same:

- the key is a SHA-256 of the weight files' bytes (computed in a thread while the graph is
  being built: 0.3 s for 374 MB, measured once here), the options, the warm-up ids, TensorFlow's version,
  oneDNN's setting, and the CPU and GPUs (their model names), so that a changed file, a
  different machine or TensorFlow never reuses another's states (file names, sizes and
  times are not trusted: a copied-over file keeps them);
- the file is ``cache_dir()/warm-states/<key>.npz`` (``$BILM_CACHE``, default
  ``~/.cache/bilm``), written atomically by the session that first initialises the states
  (whoever runs the initializer: a job, or a user's own graph);
- a file that cannot be read, or holds another key or other shapes, is ignored (a warning
  says so) and replaced; one that cannot be written is said at DEBUG level;
- states computed while TensorFlow may use TF32 (a GPU, and TF32 on: its default outside
  ``bilm``'s float32 jobs) are not kept;
- ``$BILM_NO_WARM_CACHE=1`` computes the states every time and keeps nothing.
"""
import hashlib
import json
import logging
import os
import threading

import numpy as np
import tensorflow.compat.v1 as tf

from .download import cache_dir
from .files import atomic_output
from .precision import cpu_model

logger = logging.getLogger(__name__)

ENV_DISABLE = "BILM_NO_WARM_CACHE"
SUBDIR = "warm-states"
VERSION = 1  # of the warm-up computation: a change to it must change this
CHUNK = 1 << 23
KEY_WAIT = 60  # seconds the graph waits for the files' hash (0.3 s for 374 MB here)


def disabled():
    """Whether ``$BILM_NO_WARM_CACHE`` asks for no cache (any value but empty or 0)."""
    return os.environ.get(ENV_DISABLE, "") not in ("", "0")


def file_digest(path):
    """SHA-256 (hex) of a file's bytes (hashlib and reads release the GIL: a thread runs it alongside)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fin:
        for chunk in iter(lambda: fin.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _machine():
    """How this machine computes: what, besides the inputs, decides the states' last bits."""
    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        gpus.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
    return {"tensorflow": tf.__version__, "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "cpu": cpu_model(), "gpus": gpus}


class WarmCache:
    """The cache entry of one model's warm states; ``None`` from ``for_files`` when disabled.

    ``load(state_sizes, n_layers)`` gives ``[direction][layer] = (c (1, D), h (1, P))`` arrays
    or None; ``stored(finals)`` passes computed states (the same structure, tensors) through
    an op that writes them when it runs.
    """

    def __init__(self, files, options, warmup_ids):
        self._files = [path for path in files if path is not None]
        self._fixed = {"version": VERSION, "options": options.to_dict(),
                       "warmup": hashlib.sha256(b"".join(np.ascontiguousarray(ids, np.int32).tobytes()
                                                         for ids in warmup_ids)).hexdigest(),
                       "machine": _machine()}
        self._digests = None
        self._thread = threading.Thread(target=self._hash_files, name="bilm-warm-cache-key", daemon=True)
        self._thread.start()

    @classmethod
    def for_files(cls, files, options, warmup_ids):
        return None if disabled() else cls(files, options, warmup_ids)

    def _hash_files(self):
        try:
            self._digests = [file_digest(path) for path in self._files]
        except OSError as err:  # unreadable: the model's own loading says so; nothing is cached
            logger.debug("warm states: not cached (%s)", err)

    def _key(self):
        if self._thread.is_alive():
            self._thread.join(KEY_WAIT)
            if self._thread.is_alive():  # a file system that hangs: the job goes on without the cache
                logger.warning("warm states: hashing %s took over %d s; computing them, not keeping them",
                               ", ".join(self._files), KEY_WAIT)
                self._digests, self._thread = None, threading.Thread()  # (not waited for again)
        if self._digests is None:
            return None
        text = json.dumps(dict(self._fixed, files=self._digests), sort_keys=True)
        return text, hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]

    def _path(self, name):
        return os.path.join(cache_dir(), SUBDIR, f"{name}.npz")

    def load(self, state_sizes, n_layers):
        key = self._key()
        path = key and self._path(key[1])
        if path is None or not os.path.exists(path):
            return None
        try:
            with np.load(path) as saved:
                if str(saved["key"]) != key[0]:
                    raise ValueError("it was written for other inputs")
                finals = [[tuple(saved[f"{d}_{layer}_{kind}"] for kind in "ch") for layer in range(n_layers)]
                          for d in range(2)]
        except Exception as err:  # noqa: BLE001 (a damaged zip raises zipfile's errors, among others)
            logger.warning("warm states: ignoring %s (%s); computing them again", path, err)
            return None
        for direction in finals:
            for layer in direction:
                for value, size in zip(layer, state_sizes):
                    if value.shape != (1, size) or value.dtype != np.float32 or not np.all(np.isfinite(value)):
                        logger.warning("warm states: ignoring %s (a state of shape %s, %s); computing them again",
                                       path, value.shape, value.dtype)
                        return None
        return finals

    def stored(self, finals):
        key = self._key()
        if key is None:
            return finals
        flat = [value for direction in finals for layer in direction for value in layer]
        n_layers = len(finals[0])

        def write(*values):
            if self._fixed["machine"]["gpus"] and tf.config.experimental.tensor_float_32_execution_enabled():
                return values  # maybe computed in TF32 (a graph run outside bilm's float32 jobs): not kept
            path = self._path(key[1])
            arrays = {f"{d}_{layer}_{kind}": values[(d * n_layers + layer) * 2 + k]
                      for d in range(2) for layer in range(n_layers) for k, kind in enumerate("ch")}
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with atomic_output(path, overwrite=True) as temporary, open(temporary, "wb") as fout:
                    np.savez(fout, key=np.array(key[0]), **arrays)
            except OSError as err:  # (OutputError too) computed again next time
                logger.debug("warm states: cannot cache them in %s (%s)", path, err)
            return values

        passed = tf.numpy_function(write, flat, [tf.float32] * len(flat), name="cache_warm_states")
        for out, value in zip(passed, flat):
            out.set_shape(value.shape)
        it = iter(passed)
        return [[tuple(next(it) for _ in layer) for layer in direction] for direction in finals]
