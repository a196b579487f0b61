"""Shared test fixtures: the original's reference files, seeded random models, sessions."""
import hashlib
import json
import os
import atexit
import shutil
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("BILM_NO_PRECISION_HINT", "1")  # no bfloat16 timing in every `bilm embed` (test_precision_hint)
os.environ["BILM_CACHE"] = tempfile.mkdtemp(prefix="bilm-test-cache-")  # warm states kept by the tests' own runs only
atexit.register(shutil.rmtree, os.environ["BILM_CACHE"], ignore_errors=True)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for numpy_bilm

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "bilm-tf"
REFERENCE_MODEL = REFERENCE / "model"
REFERENCE_TRAIN = REFERENCE / "train"
TINY_CORPUS = Path(__file__).resolve().parent / "data" / "tiny_corpus.txt"  # written for these tests
TINY_VOCAB = TINY_CORPUS.with_name("tiny_vocab.txt")
# The tiny character model the training tests train with `bilm train`: 2 x 5 tokens a batch, 8 batches an epoch.
SMALL = ["--lstm_dim", "16", "--projection_dim", "8", "--filters", "[[1, 8], [2, 8]]", "--n_highway", "1",
         "--char_embedding_dim", "4", "--batch_size", "2", "--unroll_steps", "5", "--n_negative_samples", "4",
         "--seed", "0"]

needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"the original's reference files are not at {REFERENCE} (../shared is absent)"
)


# The test files that take longest (about a minute or more each on 2 cores), longest first; the others follow
# in their usual order. With one process per core, each taking a whole file (pytest.ini_options' addopts), the
# suite ends when the last file started ends: started first, the long ones do not end it alone.
LONGEST_FIRST = ["test_recovery.py", "test_readme.py", "test_embed_jobs.py", "test_cluster.py", "test_ray.py",
                 "test_finetune.py", "test_cli.py", "test_long_runs.py", "test_scale.py", "test_training.py"]


def pytest_collection_modifyitems(items):
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order stays


def reference_sentences():
    """The 10 batches of 3 tokenized sentences the reference outputs were made from."""
    with open(REFERENCE_MODEL / "lm_embeddings_sentences.json") as fin:
        lists = json.load(fin)
    return [[lists[k][i].split() for k in range(3)] for i in range(10)]


def reference_top_layer(k, i):
    """The original's top layer for sentence k of batch i: (n_tokens, 2P) = [forward, backward]."""
    with h5py.File(REFERENCE_MODEL / f"lm_embeddings_{k}.hdf5", "r") as fin:
        both = fin[str(i)][...]
    return np.concatenate([both[0], both[1]], axis=-1)


def make_options(filters=((1, 4), (2, 8), (3, 16)), n_highway=1, activation="relu", dim=24, projection_dim=8,
                 n_layers=2, cell_clip=3.0, proj_clip=3.0, skip=False, char_dim=4, max_chars=50):
    """Options of a tiny character model (inference form: n_characters 262)."""
    lstm = {"dim": dim, "projection_dim": projection_dim, "n_layers": n_layers, "use_skip_connections": skip}
    if cell_clip is not None:
        lstm["cell_clip"] = cell_clip
    if proj_clip is not None:
        lstm["proj_clip"] = proj_clip
    return {
        "lstm": lstm,
        "char_cnn": {
            "embedding": {"dim": char_dim}, "filters": [list(f) for f in filters], "n_highway": n_highway,
            "activation": activation, "n_characters": 262, "max_characters_per_token": max_chars,
        },
    }


