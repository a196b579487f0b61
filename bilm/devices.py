"""Embedding on every device of a machine: one process per GPU (or per share of the CPU cores).

``dump_on_devices`` splits the input's lines among the devices (line i to device i % n),
runs ``dump_bilm_embeddings`` for each share in its own process (its own part files,
so an interrupted job resumes on every device), shows one progress bar for the whole
job, and assembles one output file with the original's keys. A device that fails stops
the job with its error; what the others computed is kept for ``--resume``.
"""
import logging
import multiprocessing
import os
import queue
import shutil

import h5py
from tqdm import tqdm

from .errors import BilmError, InputError, OutputError, OutputExistsError, flag
from .outputs import OutputLock, _hdf5_writer, check_output
from .text import DatasetReader

logger = logging.getLogger(__name__)

DEVICES_SUFFIX = ".devices"


def parse_devices(spec):
    """``"gpu:0,gpu:1"`` -> ["gpu:0", "gpu:1"]; ``"cpu:2"`` -> ["cpu", "cpu"] (two CPU processes)."""
    devices = []
    for item in (spec.split(",") if isinstance(spec, str) else spec):
        kind, _, number = item.strip().partition(":")
        if kind == "gpu" and number.isdigit():
            devices.append(f"gpu:{number}")
        elif kind == "cpu" and (not number or number.isdigit()):
            devices += ["cpu"] * int(number or 1)
        else:
            raise InputError(f"{flag('devices', '--devices')}: {item!r}; expected gpu:K (one process on GPU K) or "
                             f"cpu:N (N processes sharing the CPU cores), comma-separated")
    if not devices:
        raise InputError(f"{flag('devices', '--devices')} names no device")
    return devices


