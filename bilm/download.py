"""The published pretrained ELMo models: a catalogue, downloads into a cache, lookup by name.

``download(name)`` fetches a model's files into ``cache_dir()/name/`` (``$BILM_CACHE``,
default ``~/.cache/bilm``), resuming a partial download with an HTTP range request,
checking each file's size against the server's and recording its size and SHA-256 in
``manifest.json``; later downloads verify the files against that record.
``model_files(name)`` gives the paths of a downloaded model (``"default"``: the model
shipped with bilm). More models (your own, or mirrors) can be listed in a JSON file
named by ``$BILM_CATALOGUE``: ``{"name": {"description": ..., "files": {"options": URL,
"weights": URL, "vocab": URL (optional)}}}``.
"""
import hashlib
import json
import logging
import os
import urllib.error
import urllib.request

from tqdm import tqdm

from .errors import BilmError, InputError
from .models import default_model_files
from .outputs import atomic_output

logger = logging.getLogger(__name__)

ENV_CACHE, ENV_CATALOGUE = "BILM_CACHE", "BILM_CATALOGUE"
_S3 = "https://s3-us-west-2.amazonaws.com/allennlp/models/elmo"


def _allennlp(directory, description, parameters):
    stem = f"{_S3}/{directory}/elmo_{directory}"
    return {"description": description, "parameters": parameters,
            "files": {"options": f"{stem}_options.json", "weights": f"{stem}_weights.hdf5"}}


# The English models published with ELMo (AllenNLP; Peters et al., 2018).
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
FILE_NAMES = {"options": "options.json", "weights": "weights.hdf5", "vocab": "vocab.txt"}
MANIFEST = "manifest.json"


class DownloadError(BilmError, OSError):
    """A download failed or a downloaded file does not match its record."""


def cache_dir():
    return os.environ.get(ENV_CACHE) or os.path.join(os.path.expanduser("~"), ".cache", "bilm")


def catalogue():
    """The built-in catalogue plus the entries of the ``$BILM_CATALOGUE`` JSON file."""
    entries = dict(CATALOGUE)
    extra = os.environ.get(ENV_CATALOGUE)
    if extra:
        try:
            with open(extra, encoding="utf-8") as fin:
                more = json.load(fin)
        except (OSError, ValueError) as err:
            raise InputError(f"{extra} (${ENV_CATALOGUE}): cannot read a JSON catalogue ({err})") from None
        for name, entry in more.items() if isinstance(more, dict) else []:
            files = entry.get("files") if isinstance(entry, dict) else None
            checkpoint = isinstance(entry, dict) and entry.get("kind") == "checkpoint"
            if checkpoint and not (isinstance(files, dict) and "options" in files and
                                   any(role.endswith(".index") for role in files)):
                raise InputError(f"{extra}: checkpoint entry '{name}' needs \"files\" with \"options\", an "
                                 f"\"...index\" and its data files")
            if not checkpoint and (not isinstance(files, dict) or not {"options", "weights"} <= set(files)):
                raise InputError(f"{extra}: entry '{name}' needs \"files\" with \"options\" and \"weights\" URLs")
        entries.update(more)
    return entries


def _entry(name):
    entries = catalogue()
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


def _fetch(url, path, progress):
    """Download ``url`` to ``path``, resuming ``path + '.partial'``; return the size."""
    partial = path + ".partial"
    try:
        total = _remote_size(url)
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
    os.replace(partial, path)
    return size


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


def download(name, cache=None, progress=True):
    """Download model ``name`` (see ``catalogue()``) into the cache; return {role: path}.

    Files already downloaded are verified against the manifest (size and SHA-256) and
    downloaded again if they do not match.
    """
    entry = _entry(name)
    directory = os.path.join(cache or cache_dir(), name)
    os.makedirs(directory, exist_ok=True)
    manifest_path = os.path.join(directory, MANIFEST)
    manifest = _read_manifest(manifest_path) if os.path.exists(manifest_path) else {}
    paths = {}
    for role, url in entry["files"].items():
        path = os.path.join(directory, FILE_NAMES.get(role, role))
        record = manifest.get(role)
        if os.path.exists(path) and record and record.get("url") == url:
            if os.path.getsize(path) == record["size"] and _sha256(path) == record["sha256"]:
                logger.info("%s: %s is downloaded and verified", name, role)
                paths[role] = path
                continue
            logger.warning("%s: %s does not match its recorded size and SHA-256; downloading it again", name, path)
            os.remove(path)
        size = _fetch(url, path, progress)
        manifest[role] = {"url": url, "size": size, "sha256": _sha256(path)}
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
    if name == "default":
        files = default_model_files()
        if files is None:
            raise InputError("the default model is not installed with this copy of bilm")
        return files
    _entry(name)
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
