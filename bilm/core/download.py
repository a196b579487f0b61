"""The published pretrained ELMo models: a catalogue, downloads into a cache, lookup by name.

``download(name)`` fetches a model's files into ``cache_dir()/name/`` (``$BILM_CACHE``,
default ``~/.cache/bilm``), one process at a time per model (a second waits for the
first, then finds the files downloaded), resuming a partial download with an HTTP range
request. Each file is checked against the SHA-256 the catalogue gives for it, and
against the size the server announces; a file neither can check is refused. Its size
and SHA-256 are recorded in ``manifest.json``; later downloads verify the files against
that record. ``model_files(name)`` gives the paths of a downloaded model (``"default"``:
the model shipped with bilm). More models (your own, or mirrors) can be listed in a
JSON file named by ``$BILM_CATALOGUE``: ``{"name": {"description": ..., "files":
{"options": URL, "weights": URL, "vocab": URL (optional)}, "sha256": {"options": HEX,
"weights": HEX, ...}}}``, a SHA-256 for every file; names are plain file names. A corpus (``"kind": "corpus"``,
the 1 Billion Word Benchmark ``lm1b``) is downloaded and unpacked by ``bilm.training.lm1b.prepare``."""
import hashlib
import json
import logging
import os
import re
import urllib.error
import urllib.request

from tqdm import tqdm

from ..errors import BilmError, InputError
from ..models import default_model_files
from .files import OutputLock, atomic_output

logger = logging.getLogger(__name__)

ENV_CACHE, ENV_CATALOGUE = "BILM_CACHE", "BILM_CATALOGUE"
LOCK_WAIT_SECONDS = 3600  # how long a download waits for another download of the same model
_S3 = "https://s3-us-west-2.amazonaws.com/allennlp/models/elmo"


def _allennlp(directory, description, parameters):
    stem = f"{_S3}/{directory}/elmo_{directory}"
    return {"description": description, "parameters": parameters,
            "files": {"options": f"{stem}_options.json", "weights": f"{stem}_weights.hdf5"}}


# The English models published with ELMo (AllenNLP; Peters et al., 2018). No SHA-256 yet (none could be
# taken where this was written, without access to the files): checked against the sizes S3 announces.
CATALOGUE = {
    "small": _allennlp("2x1024_128_2048cnn_1xhighway", "LSTM 2x1024 projected to 128, output 256; "
                       "1B Word Benchmark", "13.6M"),
    "medium": _allennlp("2x2048_256_2048cnn_1xhighway", "LSTM 2x2048 projected to 256, output 512; "
                        "1B Word Benchmark", "28.0M"),
    "original": _allennlp("2x4096_512_2048cnn_2xhighway", "LSTM 2x4096 projected to 512, output 1024; "
                          "1B Word Benchmark (the paper's model)", "93.6M"),
    "original-5.5b": _allennlp("2x4096_512_2048cnn_2xhighway_5.5B", "as original, trained on 5.5B tokens "
                               "(Wikipedia and WMT 2008-2012 news)", "93.6M"),
}
_CHECKPOINT = f"{_S3}/2x4096_512_2048cnn_2xhighway_tf_checkpoint"
CATALOGUE["original-checkpoint"] = {
    "description": "the original model's TensorFlow training checkpoint (step 935,588) with its options and "
                   "793,471-token vocabulary: a save directory to fine-tune from (--from original-checkpoint)",
    "parameters": "93.6M", "kind": "checkpoint",
    "files": {"options": f"{_CHECKPOINT}/options.json", "vocab": f"{_S3}/vocab-2016-09-10.txt",
              **{f"model.ckpt-935588.{part}": f"{_CHECKPOINT}/model.ckpt-935588.{part}"
                 for part in ("index", "data-00000-of-00001")}},
}
# The paper's training data, the 1 Billion Word Benchmark (Chelba et al., 2013; laid out by ``bilm.training.lm1b``). The
# archive's size and SHA-256 are those TensorFlow Datasets records for it (tensorflow/datasets,
# tensorflow_datasets/datasets/lm1b/checksums.tsv, formerly tensorflow_datasets/url_checksums/lm1b.txt); its
# counts are the benchmark's published ones; n_train_tokens is the original's bin/train_elmo.py constant.
LM1B_ARCHIVE = "1-billion-word-language-modeling-benchmark-r13output.tar.gz"
CATALOGUE["lm1b"] = {
    "description": "the 1 Billion Word Benchmark, the paper's training and held-out text (1.8 GB archive, unpacked "
                   "into the cache), and the published model's vocabulary vocab-2016-09-10.txt",
    "kind": "corpus",
    "files": {LM1B_ARCHIVE: f"http://www.statmt.org/lm-benchmark/{LM1B_ARCHIVE}",
              "vocab-2016-09-10.txt": f"{_S3}/vocab-2016-09-10.txt"},
    "sha256": {LM1B_ARCHIVE: "01ba60381110baf7f189dfd2b8374de371e8c9a340835793f190bdae9e90a34e"},
    "sizes": {LM1B_ARCHIVE: 1792209805},
    "counts": {"training": {"files": 99, "sentences": 30301028, "tokens": 768646526},
               "heldout": {"files": 50, "sentences": 306688}},
    "n_train_tokens": 768648884,
}
FILE_NAMES = {"options": "options.json", "weights": "weights.hdf5", "vocab": "vocab.txt"}
MANIFEST = "manifest.json"


