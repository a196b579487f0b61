"""Weight files (HDF5): checking, reading and writing them, by the layout of ``bilm.core.layout``."""
import json

import h5py
import numpy as np

from . import layout
from ..errors import WeightFileError
from .options import N_CHARACTERS_INFERENCE, ModelOptions
from .files import atomic_output
from .text import check_text_file


def open_hdf5(path, what="weight file"):
    """Open an HDF5 file for reading, with a clear error if it is missing, a directory or not HDF5."""
    check_text_file(path, what, WeightFileError)
    try:
        return h5py.File(path, "r")
    except Exception as err:  # OSError for non-HDF5 files; corrupted ones raise others too
        raise WeightFileError(f"{path}: cannot read as HDF5 ({err}); expected a {what}") from None


def check_weight_file(weight_file, options, parameters=None):
    """Check that every dataset of ``parameters`` exists with its shape and can be read.

    Args:
        options: ``ModelOptions`` (or a dict of inference options).
        parameters: {name: ``layout.Parameter``}; default: every dataset of a weight
            file for ``options``.
    Raises:
        WeightFileError: naming the dataset, both shapes and the options keys that
            decide the expected one. Reading the last value of each dataset finds a
            truncated file before any loading.
    """
    options = ModelOptions.of(options)
    if parameters is None:
        parameters = layout.weight_file_parameters(options)
    with open_hdf5(weight_file) as fin:
        for name, param in parameters.items():
            shape = param.file_shape
            try:
                dataset = fin.get(name)
                if not isinstance(dataset, h5py.Dataset):
                    raise WeightFileError(f"{weight_file}: missing dataset '{name}' (expected shape {shape})")
                if tuple(dataset.shape) != shape:
                    raise WeightFileError(
                        f"{weight_file}: dataset '{name}' has shape {tuple(dataset.shape)}; the options need "
                        f"{shape} ({param.explain()} in {options.source})")
                if not np.issubdtype(dataset.dtype, np.floating):
                    raise WeightFileError(f"{weight_file}: dataset '{name}' has dtype {dataset.dtype}; "
                                          f"expected floating point")
                dataset[tuple(n - 1 for n in shape)]
            except WeightFileError:
                raise
            except Exception as err:  # h5py reports corruption as OSError, KeyError, RuntimeError, ...
                raise WeightFileError(f"{weight_file}: cannot read dataset '{name}' ({err}); "
                                      f"the file is corrupted or truncated") from None


def check_embedding_file(embedding_weight_file, projection_dim):
    """Check a ``dump_token_embeddings`` file; return its vocabulary size."""
    name = layout.TOKEN_EMBEDDING_NAME
    with open_hdf5(embedding_weight_file, "token embedding file") as fin:
        try:
            dataset = fin.get(name)
            if not isinstance(dataset, h5py.Dataset):
                raise WeightFileError(
                    f"{embedding_weight_file}: missing dataset '{name}' (n_vocab, {projection_dim})")
            shape = tuple(dataset.shape)
            if len(shape) != 2 or shape[1] != projection_dim or shape[0] < 1:
                raise WeightFileError(f"{embedding_weight_file}: dataset '{name}' has shape {shape}; "
                                      f"expected (n_vocab, {projection_dim}) (lstm.projection_dim = {projection_dim})")
            dataset[shape[0] - 1, shape[1] - 1]
        except WeightFileError:
            raise
        except Exception as err:  # corruption, as in check_weight_file
            raise WeightFileError(f"{embedding_weight_file}: cannot read dataset '{name}' ({err}); "
                                  f"the file is corrupted or truncated") from None
        return shape[0]


def read_dataset(path, name, pad_row=False):
    """float32 array of one dataset; with ``pad_row`` a zero row is prepended (for id 0)."""
    try:
        with open_hdf5(path) as fin:
            values = np.asarray(fin[name][...], dtype=np.float32)
    except WeightFileError:
        raise
    except Exception as err:  # missing, or corrupted (h5py raises OSError, KeyError, RuntimeError, ...)
        raise WeightFileError(f"{path}: cannot read dataset '{name}' ({err})") from None
    if pad_row:
        values = np.concatenate([np.zeros((1,) + values.shape[1:], np.float32), values])
    return values


def write_weight_file(path, values, overwrite=False):
    """Write {dataset name: array} as a float32 weight file, atomically."""
    with atomic_output(path, overwrite) as temporary, h5py.File(temporary, "w") as fout:
        for name, value in values.items():
            fout.create_dataset(name, data=np.asarray(value, np.float32))


# The layout as {dataset name: shape}, as earlier releases gave it.
def expected_weight_shapes(options, n_directions=2):
    """{dataset name: shape} of the weight file of a model with these options (dict or ``ModelOptions``)."""
    if not isinstance(options, ModelOptions):  # training or inference options: the file is the same
        raw = json.loads(json.dumps(options))
        if "char_cnn" in raw:
            raw["char_cnn"]["n_characters"] = N_CHARACTERS_INFERENCE
        options = ModelOptions(raw)
    return {name: param.file_shape for name, param in layout.model_parameters(options, n_directions).items()}
