"""Embedding on a Ray cluster: ``dump_on_ray`` (``bilm embed IN OUT --ray [ADDRESS]``), with Ray Data.

The job is ``dump_bilm_embeddings``'s, with the computing shared among Ray actors:

- this process (the driver) checks the whole input first (encoding, empty lines), as
  a one-process job does;
- Ray tasks read it a window of lines each (rows: line index, batch number, tokens);
  a window's lines are sorted by length and cut into batches exactly as on one
  machine, so the job's units of work (its batches) are the same;
- actors, one ``ElmoEmbedder`` each (one per GPU of the cluster; without GPUs one per
  machine, or ``workers``, sharing the CPUs), compute every sentence's array;
- the driver writes the arrays through ``bilm.core.files.PartsJob``: the same output file,
  lock, ``resume`` and ``overwrite`` as a one-process job. A job interrupted (Ctrl-C,
  or the driver killed) is finished with ``resume=True`` on Ray (or on one machine when
  its windows are the same: inputs of at least 16 windows of 4,096 lines).

Ray Data restarts an actor that is lost (its process killed, its machine gone) and runs
its batches again. Only the deterministic state modes run here (``warm``, ``zero``): a
sentence's vectors do not depend on the batch it is computed in. Ray is optional
(``pip install '.[ray]'`` in bilm's clone) and imported only when a job starts. The cluster's
processes read the input and the model files: on several machines they must be at the
same paths on every node (a shared file system); the output is written by the driver.
"""
import contextlib
import itertools
import logging
import os
import re
import socket

import numpy as np

from .. import errors
from ..core.batching import window_batches
from ..errors import BilmError, InputError, OutputError, flag
from ..core.text import Tokenizer, check_text_file, counted, read_text_lines

logger = logging.getLogger(__name__)

LOCAL = "local"
LOOPBACK = "127.0.0.1"
TASKS = 16  # an input of fewer than TASKS windows of 4,096 lines is cut into TASKS windows (whole batches)
_ENVIRONMENT = ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")  # the driver's TensorFlow settings, for the actors


def import_ray():
    """``ray`` with Ray Data, or an ``InputError`` saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError(f"{flag('dump_on_ray', '--ray')} needs Ray, which is not installed: "
                         f"pip install 'ray[data]' (in bilm's clone: pip install '.[ray]')") from None
    return ray


def _quiet():
    """Third-party messages hidden, as the ``bilm`` command does unless --verbose."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("2", "3")