class DownloadError(BilmError, OSError):
    """A download failed or a downloaded file does not match its record."""


def cache_dir():
    return os.environ.get(ENV_CACHE) or os.path.join(os.path.expanduser("~"), ".cache", "bilm")


def catalogue():
    """The built-in catalogue plus the entries of the ``$BILM_CATALOGUE`` JSON file (checked)."""
    entries = dict(CATALOGUE)
    extra = os.environ.get(ENV_CATALOGUE)
    if extra:
        try:
            with open(extra, encoding="utf-8") as fin:
                more = json.load(fin)
        except (OSError, ValueError) as err:
            raise InputError(f"{extra} (${ENV_CATALOGUE}): cannot read a JSON catalogue ({err})") from None
        if not isinstance(more, dict):
            raise InputError(f"{extra} (${ENV_CATALOGUE}): expected a JSON object of models by name")
        for name, entry in more.items():
            _check_entry(extra, name, entry)
        entries.update(more)
    return entries


def _plain_name(name):
    """A name that is one file or directory of the cache: no path, nothing hidden behind it."""
    return isinstance(name, str) and name not in ("", ".", "..", MANIFEST) and not set("/\\\0") & set(name)


def _check_entry(source, name, entry):
    """Raise unless a catalogue file's entry names plain files, each with a URL and a SHA-256."""
    where = f"{source}: entry {name!r}"
    if not _plain_name(name):
        raise InputError(f"{where}: expected a plain name (no '/' or '..'): it names a directory of the cache")
    if name == "default":
        raise InputError(f"{where}: 'default' is the model shipped with bilm; choose another name")
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected an object with \"files\" and \"sha256\"")
    files = entry.get("files")
    if entry.get("kind") == "corpus":
        _check_corpus_entry(where, entry)
    elif entry.get("kind") == "checkpoint":
        if not (isinstance(files, dict) and "options" in files and any(role.endswith(".index") for role in files)):
            raise InputError(f"{where}: a checkpoint needs \"files\" with \"options\", an \"...index\" and its "
                             f"data files")
    elif not isinstance(files, dict) or not {"options", "weights"} <= set(files):
        raise InputError(f"{where}: needs \"files\" with \"options\" and \"weights\" URLs")
    digests = entry.get("sha256")
    for role in files:
        if not _plain_name(FILE_NAMES.get(role, role)):
            raise InputError(f"{where}: file {role!r} is not a plain file name (no '/' or '..')")
        digest = digests.get(role) if isinstance(digests, dict) else None
        if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise InputError(f"{where}: key \"sha256\" has no SHA-256 for {role!r}; expected "
                             f"\"sha256\": {{\"{role}\": \"<the 64 hex digits sha256sum prints>\"}}")