def _worker(k, device, n_cpu, kwargs, messages, quiet):
    """One device's share, in its own process."""
    if device.startswith("gpu:"):
        os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":")[1]
        threads = None
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        threads = max(1, (os.cpu_count() or 1) // n_cpu)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        from .cli import start_tensorflow
        start_tensorflow(verbose=not quiet)  # its start-up lines hidden, as in the bilm command
        from .dumps import dump_bilm_embeddings
        dump_bilm_embeddings(**kwargs, threads=threads, progress=lambda n: messages.put(("progress", k, n)))
        messages.put(("done", k, None))
    except KeyboardInterrupt:
        messages.put(("interrupted", k, None))
    except BaseException as err:  # reported by the parent, with the device's name
        messages.put(("error", k, f"{type(err).__name__}: {err}" if not isinstance(err, BilmError) else str(err)))
        raise SystemExit(2)


def dump_on_devices(devices, vocab_file, dataset_file, options_file, weight_file, outfile, state_mode, batch_size,
                    overwrite, resume, encoding_errors, empty_lines, part_size, layers, mix_weights,
                    sentence_to_index, encoding, tokenize, window, flush_seconds, precision, dtype, pool):
    """``dump_bilm_embeddings`` with the lines shared among ``devices`` (see the module doc)."""
    if state_mode == "stateful":
        raise InputError("state_mode='stateful' carries states from line to line: it runs on one device only")
    n = len(devices)
    directory = outfile + DEVICES_SUFFIX
    with OutputLock(outfile):
        if resume and os.path.isfile(outfile) and not os.path.exists(directory):
            logger.info("%s is already complete; nothing to resume", outfile)
            return
        check_output(outfile, overwrite or resume, {"input text": dataset_file, "options file": options_file,
                                                    "weight file": weight_file, "vocabulary": vocab_file})
        if os.path.isdir(directory) and not (resume or overwrite):
            raise OutputExistsError(f"{directory}: an interrupted run left its devices' parts here; pass "
                                    f"{flag('resume=True', '--resume')} to finish it or "
                                    f"{flag('overwrite=True', '--overwrite')} to start again")
        if overwrite:
            shutil.rmtree(directory, ignore_errors=True)
        total = DatasetReader(dataset_file, (0, 1), encoding, encoding_errors, empty_lines, tokenize).scan()
        os.makedirs(directory, exist_ok=True)
        shares = [os.path.join(directory, f"device-{k:03d}.hdf5") for k in range(n)]
        common = dict(vocab_file=vocab_file, dataset_file=dataset_file, options_file=options_file,
                      weight_file=weight_file, state_mode=state_mode, batch_size=batch_size,
                      encoding_errors=encoding_errors, empty_lines=empty_lines, part_size=part_size, layers=layers,
                      mix_weights=mix_weights, sentence_to_index=sentence_to_index, encoding=encoding,
                      tokenize=tokenize, window=window, flush_seconds=flush_seconds, precision=precision,
                      dtype=dtype, pool=pool, resume=True)
        _run_workers(devices, [dict(common, shard=(k, n), outfile=shares[k]) for k in range(n)], total, directory)
        _assemble(shares, outfile, sentence_to_index)
        shutil.rmtree(directory, ignore_errors=True)
    logger.info("wrote %d sentences to %s on %d devices", total, outfile, n)


def _run_workers(devices, jobs, total, directory):
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    n_cpu = sum(device == "cpu" for device in devices)
    quiet = os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("2", "3")  # as the bilm command sets it, unless --verbose
    processes = [context.Process(target=_worker, args=(k, device, n_cpu, job, messages, quiet), daemon=True)
                 for k, (device, job) in enumerate(zip(devices, jobs))]
    for process in processes:
        process.start()
    bar = tqdm(total=total, desc="sentences", unit="sent", disable=None)
    finished, failure = set(), None
    try:
        while len(finished) < len(processes) and failure is None:
            try:
                kind, k, value = messages.get(timeout=1.0)
            except queue.Empty:
                for k, process in enumerate(processes):
                    if k not in finished and not process.is_alive() and process.exitcode != 0:
                        failure = (k, f"its process ended with status {process.exitcode}")
                continue
            if kind == "progress":
                bar.update(value)
            elif kind == "error":
                failure = (k, value)
            elif kind == "done":
                finished.add(k)
            elif kind == "interrupted":  # a worker had a Ctrl-C (or SIGTERM) that this process did not
                raise KeyboardInterrupt
    except KeyboardInterrupt as err:
        for process in processes:  # each saves what it completed (they had the Ctrl-C too; SIGTERM: tell them)
            process.join(timeout=60)
        err.bilm_note = (f"{bar.n:,} of {total:,} sentences are saved in {directory}; run the same command "
                         f"with {flag('resume=True', '--resume')} to finish")
        raise
    finally:
        bar.close()
        if failure is not None:
            for process in processes:
                if process.is_alive():
                    process.terminate()
        for process in processes:
            process.join(timeout=60)
    if failure is not None:
        k, message = failure
        raise OutputError(f"device {devices[k]} (process {k}) failed: {message}; what the devices computed is "
                          f"kept in {directory}: fix the cause and rerun with {flag('resume=True', '--resume')}")


def _assemble(shares, outfile, sentence_to_index):
    """One output file from the devices' files: every dataset, and the merged ``sentence_to_index``."""
    from .dumps import SENTENCE_TO_INDEX, merge_sentence_index, sentence_index_dataset

    index_of = {}
    try:
        with _hdf5_writer(outfile) as fout:
            for share in shares:
                with h5py.File(share, "r") as fin:
                    for name in fin:
                        if name == SENTENCE_TO_INDEX:
                            merge_sentence_index(index_of, fin[name])
                        else:
                            fin.copy(name, fout)
            if sentence_to_index:
                fout.create_dataset(SENTENCE_TO_INDEX, data=sentence_index_dataset(index_of))
    except OSError as err:
        raise OutputError(f"{outfile}: cannot write ({err}); the devices' outputs are kept: rerun with "
                          f"{flag('resume=True', '--resume')}") from None
