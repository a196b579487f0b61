"""The paper's training data, the 1 Billion Word Benchmark: its archive unpacked into the cache, checked, named.

``prepare()`` (``bilm download lm1b``) downloads the benchmark's archive (or takes a copy
the user has), streams it once, writes the training and held-out files it holds into
``cache_dir()/lm1b/`` (each under a temporary name, renamed when complete: an interrupted
run leaves no half file, and a rerun skips the files already written), counts their
sentences and tokens on the way, checks the numbers of files and sentences against the
benchmark's published counts and records the counts in ``counts.json`` (later commands
do not read the 4 GB again). The published model's vocabulary comes with it. Layout::

    cache_dir()/lm1b/training-monolingual.tokenized.shuffled/news.en-000NN-of-00100     NN = 01..99
    cache_dir()/lm1b/heldout-monolingual.tokenized.shuffled/news.en.heldout-000NN-of-00050   NN = 00..49
    cache_dir()/lm1b/vocab-2016-09-10.txt, counts.json (and the downloaded archive: delete it once unpacked)

Commands find the files by name (``resolve``): ``--train_prefix lm1b`` (the 99 training
files), ``--test_prefix lm1b-heldout`` (the 50 held-out files, as the original's README
evaluates), ``--test_prefix lm1b-test`` (``news.en.heldout-00000-of-00050``, the
benchmark's test set) and ``--vocab_file lm1b`` (``vocab-2016-09-10.txt``). The archive's
other members (its README, the held-out folder's ``news.en-00000-of-00100``, which holds
the same sentences as the 50 held-out files) are not written.

Tokens are counted as ``wc -w`` counts them in the C locale (runs of bytes other than
ASCII whitespace); sentences are the lines holding a token (as training reads them).
"""
import glob
import json
import logging
import os
import re
import tarfile
import zlib

from tqdm import tqdm

from ..core.download import LOCK_WAIT_SECONDS, _sha256, cache_dir, catalogue, download
from ..errors import InputError, OutputError, flag
from ..core.files import OutputLock, atomic_output

logger = logging.getLogger(__name__)

NAME = "lm1b"  # the catalogue entry, the cache directory and the name of the training files
TOP = "1-billion-word-language-modeling-benchmark-r13output"  # the archive's root folder
TRAINING_DIR, HELDOUT_DIR = "training-monolingual.tokenized.shuffled", "heldout-monolingual.tokenized.shuffled"
FILE_NAMES = {TRAINING_DIR: re.compile(r"news\.en-\d{5}-of-00100"),
              HELDOUT_DIR: re.compile(r"news\.en\.heldout-\d{5}-of-00050")}
TEST_FILE = "news.en.heldout-00000-of-00050"  # the benchmark's test set
VOCAB = "vocab-2016-09-10.txt"
RECORD = "counts.json"
# The names commands take: (folder, glob of its file names).
NAMES = {NAME: (TRAINING_DIR, "news.en-*-of-00100"), f"{NAME}-heldout": (HELDOUT_DIR, "news.en.heldout-*-of-00050"),
         f"{NAME}-test": (HELDOUT_DIR, TEST_FILE)}
PARTS = {TRAINING_DIR: "training", HELDOUT_DIR: "heldout"}


def _corpus_entry():
    entry = catalogue().get(NAME)
    if not (isinstance(entry, dict) and entry.get("kind") == "corpus"):
        raise InputError(f"{NAME!r} is not a corpus in the catalogue ($BILM_CATALOGUE has another entry of that name)")
    return entry


def _directory(cache=None):
    return os.path.join(cache or cache_dir(), NAME)


def prepare(from_file=None, cache=None, progress=True):
    """Download (or take ``from_file``), unpack and check the benchmark and its vocabulary; return the record.

    The record (``counts.json``): ``files`` {relative path: {bytes, sentences, tokens}},
    ``training``, ``heldout`` and ``test`` {files, sentences, tokens}. Already unpacked: the
    files are checked against it (sizes) and the archive is not needed. ``from_file`` is
    checked against the catalogue's size and SHA-256 first. One process at a time unpacks.
    """
    entry = _corpus_entry()
    archive_role = next(role for role in entry["files"] if role.endswith(".tar.gz"))
    directory = _directory(cache)
    os.makedirs(directory, exist_ok=True)
    with OutputLock(directory, os.path.join(directory, "unpack.lock"), wait=LOCK_WAIT_SECONDS):
        try:
            record = unpacked(directory)
            logger.info("%s is unpacked and complete in %s", NAME, directory)
        except InputError:  # not yet, or not completely
            if from_file:
                check_archive(from_file, entry, archive_role)
                archive = from_file
            else:
                archive = download(NAME, cache, progress, only=[archive_role])[archive_role]
            record = unpack(archive, directory, entry["counts"], progress)
    download(NAME, cache, progress, only=[role for role in entry["files"] if role != archive_role])  # the vocabulary
    return record


