"""Models that ship with bilm (see README: "The default model")."""
from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"


def default_model_files():
    """(options_file, weight_file, vocab_file) of the shipped default model, or None if absent."""
    files = tuple(DEFAULT_MODEL_DIR / name for name in ("options.json", "lm_weights.hdf5", "vocab.txt"))
    return tuple(str(f) for f in files) if all(f.is_file() for f in files) else None
