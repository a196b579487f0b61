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
  resumed by skipping what the parts hold; the output is assembled at the end and
  records what it was made from (``RECORD``), so that resuming a complete output checks it.

HDF5 never writes onto a full disk here (the library crashes closing a file it could not
write): parts are built in memory and written by Python, and the assembly checks the room
it needs first (``check_room``). A full disk is an ``OutputError`` naming the file and the disk.
"""
import contextlib
import errno
import fcntl
import io
import json
import logging
import os
import re
import shutil
import sys
import time

import h5py
import numpy as np

from ..errors import OutputError, OutputExistsError, OutputLockedError, flag
from .text import counted

logger = logging.getLogger(__name__)

PARTS_SUFFIX = ".parts"
DEVICES_SUFFIX = ".devices"  # the parts of a job shared among devices (``bilm.embedding.devices``)
LOCK_SUFFIX = ".lock"
JOB_FILE = "job.json"
STATES_GROUP = ".states"  # in a part file: what resuming after the part needs (not copied to the output)
RECORD = "bilm_job"  # root attribute of a complete output: the JSON settings of the job that made it
FLUSH_SECONDS = 30.0
PART_BYTES = 256 * 2 ** 20  # a part's arrays, at most (a part is built in memory)
ROOM_MARGIN = 2 ** 20  # bytes an HDF5 file may need beyond its arrays (and 1/50 of them): its metadata
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


def _disk(path):
    """The mount point of the file system ``path`` (a file or directory, existing or not) is on."""
    path = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def _write_error(path, err, kept=""):
    reason = os.strerror(err.errno) if getattr(err, "errno", None) else str(err)
    if getattr(err, "errno", None) == errno.ENOSPC:
        reason += f": the disk of {_disk(path)} is full"
    return OutputError(f"{path}: cannot write ({reason}){kept}")


def check_room(path, needed, kept=""):
    """Raise the ``OutputError`` of a full disk unless ``path``'s file system has ``needed`` bytes free.

    Checked before HDF5 writes a large file: HDF5 crashes (segmentation fault) closing a file
    it could not write, so it must not meet a full disk.
    """
    status = os.statvfs(os.path.dirname(os.path.abspath(path)))
    free = status.f_bavail * status.f_frsize
    if free < needed:
        raise OutputError(f"{path}: cannot write ({os.strerror(errno.ENOSPC)}: it needs {needed / 1e6:,.1f} MB, "
                          f"the disk of {_disk(path)} has {free / 1e6:,.1f} MB free){kept}")


def _nbytes(value):
    """Bytes of an array to write (of its strings' UTF-8 too)."""
    value = np.asarray(value)
    if value.dtype == object:
        return sum(len(str(item).encode("utf-8")) for item in value.flat)
    return value.nbytes


def file_fingerprint(path):
    """What identifies an input file for resuming: [absolute path, size, modification time in ns]."""
    if path is None or not os.path.exists(path):  # a missing file gets its own error later
        return None
    status = os.stat(path)
    return [os.path.abspath(path), status.st_size, status.st_mtime_ns]


def _shown(value):
    """A setting's value for a message (a file's fingerprint as its path, size and time)."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str) and isinstance(value[2], int):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value[2] / 1e9))
        return f"{value[0]} ({value[1]:,} bytes, modified {when})"
    return repr(value)


def differences(previous, settings, names=None):
    """What differs between two jobs' settings, one clause per key: ``"--layers was 'all', is 'top'"``.

    ``names``: {key: how the ``bilm`` command names it}; a key not in it is the flag ``--key-name``.
    """
    names = names or {}
    return "; ".join(f"{flag(key, names.get(key, '--' + key.replace('_', '-')))} was {_shown(previous.get(key))}, "
                     f"is {_shown(settings.get(key))}"
                     for key in sorted(set(previous) | set(settings)) if previous.get(key) != settings.get(key))


def recorded_settings(path):
    """The settings a complete output records (``RECORD``), or None (an older bilm's, or not bilm's)."""
    try:
        with h5py.File(path, "r") as fin:
            text = fin.attrs.get(RECORD)
        return json.loads(text) if isinstance(text, (bytes, str)) else None
    except (OSError, ValueError):
        return None


def count_saved(outfile, rows=False, complete=False):
    """How many units' datasets a job on ``outfile`` has saved in its parts (with ``rows``: how many
    rows they have); with ``complete``, also in ``outfile`` if the job has finished (every dataset)."""
    directory = outfile + PARTS_SUFFIX
    if os.path.isdir(directory):
        paths = [os.path.join(directory, name) for name in os.listdir(directory) if _PART.fullmatch(name)]
    else:
        paths = [outfile] if complete and os.path.isfile(outfile) else []
    total = 0
    for path in paths:
        with h5py.File(path, "r") as fin:
            if rows:
                total += sum(fin[name].shape[0] for name in fin if name != STATES_GROUP)
            else:  # len: no walk through every name
                total += len(fin) - (STATES_GROUP in fin)
    return total


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
            files with their ``file_fingerprint``, model files, options); a resumed job
            must have the same settings. The complete output records them (``RECORD``):
            ``resume`` on a complete output checks them too.
        overwrite: replace an existing ``outfile`` (only when the new one is complete).
        resume: continue the parts an interrupted run left in ``<outfile>.parts``.
        inputs: {what: path} of the job's input files (the output may be none of them).
        names: {settings key: how the ``bilm`` command names it} for messages (default
            ``--key-name``).
        suffix: the directory of the parts, ``outfile + suffix``.
        split: how the work is divided (e.g. {"devices": 2}): checked on resuming like
            ``settings``, not recorded in the output (it does not change it).

    ``done`` is the set of units the parts hold; ``writer()`` writes more;
    ``finish()`` assembles ``outfile`` from all parts and removes them. ``complete`` is
    True when ``resume`` finds ``outfile`` already written by the same job.
    """

    def __init__(self, outfile, settings, overwrite=False, resume=False, inputs=None, names=None,
                 suffix=PARTS_SUFFIX, split=None):
        if overwrite and resume:
            raise OutputError(f"{outfile}: overwrite and resume contradict each other; pass one of them")
        check_not_an_input(outfile, inputs or {})
        self.outfile = outfile
        self.directory = outfile + suffix
        self._settings = json.loads(json.dumps(settings))
        self._job = json.loads(json.dumps(dict(settings, **(split or {}))))
        self._names = names or {}
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
        for other in {outfile + PARTS_SUFFIX, outfile + DEVICES_SUFFIX} - {self.directory}:
            if os.path.isdir(other) and overwrite:
                shutil.rmtree(other)
            elif os.path.isdir(other):
                devices = "with" if other.endswith(DEVICES_SUFFIX) else "without"
                raise OutputExistsError(
                    f"{other}: an interrupted run {devices} {flag('devices', '--devices')} left its parts here; "
                    f"resume it {devices} {flag('devices', '--devices')}, or pass {flag('overwrite=True', '--overwrite')} "
                    f"to start again")
        if resume and os.path.isfile(outfile) and not os.path.exists(self.directory):
            self._check_complete()
            self.complete = True
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
                logger.info("resuming %s from %s", outfile, self.directory)
            else:
                shutil.rmtree(self.directory)
        elif resume:
            logger.info("no parts to resume in %s; starting from the beginning", self.directory)

    def _check_complete(self):
        """``resume`` on a complete output: it must record this job's settings."""
        recorded, again = recorded_settings(self.outfile), flag("overwrite=True", "--overwrite")
        if recorded is None:
            raise OutputExistsError(
                f"{self.outfile}: complete, but it records no inputs and settings (an older bilm's output, or not "
                f"bilm's), so {flag('resume=True', '--resume')} cannot check that it is this job's output; use it "
                f"as it is, or pass {again} to make it again")
        if recorded != self._settings:
            raise OutputExistsError(
                f"{self.outfile}: complete, but made from other inputs or settings: "
                f"{differences(recorded, self._settings, self._names)}; use it as it is, or pass {again} to "
                f"replace it")

    def start(self):
        """Create the parts directory and its job file (on the first write)."""
        if os.path.isfile(self._job_file):
            return
        try:
            os.makedirs(self.directory, exist_ok=True)
            with atomic_output(self._job_file, overwrite=True) as temporary:
                with open(temporary, "w", encoding="utf-8") as fout:
                    json.dump(self._job, fout, indent=1, sort_keys=True)
        except OSError as err:
            raise _write_error(self.directory, err) from None

    def _check_settings(self):
        job_file = self._job_file
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
        if previous != self._job:
            raise OutputError(
                f"{job_file}: the interrupted run had other inputs or settings: "
                f"{differences(previous, self._job, self._names)}; resume with the same ones, or pass "
                f"{flag('overwrite=True', '--overwrite')} to start again")

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
    def noting_interruption(self, total, what, rows=False, saved=None):
        """On a KeyboardInterrupt in the block (Ctrl-C, SIGTERM), say what the job has saved: the
        exception's message, and its ``bilm_note`` for the command's one line.

        ``total``: the units' datasets (or ``rows``) of the whole job, ``what`` they are
        (``"sentence"``); ``saved``: a function counting them (default: ``count_saved``, run
        once the block has closed its writer).
        """
        try:
            yield
        except KeyboardInterrupt as err:
            done = count_saved(self.outfile, rows) if saved is None else saved()
            err.bilm_note = (f"{done:,} of {counted(total, what)} are saved in {self.directory}; run the same "
                             f"command with {flag('resume=True', '--resume')} to finish")
            err.args = (err.bilm_note,)
            raise

    @contextlib.contextmanager
    def writer(self, max_units=None, flush_seconds=FLUSH_SECONDS, states=None):
        """A ``PartWriter``; on leaving the block (also by an exception or Ctrl-C) its
        complete units are saved."""
        writer = PartWriter(self, max_units, flush_seconds, states)
        try:
            yield writer
        finally:
            writer.flush()

    def finish(self, concatenate=None, add=None, sources=None):
        """Assemble ``outfile`` from the parts, in unit order, then remove the parts.

        Every dataset of every part is copied under its name; with ``concatenate`` (a
        dataset name), the units' datasets (named by unit number) are concatenated, in
        unit order, into that one dataset instead.
        ``add``: {name: array} datasets written beside them. With one part and no
        ``concatenate``, the part becomes the output (no copy). ``sources``: the HDF5
        files to assemble instead of the parts (complete outputs of sub-jobs).
        The output records the job's settings (``RECORD``).
        """
        if sources is None:
            sources = [self.part_path(first, end) for first, end in self._parts()]
        add = add or {}
        kept = (f"; the parts are kept in {self.directory}: make room and rerun with "
                f"{flag('resume=True', '--resume')}")
        single = len(sources) == 1 and concatenate is None
        copied = 0 if single else sum(os.path.getsize(source) for source in sources)
        written = copied + sum(_nbytes(value) for value in add.values())
        check_room(self.outfile, written + written // 50 + ROOM_MARGIN, kept)
        try:
            if single:
                with h5py.File(sources[0], "a") as fout:
                    if STATES_GROUP in fout:
                        del fout[STATES_GROUP]
                    self._complete(fout, add)
                os.replace(sources[0], self.outfile)
            else:
                with _hdf5_writer(self.outfile) as fout:
                    if concatenate is not None:
                        self._concatenate(sources, concatenate, fout)
                    else:
                        for source in sources:
                            with h5py.File(source, "r") as fin:
                                for name in fin:
                                    if name != STATES_GROUP:
                                        fin.copy(name, fout)
                    self._complete(fout, add)
        except OSError as err:
            raise _write_error(self.outfile, err, kept) from None
        shutil.rmtree(self.directory, ignore_errors=True)

    def _complete(self, fout, add):
        _add_datasets(fout, add)
        fout.attrs[RECORD] = np.bytes_(json.dumps(self._settings, sort_keys=True).encode("utf-8"))  # in the header

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

    ``add(unit, datasets)`` appends a unit's datasets to the open part, an HDF5 file built
    in memory; the part is closed (written to disk and renamed into place) once it holds
    ``max_units`` units or ``max_bytes`` of arrays or has been open for ``flush_seconds``,
    before a unit that does not follow the previous one, and by ``flush()``. ``states``: a
    function returning {name: array} saved with each part (what resuming after it needs,
    e.g. carried LSTM states), asked after each unit. A unit interrupted while it is added
    (Ctrl-C) leaves nothing in the part.
    """

    def __init__(self, job, max_units, flush_seconds, states, max_bytes=PART_BYTES):
        self.job, self.max_units, self.flush_seconds, self._states = job, max_units, flush_seconds, states
        self.max_bytes = max_bytes
        self._file = self._buffer = self._first = None
        self._last = (None, None)  # (end of the open part's units, the states after them): stored at once
        self._opened, self._bytes = 0.0, 0

    @property
    def _end(self):
        return self._last[0]

    def add(self, unit, datasets):
        if self._file is not None and unit != self._end:
            self.flush()
        if self._file is None:
            self.job.start()
            self._first, self._last, self._opened, self._bytes = unit, (unit, None), time.monotonic(), 0
            self._buffer = io.BytesIO()
            self._file = h5py.File(self._buffer, "w")
        try:
            for name, value in datasets.items():
                self._file.create_dataset(name, data=value)
            states = self._states() if self._states is not None else None
            self._last = (unit + 1, states)  # one store: from here the part holds the unit and the states after it
        except BaseException:  # a failed or interrupted (Ctrl-C) unit leaves nothing in the part
            if self._end == unit:
                for name in datasets:
                    with contextlib.suppress(Exception):
                        if name in self._file:
                            del self._file[name]
            raise
        self._bytes += sum(_nbytes(value) for value in datasets.values())
        full = self.max_units is not None and self._end - self._first >= self.max_units
        if full or self._bytes >= self.max_bytes or time.monotonic() - self._opened >= self.flush_seconds:
            self.flush()

    def _discard(self):
        with contextlib.suppress(Exception):
            self._file.close()
        self._file = self._buffer = None

    def flush(self):
        """Close the open part (if any units are in it) and put it in place."""
        if self._file is None:
            return
        end, states = self._last
        if end == self._first:  # its first unit was interrupted: nothing to keep
            self._discard()
            return
        if states is not None:
            _add_datasets(self._file.require_group(STATES_GROUP), states)
        self._file.close()
        path = self.job.part_path(self._first, end)
        temporary = path + ".tmp"
        try:
            with open(temporary, "wb") as fout, self._buffer.getbuffer() as image:
                fout.write(image)
            os.replace(temporary, path)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.remove(temporary)
            raise _write_error(path, err, f"; complete parts are kept in {self.job.directory}: make room and "
                                          f"rerun with {flag('resume=True', '--resume')}") from None
        finally:
            self._file = self._buffer = None
