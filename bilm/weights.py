"""Weight files (HDF5): their layout, checking them, and loading them into variables.

Dataset names are those of the original library (see DESIGN.md); the network's
variables carry the same names under a scope (``bilm/`` at inference, ``lm/`` in
training), so no renaming table is needed.
"""
import os

import h5py
import numpy as np

from . import options as opts
from .errors import WeightFileError

TOKEN_EMBEDDING = "embedding"


def lstm_weight_names(direction, layer):
    """(kernel, bias, projection) dataset names of one LSTM layer; direction 0 forward, 1 backward."""
    root = f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"
    return f"{root}/W_0", f"{root}/B", f"{root}/W_P_0"


def expected_weight_shapes(options, n_directions=2):
    """{dataset name: shape} of the weight file of a model with these options.

    ``char_embed`` has 261 rows (no padding row); token-input models have no
    embedding datasets here (they live in the file of ``dump_token_embeddings``).
    """
    shapes = {}
    proj = opts.projection_dim(options)
    if opts.uses_char_cnn(options):
        cnn = options["char_cnn"]
        char_dim = cnn["embedding"]["dim"]
        shapes["char_embed"] = (opts.N_CHARACTERS_TRAINING, char_dim)
        for i, (width, num) in enumerate(cnn["filters"]):
            shapes[f"CNN/W_cnn_{i}"] = (1, width, char_dim, num)
            shapes[f"CNN/b_cnn_{i}"] = (num,)
        n_filters = opts.n_cnn_filters(options)
        for k in range(cnn.get("n_highway") or 0):
            for gate in ("carry", "transform"):
                shapes[f"CNN_high_{k}/W_{gate}"] = (n_filters, n_filters)
                shapes[f"CNN_high_{k}/b_{gate}"] = (n_filters,)
        if n_filters != proj:
            shapes["CNN_proj/W_proj"] = (n_filters, proj)
            shapes["CNN_proj/b_proj"] = (proj,)
    dim = options["lstm"]["dim"]
    for direction in range(n_directions):
        for layer in range(opts.n_lstm_layers(options)):
            kernel, bias, projection = lstm_weight_names(direction, layer)
            shapes[kernel] = (proj + proj, 4 * dim)
            shapes[bias] = (4 * dim,)
            if proj < dim:
                shapes[projection] = (dim, proj)
    return shapes


def open_hdf5(path, what="weight file"):
    """Open an HDF5 file for reading, with a clear error if it is missing or not HDF5."""
    if not os.path.isfile(path):
        raise WeightFileError(f"{path}: {what} not found")
    try:
        return h5py.File(path, "r")
    except Exception as err:  # OSError for non-HDF5 files; corrupted ones raise others too
        raise WeightFileError(f"{path}: cannot read as HDF5 ({err}); expected a {what}") from None


def check_weight_file(weight_file, options, lstm_only=False):
    """Check that every dataset the options need exists with the right shape and can be read.

    With ``lstm_only`` (token-input models) the character-CNN datasets are not needed.
    Reading the last value of each dataset finds a truncated file before any loading.
    """
    expected = expected_weight_shapes(options)
    if lstm_only:
        expected = {name: shape for name, shape in expected.items() if name.startswith("RNN_")}
    with open_hdf5(weight_file) as fin:
        for name, shape in expected.items():
            try:
                dataset = fin.get(name)
                if not isinstance(dataset, h5py.Dataset):
                    raise WeightFileError(f"{weight_file}: missing dataset '{name}' (expected shape {shape})")
                if tuple(dataset.shape) != shape:
                    raise WeightFileError(
                        f"{weight_file}: dataset '{name}' has shape {tuple(dataset.shape)}; the options need {shape}"
                    )
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
    with open_hdf5(embedding_weight_file, "token embedding file") as fin:
        try:
            dataset = fin.get(TOKEN_EMBEDDING)
            if not isinstance(dataset, h5py.Dataset):
                raise WeightFileError(
                    f"{embedding_weight_file}: missing dataset 'embedding' (n_vocab, {projection_dim})")
            shape = tuple(dataset.shape)
            if len(shape) != 2 or shape[1] != projection_dim or shape[0] < 1:
                raise WeightFileError(f"{embedding_weight_file}: dataset 'embedding' has shape {shape}; "
                                      f"expected (n_vocab, {projection_dim})")
            dataset[shape[0] - 1, shape[1] - 1]
        except WeightFileError:
            raise
        except Exception as err:  # corruption, as in check_weight_file
            raise WeightFileError(f"{embedding_weight_file}: cannot read dataset 'embedding' ({err}); "
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