def check_archive(path, entry, role):
    """Raise unless ``path`` has the size and SHA-256 the catalogue gives for the archive ``role``."""
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise InputError(f"{path}: cannot read the archive ({err.strerror})") from None
    expected = entry.get("sizes", {}).get(role)
    if expected is not None and size != expected:
        raise InputError(f"{path}: {size:,} bytes; {role} has {expected:,}: a partial or another file (download it "
                         f"again, or run `bilm download {NAME}` without {flag('from_file', '--from-file')})")
    logger.info("checking the SHA-256 of %s", path)
    digest = _sha256(path)
    if digest != entry["sha256"][role]:
        raise InputError(f"{path}: SHA-256 {digest}, not {entry['sha256'][role]} of {role}: a damaged or another "
                         f"file (download it again, or run `bilm download {NAME}` without "
                         f"{flag('from_file', '--from-file')})")


class _Reading:
    """A binary file whose reads advance a progress bar (the archive is read once, as a stream)."""

    def __init__(self, fin, bar):
        self.fin, self.bar = fin, bar

    def read(self, size=-1):
        data = self.fin.read(size)
        self.bar.update(len(data))
        return data


def _laid_out(member):
    """(folder, file name) of an archive member to write, or None: regular files of the two folders with the
    benchmark's file names only (no other path can be written)."""
    parts = member.name[2:].split("/") if member.name.startswith("./") else member.name.split("/")
    if not member.isreg() or len(parts) != 3 or parts[0] != TOP or parts[1] not in FILE_NAMES:
        return None
    return (parts[1], parts[2]) if FILE_NAMES[parts[1]].fullmatch(parts[2]) else None


def _write_counted(source, path):
    """Copy the member ``source`` to ``path`` (complete or absent); return its {bytes, sentences, tokens}."""
    partial, written, sentences, tokens = path + ".partial", 0, 0, 0
    try:
        with open(partial, "wb") as fout:
            for line in source:
                fout.write(line)
                written += len(line)
                words = len(line.split())
                sentences += words > 0
                tokens += words
        os.replace(partial, path)
    except OSError as err:
        raise OutputError(f"{path}: cannot write ({err.strerror or err}); rerun to finish (the files written are "
                          f"kept)") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return {"bytes": written, "sentences": sentences, "tokens": tokens}


def _write_record(directory, record):
    with atomic_output(os.path.join(directory, RECORD), overwrite=True) as temporary:
        with open(temporary, "w", encoding="utf-8") as fout:
            json.dump(record, fout, indent=1)


def unpack(archive, directory, expected=None, progress=True):
    """Stream the benchmark's ``archive`` (.tar.gz) into ``directory``; check and record the counts; return them.

    Only the training and held-out files are written (see the module doc); a file an
    earlier, interrupted run wrote (on disk at its size, in the record) is not written
    again. ``expected``: {"training": {"files", "sentences"[, "tokens"]}, "heldout": ...},
    the counts to check (the catalogue's published ones); a different number of files or
    sentences is an error (the data stays unusable by name), different tokens a warning.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, RECORD)
    record = {"complete": False, "files": {}}
    if os.path.exists(path):
        try:
            record["files"] = _read_record(path).get("files", {})
        except InputError:  # unreadable: every file is written again
            pass
    _write_record(directory, record)  # no longer complete while it is rewritten
    seen, member = {}, None
    logger.info("unpacking %s into %s", archive, directory)
    try:
        with open(archive, "rb") as fin, tqdm(total=os.path.getsize(archive), unit="B", unit_scale=True,
                                              desc=f"unpacking {os.path.basename(archive)}",
                                              disable=None if progress else True) as bar:
            with tarfile.open(fileobj=_Reading(fin, bar), mode="r|gz") as tar:
                for member in tar:
                    where = _laid_out(member)
                    if where is None:
                        continue
                    relative, target = "/".join(where), os.path.join(directory, *where)
                    done = record["files"].get(relative)
                    if not (done and done["bytes"] == member.size and os.path.isfile(target)
                            and os.path.getsize(target) == member.size):
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        record["files"][relative] = _write_counted(tar.extractfile(member), target)
                        _write_record(directory, record)
                    seen[relative] = record["files"][relative]
    except (tarfile.TarError, EOFError, zlib.error) as err:
        at = f" at {member.name}" if member is not None else ""
        raise InputError(f"{archive}: not a complete .tar.gz archive ({err}{at}): a partial or damaged copy; download "
                         f"it again (the files unpacked so far are kept)") from None
    except OSError as err:
        if isinstance(err, OutputError):
            raise
        raise InputError(f"{archive}: cannot read the archive ({err.strerror or err})") from None
    _remove_others(directory, seen)
    record = {"complete": False, "archive": os.path.basename(archive), "files": seen, **_totals(seen)}
    _write_record(directory, record)
    _check_counts(archive, record, expected or {})
    record["complete"] = True
    _write_record(directory, record)
    logger.info("unpacked %s into %s: %d files", os.path.basename(archive), directory, len(seen))
    return record


def _remove_others(directory, seen):
    """Remove the laid-out files not in ``seen`` (another archive's, unpacked here before): not this data's."""
    for folder, names in FILE_NAMES.items():
        path = os.path.join(directory, folder)
        for name in os.listdir(path) if os.path.isdir(path) else []:
            if names.fullmatch(name) and f"{folder}/{name}" not in seen:
                os.remove(os.path.join(path, name))


def _totals(files):
    """{"training", "heldout", "test": {files, sentences, tokens}} of the files' counts."""
    totals = {part: {"files": 0, "sentences": 0, "tokens": 0} for part in ("training", "heldout", "test")}
    for relative, counts in files.items():
        folder, name = relative.split("/")
        for part in [PARTS[folder]] + (["test"] if name == TEST_FILE else []):
            totals[part]["files"] += 1
            totals[part]["sentences"] += counts["sentences"]
            totals[part]["tokens"] += counts["tokens"]
    return totals


def _check_counts(archive, record, expected):
    for part, folder in (("training", TRAINING_DIR), ("heldout", HELDOUT_DIR)):
        for key in ("files", "sentences", "tokens"):
            want, got = expected.get(part, {}).get(key), record[part][key]
            if want is None or got == want:
                continue
            what = f"{got:,} {key} in {folder}/ where the benchmark has {want:,}"
            if key == "tokens":  # what counts as whitespace may differ from the published count's
                logger.warning("%s: %s (counted as `wc -w` counts in the C locale; the files and sentences match)",
                               archive, what)
            else:
                raise InputError(f"{archive}: {what}: a partial, damaged or other archive; download it again")


def _read_record(path):
    try:
        with open(path, encoding="utf-8") as fin:
            record = json.load(fin)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: unreadable record of the unpacked benchmark ({err}); run `bilm download {NAME}` "
                         f"again") from None
    if not isinstance(record, dict):
        raise InputError(f"{path}: expected a JSON object; run `bilm download {NAME}` again")
    return record