def _check_corpus_entry(where, entry):
    """Raise unless a corpus entry has one ``.tar.gz`` archive, its counts and tokens per epoch (``bilm.training.lm1b``)."""
    files, counts = entry.get("files"), entry.get("counts")
    if not (isinstance(files, dict) and sum(role.endswith(".tar.gz") for role in files) == 1):
        raise InputError(f"{where}: a corpus needs \"files\" with one \"....tar.gz\" archive")
    parts = [counts.get(part) if isinstance(counts, dict) else None for part in ("training", "heldout")]
    if not all(isinstance(part, dict) and all(isinstance(part.get(key), int) for key in ("files", "sentences"))
               for part in parts):
        raise InputError(f"{where}: a corpus needs \"counts\": {{\"training\": {{\"files\": N, \"sentences\": N}}, "
                         f"\"heldout\": {{...}}}}, the counts its archive must give")
    if not (isinstance(entry.get("n_train_tokens"), int) and entry["n_train_tokens"] > 0):
        raise InputError(f"{where}: a corpus needs \"n_train_tokens\", a positive integer (its tokens per epoch)")


def _entry(name):
    entries = catalogue()
    if name == "default":
        raise InputError("'default' ships with bilm: there is nothing to download")
    if name not in entries:
        raise InputError(f"unknown model {name!r}; expected one of: {', '.join(sorted(entries))}")
    return entries[name]


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fin:
        for block in iter(lambda: fin.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remote_size(url):
    """The size the server announces for ``url``, or None if it does not say (or refuses HEAD)."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            length = response.headers.get("Content-Length")
    except urllib.error.HTTPError:
        return None
    return int(length) if length is not None else None


def _fetch(url, path, progress, sha256=None):
    """Download ``url`` to ``path``, resuming ``path + '.partial'``; return (size, SHA-256).

    The file must match ``sha256`` (the catalogue's) when given, and the size the server
    announces when it announces one; with neither it is refused (nothing could tell a
    truncated file). A file that does not match is removed: a rerun downloads it again.
    """
    partial = path + ".partial"
    try:
        total = _remote_size(url)
        if total is None and sha256 is None:
            raise DownloadError(f"{url}: the server announces no size and the catalogue gives no SHA-256: a "
                                f"download could not be checked; add its \"sha256\" to the catalogue")
        have = os.path.getsize(partial) if os.path.exists(partial) else 0
        if total is None or have > total:
            have = 0
        if total is None or have < total:
            request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
            with urllib.request.urlopen(request, timeout=60) as response:
                if have and response.status != 206:  # the server ignored the range: start again
                    have = 0
                with open(partial, "ab" if have else "wb") as fout, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True, desc=os.path.basename(path),
                        disable=None if progress else True) as bar:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        fout.write(block)
                        bar.update(len(block))
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"{url}: download failed ({getattr(err, 'reason', err)}); rerun to resume") from None
    size = os.path.getsize(partial)
    if total is not None and size != total:
        raise DownloadError(f"{url}: received {size} bytes, the server announced {total}; rerun to resume")
    digest = _sha256(partial)
    if sha256 is not None and digest != sha256:
        os.remove(partial)
        raise DownloadError(f"{url}: received {size} bytes whose SHA-256 is {digest}, not the catalogue's "
                            f"{sha256} (damaged or cut short; removed); rerun to download it again")
    os.replace(partial, path)
    return size, digest


def _read_manifest(path):
    """{role: {url, size, sha256}} recorded by earlier downloads."""
    try:
        with open(path, encoding="utf-8") as fin:
            manifest = json.load(fin)
    except (OSError, ValueError) as err:
        raise DownloadError(f"{path}: unreadable download record ({err}); delete it and download again") from None
    if not isinstance(manifest, dict):
        raise DownloadError(f"{path}: expected a JSON object of downloaded files; delete it and download again")
    return manifest


def download(name, cache=None, progress=True, only=None):
    """Download model ``name`` (see ``catalogue()``) into the cache; return {role: path}.

    Files already downloaded are verified against the manifest (size and SHA-256, and the
    catalogue's SHA-256) and downloaded again if they do not match. One process at a
    time downloads a model: another waits for it (up to ``LOCK_WAIT_SECONDS``).
    ``only``: the roles to download (default: every file of the entry).
    """
    entry = _entry(name)
    directory = os.path.join(cache or cache_dir(), name)
    os.makedirs(directory, exist_ok=True)
    with OutputLock(directory, wait=LOCK_WAIT_SECONDS):
        manifest_path = os.path.join(directory, MANIFEST)
        manifest = _read_manifest(manifest_path) if os.path.exists(manifest_path) else {}
        paths = {}
        for role, url in entry["files"].items():
            if only is not None and role not in only:
                continue
            path = os.path.join(directory, FILE_NAMES.get(role, role))
            expected = entry.get("sha256", {}).get(role)
            record = manifest.get(role)
            if (os.path.exists(path) and record and record.get("url") == url
                    and expected in (None, record["sha256"])):
                if os.path.getsize(path) == record["size"] and _sha256(path) == record["sha256"]:
                    logger.info("%s: %s is downloaded and verified", name, role)
                    paths[role] = path
                    continue
                logger.warning("%s: %s does not match its recorded size and SHA-256; downloading it again", name,
                               path)
                os.remove(path)
            size, digest = _fetch(url, path, progress, expected)
            manifest[role] = {"url": url, "size": size, "sha256": digest}
            with atomic_output(manifest_path, overwrite=True) as temporary, open(temporary, "w") as fout:
                json.dump(manifest, fout, indent=1)
            paths[role] = path
        if entry.get("kind") == "checkpoint":
            _write_checkpoint_state(directory, paths)
    logger.info("model %s is in %s", name, directory)
    return paths


def _write_checkpoint_state(directory, paths):
    """TensorFlow's ``checkpoint`` file naming the downloaded checkpoint (relative: the cache may move)."""
    prefixes = sorted(os.path.basename(p)[:-len(".index")] for p in paths.values() if p.endswith(".index"))
    with atomic_output(os.path.join(directory, "checkpoint"), overwrite=True) as temporary:
        with open(temporary, "w", encoding="utf-8") as fout:
            fout.write("".join(f'all_model_checkpoint_paths: "{prefix}"\n' for prefix in prefixes))
            fout.write(f'model_checkpoint_path: "{prefixes[-1]}"\n')


def is_checkpoint(name):
    """True if ``name`` is a training checkpoint of the catalogue (a save directory, once downloaded)."""
    entry = catalogue().get(name)
    return isinstance(entry, dict) and entry.get("kind") == "checkpoint"


def checkpoint_dir(name, cache=None):
    """The save directory of a downloaded training checkpoint of the catalogue."""
    directory = os.path.join(cache or cache_dir(), name)
    manifest_path = os.path.join(directory, MANIFEST)
    if not os.path.exists(manifest_path):
        raise InputError(f"checkpoint {name!r} is not downloaded to {directory}; run `bilm download {name}`")
    for role, record in _read_manifest(manifest_path).items():
        path = os.path.join(directory, FILE_NAMES.get(role, role))
        if not os.path.exists(path) or os.path.getsize(path) != record["size"]:
            raise DownloadError(f"{path}: missing or not the recorded size; run `bilm download {name}` again")
    return directory


def model_files(name, cache=None):
    """(options_file, weight_file, vocab_file or None) of a downloaded model, or of ``"default"``."""
    if is_checkpoint(name):
        raise InputError(f"{name!r} is a training checkpoint, not a weight file: fine-tune from it "
                         f"(bilm finetune --from {name}), or export it (bilm dump-weights --save_dir {name})")
    if catalogue().get(name, {}).get("kind") == "corpus":
        raise InputError(f"{name!r} is a corpus, not a model: its names go to --train_prefix and --test_prefix "
                         f"(see `bilm download --help`)")
    if name == "default":
        files = default_model_files()
        if files is None:
            raise InputError("the default model is not installed with this copy of bilm")
        return files
    entries = catalogue()
    if name not in entries:
        models = ["default"] + sorted(n for n, entry in entries.items() if not entry.get("kind"))
        raise InputError(f"unknown model {name!r}; expected one of: {', '.join(models)}")
    directory = os.path.join(cache or cache_dir(), name)
    manifest_path = os.path.join(directory, MANIFEST)
    if not os.path.exists(manifest_path):
        raise InputError(f"model {name!r} is not downloaded to {directory}; run `bilm download {name}`")
    manifest = _read_manifest(manifest_path)
    paths = {}
    for role in ("options", "weights", "vocab"):
        if role not in manifest:
            continue
        path = os.path.join(directory, FILE_NAMES[role])
        if not os.path.exists(path) or os.path.getsize(path) != manifest[role]["size"]:
            raise DownloadError(f"{path}: missing or not the recorded size; run `bilm download {name}` again")
        paths[role] = path
    if "options" not in paths or "weights" not in paths:
        raise InputError(f"model {name!r} is only partly downloaded to {directory}; run `bilm download {name}`")
    return paths["options"], paths["weights"], paths.get("vocab")
