"""Models and data that ship with bilm (see README: "The default model").

- ``default/``: the default model (options.json, lm_weights.hdf5, vocab.txt);
- ``warmup.txt``: the warm-up text of the ``warm`` state mode;
- ``sample/``: a small sample of the default model's public-domain corpus (2,000
  training and 200 held-out sentences, tokenized), to try training on.
"""
import shutil
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = MODELS_DIR / "default"
SAMPLE_DIR = MODELS_DIR / "sample"
SAMPLE_FILES = ("corpus.txt", "heldout.txt")


def default_model_files():
    """(options_file, weight_file, vocab_file) of the shipped default model, or None if absent."""
    files = tuple(DEFAULT_MODEL_DIR / name for name in ("options.json", "lm_weights.hdf5", "vocab.txt"))
    return tuple(str(f) for f in files) if all(f.is_file() for f in files) else None


def write_sample_corpus(directory, overwrite=False):
    """Copy the sample corpus (corpus.txt, heldout.txt) into ``directory``; return the paths written."""
    from ..core.files import atomic_output

    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SAMPLE_FILES:
        with atomic_output(str(target / name), overwrite) as temporary:
            shutil.copyfile(SAMPLE_DIR / name, temporary)
        written.append(str(target / name))
    return written