def unpacked(directory=None):
    """The record of the benchmark unpacked in ``directory`` (default: the cache's); an ``InputError`` saying what
    is missing unless it is complete and every file is on disk at its recorded size."""
    directory = directory or _directory()
    path = os.path.join(directory, RECORD)
    rerun = f"run `bilm download {NAME}` (or `bilm download {NAME} --from-file ARCHIVE`)"
    if not os.path.exists(path):
        raise InputError(f"the 1 Billion Word Benchmark is not unpacked in {directory}; {rerun}")
    record = _read_record(path)
    if not record.get("complete"):
        raise InputError(f"the 1 Billion Word Benchmark is only partly unpacked in {directory}; {rerun}")
    for relative, counts in record["files"].items():
        target = os.path.join(directory, *relative.split("/"))
        if not os.path.isfile(target) or os.path.getsize(target) != counts["bytes"]:
            raise InputError(f"{target}: missing or not its recorded size ({counts['bytes']:,} bytes); {rerun}")
    return record


def summary(record, cache=None):
    """The lines ``bilm download lm1b`` prints: each name's counts and files, and the vocabulary."""
    lines = [f"{name}: {record[part]['files']} file(s), {record[part]['sentences']:,} sentences, "
             f"{record[part]['tokens']:,} tokens: {files(name, cache)}"
             for part, name in (("training", NAME), ("heldout", f"{NAME}-heldout"), ("test", f"{NAME}-test"))]
    return lines + [f"vocabulary ({NAME}): {files(NAME, cache, vocab=True)}"]


def files(name, cache=None, vocab=False):
    """Where a name's files are laid out: a glob (``lm1b``, ``lm1b-heldout``, ``lm1b-test``), or with ``vocab`` the
    vocabulary's path (not checked: see ``resolve``)."""
    if vocab:
        return os.path.join(_directory(cache), VOCAB)
    folder, pattern = NAMES[name]
    return os.path.join(glob.escape(os.path.join(_directory(cache), folder)), pattern)


def resolve(value, vocab=False, cache=None):
    """The files a name stands for: ``lm1b``, ``lm1b-heldout``, ``lm1b-test`` -> a glob of the unpacked files
    (checked complete), or with ``vocab`` ``lm1b`` -> the vocabulary's path. Anything else, and a name that is a
    file here, is returned unchanged."""
    if value not in ({NAME} if vocab else NAMES) or glob.glob(value):
        return value
    if vocab:
        path = files(NAME, cache, vocab=True)
        if not os.path.isfile(path):
            raise InputError(f"{path}: the vocabulary of {NAME} is not downloaded; run `bilm download {NAME}`")
        return path
    unpacked(_directory(cache))
    return files(value, cache)


def epoch_tokens(train_prefix, cache=None):
    """The catalogue's tokens per epoch if ``train_prefix`` is the unpacked benchmark's training files, else None
    (the original's n_train_tokens for the benchmark: its training schedule, without reading the 4 GB)."""
    if train_prefix != files(NAME, cache):
        return None
    return _corpus_entry()["n_train_tokens"]