@contextlib.contextmanager
def _environment(**values):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def ray_session(address=None):
    """Connected to Ray inside the block: ``address`` None or ``"local"`` starts a local
    instance (node address 127.0.0.1, no dashboard) stopped at the end; ``"auto"``,
    ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` connects to a running cluster. A session
    this process already has (``ray.init`` called by the caller) is used as it is.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    from ..core.startup import silenced_stderr

    quiet = _quiet()
    local = address in (None, LOCAL)
    where = {"address": address}
    if local:
        where = {"address": LOCAL, "include_dashboard": False, "_node_ip_address": LOOPBACK}
    try:  # Ray's start-up lines and its processes' C++ log lines, as TensorFlow's, only with --verbose
        with silenced_stderr(quiet), _environment(**({"RAY_BACKEND_LOG_LEVEL": "fatal"} if quiet else {})), \
                _loopback_only(ray, local):
            ray.init(**where, log_to_driver=not quiet, logging_level=logging.WARNING if quiet else logging.INFO)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{flag('address', '--ray')} {address or LOCAL}: cannot start or reach Ray ({reason})") from None
    try:
        if local and ray.util.get_node_ip_address() != LOOPBACK:
            logger.warning("the local Ray instance listens on %s, not on %s only: this version of Ray does not take "
                           "the setting bilm gives it; anyone who reaches this machine can reach it",
                           ray.util.get_node_ip_address(), LOOPBACK)
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _loopback_only(ray, local):
    """A local Ray instance started in the block listens on 127.0.0.1 only.

    Ray's servers (GCS, raylet, workers) listen on the node's address; given 127.0.0.1, Ray
    replaces it by the machine's public address unless it is told that it makes no cluster:
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (read when Ray is imported, so also set on the
    module that read it, for the time of ``ray.init``; the processes it starts inherit it).
    """
    if not local:
        yield
        return
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        with _environment(**{ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR: "0"}):
            yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def ray_window(n_lines, batch_size, window=None):
    """Lines per Ray task (sorted by length together): ``window`` (default 4,096, as on one
    machine), or fewer for a small input, so that it still makes ``TASKS`` tasks."""
    if window is None:
        from .embedder import WINDOW
        window = WINDOW
    per_task = -(-n_lines // TASKS)
    return min(window, max(1, -(-per_task // batch_size)) * batch_size)


def _line_starts(path, every=None):
    """Number of lines of a file, and the byte offset of every ``every``-th line (0, every, ...)."""
    check_text_file(path, "input file")
    starts, offset, n = [], 0, 0
    with open(path, "rb") as fin:  # lines as ``read_text_lines`` splits them
        for n, raw in enumerate(fin, start=1):
            if every and (n - 1) % every == 0:
                starts.append(offset)
            offset += len(raw)
    return n, starts


def _same_input(path, size):
    if not os.path.isfile(path) or os.path.getsize(path) != size:
        found = f"{os.path.getsize(path):,} bytes" if os.path.isfile(path) else "missing"
        raise InputError(f"{path}: not the input the job started with on Ray node {socket.gethostname()} ({found}, "
                         f"{size:,} bytes on the driver); the input must be at the same path on every node")


def _objects(items):
    """A 1-D object array of ``items`` (lists stay lists, whatever their lengths)."""
    array = np.empty(len(items), dtype=object)
    for k, item in enumerate(items):
        array[k] = item
    return array


def _read_windows(windows, path, size, encoding, encoding_errors, tokenize, batch_size, skip):
    """A Ray Data task: the rows of some windows of the input, the units in ``skip`` left out.

    ``windows``: {"offset", "first", "count", "unit"} arrays: each window's byte offset,
    first line index, number of lines and first unit. Rows: "index" (line index),
    "unit" (the batch the line is in, as on one machine), "tokens" (list of str), in
    the order computed on one machine.
    """
    _same_input(path, size)
    tokenizer = Tokenizer(tokenize)
    indices, units, sentences = [], [], []
    for offset, first, count, first_unit in zip(windows["offset"], windows["first"], windows["count"],
                                                windows["unit"]):
        lines = read_text_lines(path, "input file", InputError, encoding_errors, "", encoding,
                                start=(int(offset), int(first) + 1))
        window = [(number - 1, tokenizer(line)) for number, line in itertools.islice(lines, int(count))]
        for unit, (batch_indices, batch) in enumerate(window_batches(window, batch_size), start=int(first_unit)):
            if unit not in skip:
                indices += batch_indices
                units += [unit] * len(batch)
                sentences += batch
    return {"index": np.array(indices, np.int64), "unit": np.array(units, np.int64), "tokens": _objects(sentences)}


class _Embedder:
    """A Ray actor holding one ``ElmoEmbedder``: rows (index, unit, tokens) -> (index, unit, shape, data).

    "data" is the bytes of the array written for the line (``OutputForm``: all layers,
    float32 (n_layers + 1, n_tokens, 2P), or the chosen layers, pooling and type), "shape"
    its shape. ``threads``: TensorFlow's threads on a CPU worker (None: a GPU worker).
    """

    def __init__(self, model, form, threads, environment):
        os.environ.update(environment)
        if threads is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        from ..core import sessions
        from .job import OutputForm
        from .embedder import ElmoEmbedder

        self._output = OutputForm(**form)
        self._embedder = ElmoEmbedder(**model, session_config=sessions.config(threads=threads))

    def __call__(self, rows):
        sentences = [[str(token) for token in tokens] for tokens in rows["tokens"]]
        arrays = [None] * len(sentences)
        for positions, batch in self._embedder.batches(list(enumerate(sentences))):
            for position, array in zip(positions, self._embedder.embed_batch(batch)):
                arrays[position] = self._output(array)
        shapes = np.array([array.shape for array in arrays], np.int64).reshape(len(arrays), -1)
        return {"index": rows["index"], "unit": rows["unit"], "shape": shapes,
                "data": _objects([array.tobytes() for array in arrays])}


def _workers(ray, workers):
    """(number of actors, their resources, TensorFlow threads of each or None on GPUs) for this cluster."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    if gpus:
        wanted, have, kind = workers or gpus, gpus, "GPUs"
    else:
        machines = sum(1 for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU"))
        wanted, have, kind = workers or max(1, machines), max(1, cpus), "CPUs"
    if wanted > have:
        logger.warning("%s: %d workers asked, the cluster has %d %s: %d workers", flag("workers", "--ray-workers"),
                       wanted, have, kind, have)
        wanted = have
    if gpus:
        return wanted, {"num_gpus": 1}, None
    threads = max(1, cpus // wanted)
    return wanted, {"num_cpus": threads}, threads


@contextlib.contextmanager
def _data_context(ray):
    """Ray Data's settings for a job: outputs in input order, no progress bars of its own, quiet logs."""
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.preserve_order, context.enable_progress_bars
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    context.execution_options.preserve_order, context.enable_progress_bars = True, False
    if _quiet():  # its errors come back as one line (``_ray_failure``)
        data_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        data_logger.setLevel(level)


def _ray_failure(err, directory):
    """One line for an error Ray raised (many lines): the ``bilm`` error a worker raised, as that
    class, else Ray's last line, as an ``OutputError``."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(err).__name__
    kind = OutputError
    raised = re.fullmatch(r"bilm\.errors\.(\w+): (.*)", reason)
    if raised and issubclass(getattr(errors, raised.group(1), type), BilmError):
        kind, reason = getattr(errors, raised.group(1)), raised.group(2)
    kept = ""
    if os.path.isdir(directory):
        kept = (f"; what was computed is kept in {directory}: fix the cause and rerun with "
                f"{flag('resume=True', '--resume')}")
    return kind(f"on Ray: {reason}{kept}")


def dump_on_ray(address, vocab_file, dataset_file, options_file, weight_file, outfile, state_mode="warm",
                batch_size=64, overwrite=False, resume=False, encoding_errors="strict", empty_lines="error",
                part_size=None, layers="all", mix_weights=None, sentence_to_index=False, encoding="utf-8",
                tokenize=None, window=None, flush_seconds=None, precision="float32", dtype="float32", pool=None,
                workers=None, progress=None):
    """``dump_bilm_embeddings`` computed on a Ray cluster (see the module doc); the same output.

    Args:
        address: None or ``"local"`` (a Ray instance on this machine, stopped at the end),
            ``"auto"`` (the cluster this machine is part of) or ``"ray://HOST:PORT"``;
            a Ray session the caller already started is used as it is.
        workers: actors (default: one per GPU of the cluster, else one per machine,
            sharing the machine's CPUs); each holds one model.
        window: lines per Ray task, sorted by length together (default 4,096 as on one
            machine, fewer for an input of under 16 such windows, so that it makes 16 tasks).
        progress: a function called with the number of sentences each written batch adds.

    The other arguments are ``dump_bilm_embeddings``'s (``state_mode``: ``"warm"`` or
    ``"zero"``; ``shard`` and ``devices`` do not apply).
    """
    import_ray()
    if state_mode == "stateful":
        raise InputError(f"{flag('state_mode', '--state-mode')} 'stateful' carries states from line to line: it runs "
                         f"in one process only, not on Ray (use warm or zero)")
    from .job import (SENTENCE_PART, SENTENCE_TO_INDEX, SETTING_NAMES, embedding_job, read_sentence_index,
                      sentence_index_dataset)
    from ..core.files import FLUSH_SECONDS, PartsJob

    part_size = SENTENCE_PART if part_size is None else part_size
    if batch_size < 1 or (window is not None and window < 1):
        raise InputError(f"batch_size ({batch_size}) and window ({window}) must be at least 1")
    window = ray_window(_line_starts(dataset_file)[0], batch_size, window)
    options, reader, output, settings, inputs = embedding_job(
        vocab_file, dataset_file, options_file, weight_file, state_mode, batch_size, (0, 1), encoding_errors,
        empty_lines, part_size, layers, mix_weights, encoding, tokenize, window, precision, dtype, pool)
    with PartsJob(outfile, settings, overwrite, resume, inputs, SETTING_NAMES) as job:
        if job.complete:
            return
        n_sentences = reader.scan()  # the checks of a one-process job, before any computing
        _check_model_files(weight_file, vocab_file, options)
        n_lines, starts = _line_starts(dataset_file, window)
        if n_lines != n_sentences:
            raise InputError(f"{dataset_file}: changed while it was read; run the job again")
        pending, sizes, skip = _plan(starts, n_lines, window, batch_size, job.done)
        read = {"path": dataset_file, "size": os.path.getsize(dataset_file), "encoding": reader.encoding,
                "encoding_errors": encoding_errors, "tokenize": tokenize, "batch_size": batch_size, "skip": skip}
        model = {"options_file": options, "weight_file": weight_file, "vocab_file": vocab_file,
                 "state_mode": state_mode, "batch_size": batch_size, "precision": precision}
        form = {"layers": layers, "mix_weights": mix_weights, "pool": pool, "dtype": dtype}
        bar = _progress_bar(n_sentences, n_sentences - sum(sizes.values()), progress)
        try:
            with job.noting_interruption(n_sentences, "sentence"), \
                    job.writer(max(1, -(-part_size // batch_size)),
                               FLUSH_SECONDS if flush_seconds is None else flush_seconds) as writer:
                if pending:
                    with ray_session(address) as ray, _data_context(ray):
                        arrays = _pipeline(ray, pending, read, model, form, workers, sum(sizes.values()))
                        try:
                            _write(arrays, sizes, output.dtype, writer, bar, progress)
                        except (BilmError, KeyboardInterrupt):
                            raise
                        except Exception as err:  # noqa: BLE001 - Ray's errors: many classes, many lines each
                            raise _ray_failure(err, job.directory) from None
        finally:
            bar.close()
        record = {}
        if sentence_to_index:  # as on one machine
            index_of = read_sentence_index(dataset_file, reader.encoding, encoding_errors)
            record[SENTENCE_TO_INDEX] = sentence_index_dataset(index_of)
        with job.noting_interruption(n_sentences, "sentence"):
            job.finish(add=record)
    logger.info("wrote %s to %s on Ray", counted(n_sentences, "sentence"), outfile)


def _check_model_files(weight_file, vocab_file, options):
    """The model files, checked here as a one-process job checks them (the workers read them too)."""
    from ..core.weights import check_weight_file

    check_weight_file(weight_file, options)
    if vocab_file is not None and not os.path.isfile(vocab_file):
        raise errors.VocabularyError(f"{vocab_file}: vocabulary file not found")


def _plan(starts, n_lines, window, batch_size, done):
    """What is left to do: the windows to read ({"offset", "first", "count", "unit"}: byte
    offset, first line, lines, first unit), the batches to write ({unit: sentences}), and
    the batches of those windows that are ``done`` (not computed again)."""
    per_window = -(-window // batch_size)
    pending, sizes, skip = [], {}, set()
    for k, offset in enumerate(starts):
        first, count = k * window, min(window, n_lines - k * window)
        units = {k * per_window + j: min(batch_size, count - j * batch_size) for j in range(-(-count // batch_size))}
        todo = {unit: n for unit, n in units.items() if unit not in done}
        if todo:
            pending.append({"offset": offset, "first": first, "count": count, "unit": k * per_window})
            sizes.update(todo)
            skip.update(set(units) - set(todo))
    return pending, sizes, frozenset(skip)


def _progress_bar(total, done, progress):
    from tqdm import tqdm
    return tqdm(total=total, initial=done, desc="sentences", unit="sent", disable=None if progress is None else True)


def _pipeline(ray, pending, read, model, form, workers, n_sentences):
    """The Ray Data dataset of the job's arrays: windows read by tasks, embedded by actors, in input order."""
    n_workers, resources, threads = _workers(ray, workers)
    logger.info("embedding %s on Ray: %s", counted(n_sentences, "sentence"), counted(n_workers, "worker"))
    environment = {name: os.environ[name] for name in _ENVIRONMENT if name in os.environ}
    lines = ray.data.from_items(pending, override_num_blocks=len(pending)).map_batches(
        _read_windows, batch_size=1, fn_kwargs=read, num_cpus=0, compute=ray.data.TaskPoolStrategy(size=n_workers))
    return lines.map_batches(
        _Embedder, batch_size=model["batch_size"], compute=ray.data.ActorPoolStrategy(size=n_workers),
        fn_constructor_kwargs={"model": model, "form": form, "threads": threads, "environment": environment},
        **resources)


def _write(arrays, sizes, dtype, writer, bar, progress):
    """Write each unit of ``sizes`` ({unit: sentences}) once all its lines' arrays have come."""
    waiting = {}
    for block in arrays.iter_batches(batch_size=None, batch_format="numpy"):
        for index, unit, shape, data in zip(block["index"], block["unit"], block["shape"], block["data"]):
            unit = int(unit)
            if unit not in sizes:
                logger.warning("Ray returned line %d of batch %d again; it is written once", index, unit)
                continue
            datasets = waiting.setdefault(unit, {})
            datasets[str(index)] = np.frombuffer(data, dtype).reshape(shape)
            if len(datasets) == sizes[unit]:
                writer.add(unit, waiting.pop(unit))
                n = sizes.pop(unit)
                bar.update(n)
                if progress is not None:
                    progress(n)
    if sizes:
        missing = sum(sizes.values()) - sum(len(datasets) for datasets in waiting.values())
        raise OutputError(f"Ray returned no arrays for {missing:,} sentences of {len(sizes):,} batches")
