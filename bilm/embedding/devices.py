"""Embedding on every device of a machine: one process per GPU (or per share of the CPU cores).

``dump_on_devices`` splits the input's lines among the devices (line i to device i % n),
runs ``dump_bilm_embeddings`` for each share in its own process (its own part files,
so an interrupted job resumes on every device), shows one progress bar for the whole
job, and assembles one output file with the original's keys. A device that fails stops
the job with its error; what the others computed is kept for ``--resume``, which must
split the lines among as many devices (the shares depend on it).

The device processes stop when this one does: Ctrl-C or SIGTERM here is passed on to
them (SIGTERM), and a device process whose parent has died (SIGKILL) stops by itself;
either way it saves what it completed first.
"""
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time

from tqdm import tqdm

from ..errors import BilmError, InputError, OutputError, flag, speak_in_flags, speaks_in_flags
from ..core.files import DEVICES_SUFFIX, PartsJob, count_saved
from ..core.text import counted
from .job import SENTENCE_TO_INDEX, SETTING_NAMES, dump_in_process, embedding_job, read_sentence_index, sentence_index_dataset

logger = logging.getLogger(__name__)

STOP_SECONDS = 60  # a device process saves its parts and ends within this once told to stop, or is killed
PARENT_POLL_SECONDS = 0.5  # how often a device process looks whether its parent is alive


def parse_devices(spec):
    """``"gpu:0,gpu:1"`` -> ["gpu:0", "gpu:1"]; ``"cpu:2"`` -> ["cpu", "cpu"] (two CPU processes)."""
    devices = []
    for item in (spec.split(",") if isinstance(spec, str) else spec):
        kind, _, number = item.strip().partition(":")
        if kind == "gpu" and number.isdigit():
            devices.append(f"gpu:{int(number)}")
        elif kind == "cpu" and (not number or number.isdigit()):
            devices += ["cpu"] * int(number or 1)
        else:
            raise InputError(f"{flag('devices', '--devices')}: {item!r}; expected gpu:K (one process on GPU K) or "
                             f"cpu:N (N processes sharing the CPU cores), comma-separated")
    if not devices:
        raise InputError(f"{flag('devices', '--devices')} names no device")
    return devices