def random_weight_file(path, options, seed, scale=1.0):
    """Write seeded random weights for ``options`` in the original's layout (written by hand here)."""
    rng = np.random.default_rng(seed)
    cnn, lstm = options["char_cnn"], options["lstm"]
    char_dim, proj, dim = cnn["embedding"]["dim"], lstm["projection_dim"], lstm["dim"]
    n_filters = sum(n for _, n in cnn["filters"])

    def normal(*shape, fan_in):
        return (rng.standard_normal(shape) * scale / np.sqrt(fan_in)).astype(np.float32)

    data = {"char_embed": rng.uniform(-1, 1, (261, char_dim)).astype(np.float32)}
    for i, (width, num) in enumerate(cnn["filters"]):
        data[f"CNN/W_cnn_{i}"] = normal(1, width, char_dim, num, fan_in=width * char_dim)
        data[f"CNN/b_cnn_{i}"] = normal(num, fan_in=4)
    for k in range(cnn["n_highway"]):
        for gate in ("carry", "transform"):
            data[f"CNN_high_{k}/W_{gate}"] = normal(n_filters, n_filters, fan_in=n_filters)
            data[f"CNN_high_{k}/b_{gate}"] = normal(n_filters, fan_in=4)
    if n_filters != proj:
        data["CNN_proj/W_proj"] = normal(n_filters, proj, fan_in=n_filters)
        data["CNN_proj/b_proj"] = normal(proj, fan_in=4)
    for d in range(2):
        for layer in range(lstm["n_layers"]):
            root = f"RNN_{d}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"
            data[f"{root}/W_0"] = normal(2 * proj, 4 * dim, fan_in=proj)
            data[f"{root}/B"] = normal(4 * dim, fan_in=4)
            if proj < dim:
                data[f"{root}/W_P_0"] = normal(dim, proj, fan_in=dim / 2)
    with h5py.File(path, "w") as fout:
        for name, value in data.items():
            fout.create_dataset(name, data=value)
    return data


def write_model(directory, options, seed=0, scale=1.0):
    """options.json + weights.hdf5 in ``directory``; returns (options_file, weight_file)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    options_file, weight_file = directory / "options.json", directory / "weights.hdf5"
    options_file.write_text(json.dumps(options))
    random_weight_file(weight_file, options, seed, scale)
    return str(options_file), str(weight_file)


WORDS = ["the", "a", "cat", "sat", "on", "mat", "é", "naïve", "日本語", "x" * 70, ".", ",", "Zürich", "!"]


def random_sentences(rng, n, max_len=9, min_len=1):
    """n random sentences of WORDS (incl. multi-byte and over-long tokens)."""
    return [list(rng.choice(WORDS, size=rng.integers(min_len, max_len + 1))) for _ in range(n)]


def write_vocab(path, corpus=TINY_CORPUS, min_count=1):
    """A training vocabulary of ``corpus`` written independently of bilm: <S>, </S>, <UNK>, then by count."""
    from collections import Counter

    counts = Counter(Path(corpus).read_text(encoding="utf-8").split())
    tokens = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    Path(path).write_text("\n".join(["<S>", "</S>", "<UNK>"] + tokens) + "\n", encoding="utf-8")
    return str(path)


def same_hdf5(got_file, want_file):
    """Two embedding files hold the same keys and arrays (to 1e-6) and the same sentence index."""
    with h5py.File(got_file, "r") as got, h5py.File(want_file, "r") as want:
        assert sorted(got) == sorted(want)
        for key in want:
            if key == "sentence_to_index":
                assert json.loads(got[key][0]) == json.loads(want[key][0])
            else:
                np.testing.assert_allclose(got[key][...], want[key][...], atol=1e-6, err_msg=key)


def tree_digest(directory):
    """A digest of every file's name and bytes under ``directory``."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """The save directory of one `bilm train` of the SMALL model on the tiny corpus: 1 epoch (8 batches),
    a checkpoint every 3 batches, the default 2 kept (model.ckpt-6 and model.ckpt-8). Made once per session
    and read-only: a test that changes or continues it works on a copy (``copy_run``). The session checks at
    its end that no test wrote to it."""
    from bilm.cli import main

    save = tmp_path_factory.mktemp("small_run") / "ckpt"
    assert main(["--quiet", "train", "--train_prefix", str(TINY_CORPUS), "--vocab_file", str(TINY_VOCAB),
                 "--save_dir", str(save), *SMALL, "--n_epochs", "1", "--checkpoint_every", "3"]) == 0
    digest = tree_digest(save)
    yield save
    assert tree_digest(save) == digest, f"a test wrote to the shared run {save}: copy it with copy_run"


def copy_run(save_dir, destination):
    """A copy of a save directory at ``destination``, to change or continue. Its ``checkpoint`` file names the
    copies, by names relative to the directory (TensorFlow's file named the originals by absolute path)."""
    shutil.copytree(save_dir, destination)
    state = Path(destination) / "checkpoint"
    state.write_text(state.read_text().replace(f'"{save_dir}/', '"'))
    return Path(destination)
