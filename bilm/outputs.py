"""Output files that are never half-written and never overwritten by accident.

- ``atomic_output(path, overwrite)``: write a file under a temporary name beside it
  and rename it into place only when complete.
- ``PartsJob``: a long job's output written as numbered part files (each one
  complete or absent) in ``<output>.parts/``; a killed job is resumed by skipping
  the parts that exist, and the output file is assembled from the parts at the end.
"""
import contextlib
import json
import logging
import os
import re
import shutil

import h5py
import numpy as np

from .errors import OutputError, OutputExistsError

logger = logging.getLogger(__name__)

PARTS_SUFFIX = ".parts"
JOB_FILE = "job.json"


def check_output(path, overwrite=False):
    """Raise unless ``path`` can be written: its directory exists and it does not (or ``overwrite``)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OutputError(f"{path}: output directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise OutputError(f"{path}: output directory {directory} is not writable")
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a directory; expected a file name")
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(f"{path}: already exists; pass overwrite=True (--overwrite) to replace it")


def _write_error(path, err, kept=""):
    reason = os.strerror(err.errno) if getattr(err, "errno", None) else str(err)
    return OutputError(f"{path}: cannot write ({reason}){kept}")


@contextlib.contextmanager
def atomic_output(path, overwrite=False):
    """Yield a temporary path to write; on success it replaces ``path`` in one step.

    On any error the temporary file is removed and an existing ``path`` is untouched.
    """
    check_output(path, overwrite)
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


def _add_datasets(fout, datasets):
    for name, value in datasets.items():
        if name in fout:
            del fout[name]
        fout.create_dataset(name, data=value)


class PartsJob:
    """The resumable output of a long job that produces HDF5 datasets part by part.

    Args:
        outfile: the HDF5 file the job writes.
        settings: a JSON-able dict of everything that determines the output (input
            files with their sizes, model files, options); a resumed job must have
            the same settings.
        overwrite: replace an existing ``outfile`` (only when the new one is complete).
        resume: continue the parts an interrupted run left in ``<outfile>.parts``.

    ``is_done(k)`` tells whether part ``k`` exists; ``write_part(k, datasets)`` writes
    it; ``finish()`` assembles ``outfile`` from all parts and removes the parts.
    ``complete`` is True when ``resume`` finds ``outfile`` already written.
    """

    def __init__(self, outfile, settings, overwrite=False, resume=False):
        if overwrite and resume:
            raise OutputError(f"{outfile}: overwrite and resume contradict each other; pass one of them")
        self.outfile = outfile
        self.directory = outfile + PARTS_SUFFIX
        self.complete = resume and os.path.isfile(outfile) and not os.path.exists(self.directory)
        if self.complete:
            logger.info("%s is already complete; nothing to resume", outfile)
            return
        check_output(outfile, overwrite or resume)
        self._settings = json.loads(json.dumps(settings))
        self._job_file = os.path.join(self.directory, JOB_FILE)
        if os.path.isdir(self.directory):
            if not (resume or overwrite):
                raise OutputExistsError(
                    f"{self.directory}: an interrupted run left its parts here; pass resume=True (--resume) "
                    f"to finish it or overwrite=True (--overwrite) to start again"
                )
            if resume:
                self._check_settings()
                logger.info("resuming %s: %d part(s) already written", outfile, len(self._part_files()))
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
        if not os.path.exists(job_file) and not self._part_files():
            return  # killed before anything was written
        try:
            with open(job_file, encoding="utf-8") as fin:
                previous = json.load(fin)
        except (OSError, ValueError):
            previous = None
        if not isinstance(previous, dict):
            raise OutputError(f"{job_file}: missing or unreadable; start again with overwrite=True (--overwrite)")
        for key in sorted(set(previous) | set(settings)):
            if previous.get(key) != settings.get(key):
                raise OutputError(
                    f"{job_file}: the interrupted run had {key}={previous.get(key)!r}, this one has "
                    f"{settings.get(key)!r}; resume with the same inputs and settings, or pass overwrite=True"
                )

    def part_path(self, k):
        return os.path.join(self.directory, f"part-{k:06d}.hdf5")

    def _part_files(self):
        if not os.path.isdir(self.directory):  # nothing written yet
            return []
        names = sorted(n for n in os.listdir(self.directory) if re.fullmatch(r"part-\d{6}\.hdf5", n))
        return [os.path.join(self.directory, name) for name in names]

    def is_done(self, k):
        return os.path.isfile(self.part_path(k))

    @contextlib.contextmanager
    def writer(self, k, path=None):
        """An h5py.File to fill with part ``k`` (or another file of the job, ``path``); it
        exists once the block completes."""
        self._start()
        path = path or self.part_path(k)
        try:
            with _hdf5_writer(path) as fout:
                yield fout
        except OSError as err:
            raise _write_error(path, err, f"; complete parts are kept in {self.directory}: "
                                          f"make room and rerun with resume=True (--resume)") from None

    def write_part(self, k, datasets):
        """Write part ``k`` from {name: array}."""
        with self.writer(k) as fout:
            _add_datasets(fout, datasets)

    def _extra_path(self, k):
        return os.path.join(self.directory, f"extra-{k:06d}.hdf5")

    def write_extra(self, k, datasets):
        """Save {name: array} that resuming after part ``k`` needs; call it before part ``k`` completes."""
        with self.writer(k, self._extra_path(k)) as fout:
            _add_datasets(fout, datasets)

    def read_extra(self, k):
        """The datasets ``write_extra`` saved with part ``k``, as {name: array}."""
        with h5py.File(self._extra_path(k), "r") as fin:
            return {name: fin[name][...] for name in fin}

    def finish(self, concatenate=None, add=None):
        """Assemble ``outfile`` from the parts, in part order, then remove the parts.

        Every dataset of every part is copied under its name; with ``concatenate``
        (a dataset name), that dataset's rows are concatenated across parts instead.
        ``add``: {name: array} datasets written beside them. With one part and no
        ``concatenate``, the part becomes the output (no copy).
        """
        parts = self._part_files()
        try:
            if len(parts) == 1 and concatenate is None:
                with h5py.File(parts[0], "a") as fout:
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
                                    fin.copy(name, fout)
                    _add_datasets(fout, add or {})
        except OSError as err:
            raise _write_error(self.outfile, err, f"; the parts are kept in {self.directory}: make room and "
                                                  f"rerun with resume=True (--resume)") from None
        shutil.rmtree(self.directory, ignore_errors=True)

    @staticmethod
    def _concatenate(parts, name, fout):
        shapes = []
        for part in parts:
            with h5py.File(part, "r") as fin:
                shapes.append(fin[name].shape)
        total = sum(shape[0] for shape in shapes)
        dataset = fout.create_dataset(name, (total,) + tuple(shapes[0][1:]), dtype=np.float32)
        start = 0
        for part, shape in zip(parts, shapes):
            with h5py.File(part, "r") as fin:
                dataset[start:start + shape[0]] = fin[name][...]
            start += shape[0]