def check_devices(devices):
    """Raise unless every GPU in ``devices`` is on this machine (CPU processes always are).

    GPU K is the K-th GPU TensorFlow sees (the K-th of ``CUDA_VISIBLE_DEVICES`` when it is set).
    """
    asked = sorted({int(device[4:]) for device in devices if device.startswith("gpu:")})
    if not asked:
        return
    import tensorflow as tf

    have = len(tf.config.list_physical_devices("GPU"))
    missing = [f"gpu:{k}" for k in asked if k >= have]
    if missing:
        there = ", ".join(f"gpu:{k}" for k in range(have)) if have else "no GPU"
        raise InputError(f"{flag('devices', '--devices')}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                         f"not on this machine, which has {there} (cpu:N runs N processes on the CPU)")


def _gpu(device):
    """The ``CUDA_VISIBLE_DEVICES`` of a device process for ``gpu:K``: the K-th GPU this process sees."""
    k = int(device.split(":")[1])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return visible.split(",")[k].strip() if visible else str(k)


def _stop_once(signum, frame):
    """SIGTERM in a device process: stop as on Ctrl-C (saving the parts), and ignore any later signal."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _watch_parent(parent):
    """Send this process SIGTERM once ``parent`` is no longer its parent (it has died)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _worker(device, n_cpu, kwargs, connection, quiet, parent, in_flags):
    """One device's share, in its own process; tells the parent through ``connection``
    ("progress", sentences), ("done", None), ("interrupted", None) or ("error", message).
    Ctrl-C is the parent's: it passes SIGTERM on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_once)
    _watch_parent(parent)
    speak_in_flags(in_flags)
    if device.startswith("gpu:"):
        os.environ["CUDA_VISIBLE_DEVICES"] = _gpu(device)
        threads = None
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        threads = max(1, (os.cpu_count() or 1) // n_cpu)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("bilm.core.text").setLevel(logging.ERROR)  # the parent reads the input too and says it once

    def tell(kind, value=None):
        with contextlib.suppress(OSError):  # the parent has died: nobody listens
            connection.send((kind, value))

    try:
        from ..core.startup import start_tensorflow
        start_tensorflow(verbose=not quiet)  # its start-up lines hidden, as in the bilm command
        dump_in_process(**kwargs, threads=threads, progress=lambda n: tell("progress", n))
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # done: nothing left to stop
        tell("done")
    except KeyboardInterrupt:
        tell("interrupted")
    except BaseException as err:  # reported by the parent, with the device's name
        tell("error", f"{type(err).__name__}: {err}" if not isinstance(err, BilmError) else str(err))
        raise SystemExit(2)


def dump_on_devices(devices, vocab_file, dataset_file, options_file, weight_file, outfile, state_mode, batch_size,
                    overwrite, resume, encoding_errors, empty_lines, part_size, layers, mix_weights,
                    sentence_to_index, encoding, tokenize, window, flush_seconds, precision, dtype, pool):
    """``dump_bilm_embeddings`` with the lines shared among ``devices`` (see the module doc)."""
    if state_mode == "stateful":
        raise InputError("state_mode='stateful' carries states from line to line: it runs on one device only")
    n = len(devices)
    _, reader, _, settings, inputs = embedding_job(  # the job's checks, before any process starts
        vocab_file, dataset_file, options_file, weight_file, state_mode, batch_size, (0, 1), encoding_errors,
        empty_lines, part_size, layers, mix_weights, encoding, tokenize, window, precision, dtype, pool)
    check_devices(devices)
    names = dict(SETTING_NAMES, devices="the number of --devices processes")
    with PartsJob(outfile, settings, overwrite, resume, inputs, names, DEVICES_SUFFIX, {"devices": n}) as job:
        if job.complete:
            return
        total = reader.scan()
        job.start()
        shares = [os.path.join(job.directory, f"device-{k:03d}.hdf5") for k in range(n)]
        common = dict(vocab_file=vocab_file, dataset_file=dataset_file, options_file=options_file,
                      weight_file=weight_file, state_mode=state_mode, batch_size=batch_size,
                      encoding_errors=encoding_errors, empty_lines=empty_lines, part_size=part_size, layers=layers,
                      mix_weights=mix_weights, encoding=encoding, tokenize=tokenize, window=window,
                      flush_seconds=flush_seconds, precision=precision, dtype=dtype, pool=pool, resume=True)
        jobs = [dict(common, shard=(k, n), outfile=shares[k]) for k in range(n)]
        with job.noting_interruption(total, "sentence", saved=lambda: sum(count_saved(share, complete=True)
                                                                          for share in shares)):
            _run_workers(devices, jobs, total, job.directory)  # the device processes save their parts
            record = {}
            if sentence_to_index:  # as on one machine
                record[SENTENCE_TO_INDEX] = sentence_index_dataset(read_sentence_index(dataset_file, reader.encoding,
                                                                                       encoding_errors))
            job.finish(add=record, sources=shares)
    logger.info("wrote %s to %s on %s", counted(total, "sentence"), outfile, counted(n, "device"))


@contextlib.contextmanager
def _sigint_ignored():
    """Processes started in the block ignore SIGINT (Ctrl-C reaches them through this one)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _messages(readers, timeout):
    """[(k, message)] from the device processes' connections ``readers`` ({connection: k}) within
    ``timeout`` seconds; a process that has ended (its connection closed) gives (k, None) and is
    removed from ``readers``."""
    received = []
    for reader in multiprocessing.connection.wait(list(readers), timeout):
        try:
            received.append((readers[reader], reader.recv()))
        except EOFError:
            received.append((readers.pop(reader), None))
    return received


def _stop(processes, readers, finished):
    """SIGTERM to the device processes still running but the ``finished`` ones; wait (reading their
    messages, so that none blocks on a full pipe) until they end, ``STOP_SECONDS`` at most; then kill
    what is left."""
    for k, process in enumerate(processes):
        if k not in finished and process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    while readers and time.monotonic() < deadline:
        _messages(readers, 0.1)
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            logger.warning("device process %d did not stop within %d s: killed", process.pid, STOP_SECONDS)
            process.kill()
            process.join()


def _run_workers(devices, jobs, total, directory):
    context = multiprocessing.get_context("spawn")
    n_cpu = sum(device == "cpu" for device in devices)
    quiet = os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("2", "3")  # as the bilm command sets it, unless --verbose
    pipes = [context.Pipe(duplex=False) for _ in devices]
    readers = {reader: k for k, (reader, _) in enumerate(pipes)}
    processes = [context.Process(target=_worker, args=(device, n_cpu, job, writer, quiet, os.getpid(),
                                                       speaks_in_flags()), daemon=True)
                 for device, job, (_, writer) in zip(devices, jobs, pipes)]
    bar = tqdm(total=total, desc="sentences", unit="sent", disable=None)
    finished, failure = set(), None
    try:
        with _sigint_ignored():
            for process, (_, writer) in zip(processes, pipes):
                process.start()
                writer.close()  # the child's end: the pipe closes when the child ends
        while len(finished) < len(processes) and failure is None:
            for k, message in _messages(readers, 1.0):
                kind, value = message or ("ended", None)
                if kind == "progress":
                    bar.update(value)
                elif kind == "done":
                    finished.add(k)
                elif kind == "error":
                    failure = (k, value)
                elif kind == "ended" and k not in finished and failure is None:
                    processes[k].join(STOP_SECONDS)
                    failure = (k, f"its process ended with status {processes[k].exitcode}")
                elif kind == "interrupted":  # a device process was stopped by someone else: stop them all
                    raise KeyboardInterrupt
    finally:  # each device process saves what it completed
        bar.close()
        _stop(processes, readers, finished)
    if failure is not None:
        k, message = failure
        raise OutputError(f"device {devices[k]} (process {k}) failed: {message}; what the devices computed is "
                          f"kept in {directory}: fix the cause and rerun with {flag('resume=True', '--resume')}")
