"""Output files that are never half-written, never overwritten by accident, never written twice at once.

- ``check_output(path, overwrite, inputs)``: can ``path`` be written? Refuses an
  existing file (unless ``overwrite``) and any output that is one of the job's inputs.
- ``atomic_output(path, overwrite)``: write a file under a temporary name beside it
  and rename it into place only when complete.
- ``OutputLock``: one process at a time writes an output (``<output>.lock``, an
  advisory lock the system releases when the process dies).
- ``PartsJob``: a long job's output written as part files (each complete or absent)
  in ``<output>.parts/``; a part is closed after at most ``flush_seconds`` of work
  and when the job is interrupted, so a killed or interrupted job loses little and is
  resumed by skipping what the parts hold; the output is assembled at the end.
"""
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import sys
import time

import h5py
import numpy as np

from .errors import OutputError, OutputExistsError, OutputLockedError, flag

logger = logging.getLogger(__name__)

PARTS_SUFFIX = ".parts"
LOCK_SUFFIX = ".lock"
JOB_FILE = "job.json"
STATES_GROUP = ".states"  # in a part file: what resuming after the part needs (not copied to the output)
FLUSH_SECONDS = 30.0
WAIT_POLL_SECONDS = 0.2  # how often a waiting OutputLock tries again


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def check_not_an_input(path, inputs, directory=False):
    """Raise if the output ``path`` is one of ``inputs`` (through links or ``./`` too).

    With ``directory``, ``path`` is an output directory that may be replaced as a
    whole: no input may lie inside it either.
    """
    for name, input_path in inputs.items():
        if input_path is None:
            continue
        inside = directory and os.path.realpath(input_path).startswith(os.path.realpath(path).rstrip(os.sep) + os.sep)
        if _same_file(path, input_path) or inside:
            raise OutputError(f"{path}: is {'where ' if inside else ''}the {name} of this job "
                              f"{'lies ' if inside else ''}({input_path}); write the output elsewhere")


