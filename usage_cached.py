"""Precompute every biLM layer for a dataset to HDF5; downstream code needs no TensorFlow.

    python usage_cached.py [--model NAME | --options OPTIONS --weights WEIGHTS --vocab VOCAB]
                           [--workdir DIR] [--verbose]
"""
import argparse
import os
import tempfile

import h5py

from bilm.cli import add_model_arguments, resolve_model_arguments
from bilm.core.startup import start_tensorflow

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
add_model_arguments(parser)
parser.add_argument("--workdir", help="where to write the dataset and its embeddings (default: a temporary directory, removed at the end)")
parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's start-up lines")
args = resolve_model_arguments(parser, parser.parse_args(), check_files=True)  # a bad file: one line, no traceback
start_tensorflow(args.verbose)  # imports TensorFlow, its start-up lines hidden

from bilm import dump_bilm_embeddings  # noqa: E402

temporary = None if args.workdir else tempfile.TemporaryDirectory(prefix="bilm_usage_cached_")  # removed at the end
workdir = args.workdir or temporary.name
os.makedirs(workdir, exist_ok=True)

raw_context = [
    "Pretrained biLMs compute representations useful for NLP tasks .",
    "They give state of the art performance for many tasks .",
]
tokenized_question = ["What are biLMs useful for ?".split()]

# One tokenized sentence per line.
dataset_file = os.path.join(workdir, "dataset_file.txt")
with open(dataset_file, "w", encoding="utf-8") as fout:
    for sentence in raw_context + [" ".join(tokens) for tokens in tokenized_question]:
        fout.write(sentence + "\n")

embedding_file = os.path.join(workdir, "elmo_embeddings.hdf5")
dump_bilm_embeddings(args.vocab, dataset_file, args.options, args.weights, embedding_file, overwrite=True)

# Read back with h5py only: dataset str(i) holds line i, (n_layers + 1, n_tokens, 2 x projection_dim).
with h5py.File(embedding_file, "r") as fin:
    for key in sorted(fin, key=int):
        print(f"sentence {key}: layers, tokens, dims = {fin[key].shape}")
if temporary is not None:
    temporary.cleanup()  # pass --workdir to keep the files