def check_output(path, overwrite=False, inputs=None):
    """Raise unless ``path`` can be written: its directory exists, it is not one of the job's
    ``inputs`` ({what: path}), and it does not exist (or ``overwrite``)."""
    check_not_an_input(path, inputs or {})
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OutputError(f"{path}: output directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise OutputError(f"{path}: output directory {directory} is not writable")
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a directory; expected a file name")
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(f"{path}: already exists; pass {flag('overwrite=True', '--overwrite')} to replace it")


def _write_error(path, err, kept=""):
    reason = os.strerror(err.errno) if getattr(err, "errno", None) else str(err)
    return OutputError(f"{path}: cannot write ({reason}){kept}")


@contextlib.contextmanager
def atomic_output(path, overwrite=False, inputs=None):
    """Yield a temporary path to write; on success it replaces ``path`` in one step.

    On any error the temporary file is removed and an existing ``path`` is untouched.
    """
    check_output(path, overwrite, inputs)
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        yield temporary
        os.replace(temporary, path)
    except OutputError:
        raise
    except OSError as err:
        raise _write_error(path, err, "; an existing file of that name is untouched") from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


class OutputLock:
    """An exclusive advisory lock on an output, held while a job writes it.

    The lock file (``lock_path``) records the holder's process id, command line and
    start time; the lock itself (``fcntl.flock``) disappears with the process, so a
    killed job never leaves a stale lock. A second job on the same output is refused
    with ``OutputLockedError`` naming the first: at once, or after waiting up to ``wait``
    seconds for the first to finish.
    """

    def __init__(self, output, lock_path=None, wait=0):
        self.output = output
        self.path = lock_path or output + LOCK_SUFFIX
        self.wait = wait
        self._file = None

    def acquire(self):
        deadline, told = time.monotonic() + self.wait, False
        while True:
            try:
                handle = open(self.path, "a+", encoding="utf-8")
            except OSError as err:
                raise _write_error(self.path, err) from None
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if time.monotonic() >= deadline:
                    raise self._held_error(handle, waited=self.wait) from None
                if not told:
                    logger.info("%s: is being written by another process; waiting for it to finish (at most %.0f s)",
                                self.output, self.wait)
                    told = True
                handle.close()
                time.sleep(WAIT_POLL_SECONDS)
                continue
            try:  # the file may have been removed by its last holder since we opened it: lock the new one
                same = os.path.samestat(os.fstat(handle.fileno()), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        command = " ".join(os.path.basename(a) if k == 0 else a for k, a in enumerate(sys.argv))
        handle.write(f"pid {os.getpid()}, `{command}`, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self._file = handle
        return self

    def _held_error(self, handle, waited=0):
        """The error naming the lock's holder (``handle``: the lock file, closed here)."""
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        waited = f"; waited {waited:.0f} s" if waited else ""
        return OutputLockedError(f"{self.output}: is being written by another process ({holder}){waited}; wait for "
                                 f"it to finish or stop it (its lock: {self.path})")

    def check_free(self):
        """Raise ``OutputLockedError`` if a process holds the lock, without taking it or writing anything
        (an input that must not be in the middle of being written)."""
        try:
            handle = open(self.path, encoding="utf-8")
        except FileNotFoundError:
            return
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                raise self._held_error(handle) from None
            fcntl.flock(handle, fcntl.LOCK_UN)

    def release(self):
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.remove(self.path)
            self._file.close()  # closing releases the lock
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


@contextlib.contextmanager
def _hdf5_writer(path):
    """An h5py.File on a temporary name, renamed to ``path`` when the block completes."""
    temporary = path + ".tmp"
    try:
        with h5py.File(temporary, "w") as fout:
            yield fout
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _add_datasets(group, datasets):
    for name, value in datasets.items():
        if name in group:
            del group[name]
        group.create_dataset(name, data=value)


_PART = re.compile(r"part-(\d{9})-(\d{9})\.hdf5")


class PartsJob:
    """The resumable output of a long job that produces HDF5 datasets unit by unit.

    A job is a sequence of units (batches) numbered from 0; ``PartWriter`` stores the
    datasets of consecutive units in part files ``part-FIRST-END.hdf5``, each complete
    or absent. Use it as a context manager: it holds the output's lock throughout.

    Args:
        outfile: the HDF5 file the job writes.
        settings: a JSON-able dict of everything that determines the output (input
            files with their sizes, model files, options); a resumed job must have
            the same settings.
        overwrite: replace an existing ``outfile`` (only when the new one is complete).
        resume: continue the parts an interrupted run left in ``<outfile>.parts``.
        inputs: {what: path} of the job's input files (the output may be none of them).

    ``done`` is the set of units the parts hold; ``writer()`` writes more;
    ``finish()`` assembles ``outfile`` from all parts and removes them. ``complete`` is
    True when ``resume`` finds ``outfile`` already written.
    """

    def __init__(self, outfile, settings, overwrite=False, resume=False, inputs=None):
        if overwrite and resume:
            raise OutputError(f"{outfile}: overwrite and resume contradict each other; pass one of them")
        check_not_an_input(outfile, inputs or {})
        self.outfile = outfile
        self.directory = outfile + PARTS_SUFFIX
        self._settings = json.loads(json.dumps(settings))
        self._job_file = os.path.join(self.directory, JOB_FILE)
        self._overwrite, self._resume = overwrite, resume
        self._lock = OutputLock(outfile)
        self.complete = False
        self.done = set()

    def __enter__(self):
        check_output(self.outfile, overwrite=True)  # the directory exists, the output is not a directory
        self._lock.acquire()
        try:
            self._open()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc):
        self._lock.release()

    def _open(self):
        outfile, resume, overwrite = self.outfile, self._resume, self._overwrite
        self.complete = resume and os.path.isfile(outfile) and not os.path.exists(self.directory)
        if self.complete:
            logger.info("%s is already complete; nothing to resume", outfile)
            return
        check_output(outfile, overwrite or resume)
        if os.path.isdir(self.directory):
            if not (resume or overwrite):
                raise OutputExistsError(
                    f"{self.directory}: an interrupted run left its parts here; pass "
                    f"{flag('resume=True', '--resume')} to finish it or {flag('overwrite=True', '--overwrite')} "
                    f"to start again")
            if resume:
                self._check_settings()
                self.done = {unit for first, end in self._parts() for unit in range(first, end)}
                logger.info("resuming %s: %d part(s) already written", outfile, len(self._parts()))
            else:
                shutil.rmtree(self.directory)
        elif resume:
            logger.info("no parts to resume in %s; starting from the beginning", self.directory)

    def _start(self):
        """Create the parts directory and its job file (on the first write)."""
        if os.path.isfile(self._job_file):
            return
        try:
            os.makedirs(self.directory, exist_ok=True)
            with atomic_output(self._job_file, overwrite=True) as temporary:
                with open(temporary, "w", encoding="utf-8") as fout:
                    json.dump(self._settings, fout, indent=1, sort_keys=True)
        except OSError as err:
            raise _write_error(self.directory, err) from None

    def _check_settings(self):
        job_file, settings = self._job_file, self._settings
        if not os.path.exists(job_file) and not self._parts():
            return  # killed before anything was written
        try:
            with open(job_file, encoding="utf-8") as fin:
                previous = json.load(fin)
        except (OSError, ValueError):
            previous = None
        if not isinstance(previous, dict):
            raise OutputError(f"{job_file}: missing or unreadable; start again with "
                              f"{flag('overwrite=True', '--overwrite')}")
        for key in sorted(set(previous) | set(settings)):
            if previous.get(key) != settings.get(key):
                raise OutputError(
                    f"{job_file}: the interrupted run had {key}={previous.get(key)!r}, this one has "
                    f"{settings.get(key)!r}; resume with the same inputs and settings, or pass "
                    f"{flag('overwrite=True', '--overwrite')}")

    def part_path(self, first, end):
        return os.path.join(self.directory, f"part-{first:09d}-{end:09d}.hdf5")

    def _parts(self):
        """[(first, end)] unit ranges of the complete parts, in order."""
        if not os.path.isdir(self.directory):  # nothing written yet
            return []
        ranges = [_PART.fullmatch(name) for name in os.listdir(self.directory)]
        return sorted((int(m.group(1)), int(m.group(2))) for m in ranges if m)

    def states_before(self, unit):
        """The states a part ending at ``unit`` saved (``PartWriter.states``), as {name: array}, or None."""
        for first, end in self._parts():
            if end == unit:
                with h5py.File(self.part_path(first, end), "r") as fin:
                    group = fin.get(STATES_GROUP)
                    return None if group is None else {name: group[name][...] for name in group}
        return None

    @contextlib.contextmanager
    def writer(self, max_units=None, flush_seconds=FLUSH_SECONDS, states=None):
        """A ``PartWriter``; on leaving the block (also by an exception or Ctrl-C) its
        complete units are saved."""
        writer = PartWriter(self, max_units, flush_seconds, states)
        try:
            yield writer
        finally:
            writer.flush()

    def finish(self, concatenate=None, add=None):
        """Assemble ``outfile`` from the parts, in unit order, then remove the parts.

        Every dataset of every part is copied under its name; with ``concatenate`` (a
        dataset name), the units' datasets (named by unit number) are concatenated, in
        unit order, into that one dataset instead.
        ``add``: {name: array} datasets written beside them. With one part and no
        ``concatenate``, the part becomes the output (no copy).
        """
        parts = [self.part_path(first, end) for first, end in self._parts()]
        try:
            if len(parts) == 1 and concatenate is None:
                with h5py.File(parts[0], "a") as fout:
                    if STATES_GROUP in fout:
                        del fout[STATES_GROUP]
                    _add_datasets(fout, add or {})
                os.replace(parts[0], self.outfile)
            else:
                with _hdf5_writer(self.outfile) as fout:
                    if concatenate is not None:
                        self._concatenate(parts, concatenate, fout)
                    else:
                        for part in parts:
                            with h5py.File(part, "r") as fin:
                                for name in fin:
                                    if name != STATES_GROUP:
                                        fin.copy(name, fout)
                    _add_datasets(fout, add or {})
        except OSError as err:
            raise _write_error(self.outfile, err, f"; the parts are kept in {self.directory}: make room and "
                                                  f"rerun with {flag('resume=True', '--resume')}") from None
        shutil.rmtree(self.directory, ignore_errors=True)

    @staticmethod
    def _concatenate(parts, name, fout):
        """The rows of every unit (a part's datasets, named by unit number) in unit order, as dataset ``name``."""
        units = []  # per part: [(dataset name, shape)] in unit order
        for part in parts:
            with h5py.File(part, "r") as fin:
                units.append([(key, fin[key].shape) for key in sorted((k for k in fin if k != STATES_GROUP), key=int)])
        shapes = [shape for part_units in units for _, shape in part_units]
        dataset = fout.create_dataset(name, (sum(shape[0] for shape in shapes),) + tuple(shapes[0][1:]),
                                      dtype=np.float32)
        start = 0
        for part, part_units in zip(parts, units):
            with h5py.File(part, "r") as fin:
                for key, shape in part_units:
                    dataset[start:start + shape[0]] = fin[key][...]
                    start += shape[0]


class PartWriter:
    """Writes consecutive units of a ``PartsJob`` into part files.

    ``add(unit, datasets)`` appends a unit's datasets to the open part; the part is
    closed (renamed into place) once it holds ``max_units`` units or has been open for
    ``flush_seconds``, before a unit that does not follow the previous one, and by
    ``flush()``. ``states``: a function returning {name: array} saved with each part
    (what resuming after it needs, e.g. carried LSTM states), asked after each unit.
    A unit interrupted while it is added (Ctrl-C) leaves nothing in the part.
    """

    def __init__(self, job, max_units, flush_seconds, states):
        self.job, self.max_units, self.flush_seconds, self._states = job, max_units, flush_seconds, states
        self._file = self._first = None
        self._last = (None, None)  # (end of the open part's units, the states after them): stored at once
        self._opened = 0.0

    @property
    def _end(self):
        return self._last[0]

    def add(self, unit, datasets):
        if self._file is not None and unit != self._end:
            self.flush()
        if self._file is None:
            self.job._start()
            self._first, self._last, self._opened = unit, (unit, None), time.monotonic()
            self._temporary = os.path.join(self.job.directory, f"part-{unit:09d}.hdf5.tmp")
            try:
                self._file = h5py.File(self._temporary, "w")
            except OSError as err:
                raise self._error(err) from None
        try:
            for name, value in datasets.items():
                self._file.create_dataset(name, data=value)
            states = self._states() if self._states is not None else None
            self._last = (unit + 1, states)  # one store: from here the part holds the unit and the states after it
        except BaseException as err:  # a failed or interrupted (Ctrl-C) unit leaves nothing in the part
            if self._end == unit:
                for name in datasets:
                    with contextlib.suppress(Exception):
                        if name in self._file:
                            del self._file[name]
            if isinstance(err, OSError):
                self._discard()
                raise self._error(err) from None
            raise
        full = self.max_units is not None and self._end - self._first >= self.max_units
        if full or time.monotonic() - self._opened >= self.flush_seconds:
            self.flush()

    def _error(self, err):
        return _write_error(self.job.part_path(self._first, self._end + 1), err,
                            f"; complete parts are kept in {self.job.directory}: make room and rerun with "
                            f"{flag('resume=True', '--resume')}")

    def _discard(self):
        with contextlib.suppress(Exception):
            self._file.close()
        with contextlib.suppress(OSError):
            os.remove(self._temporary)
        self._file = None

    def flush(self):
        """Close the open part (if any units are in it) and put it in place."""
        if self._file is None:
            return
        end, states = self._last
        if end == self._first:  # its first unit was interrupted: nothing to keep
            self._discard()
            return
        try:
            if states is not None:
                _add_datasets(self._file.require_group(STATES_GROUP), states)
            self._file.close()
            os.replace(self._temporary, self.job.part_path(self._first, end))
        except OSError as err:
            self._discard()
            raise self._error(err) from None
        self._file = None
