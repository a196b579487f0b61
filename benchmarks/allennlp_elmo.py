"""AllenNLP's PyTorch ELMo, imported from a source checkout, run the way its file command ran it.

Used only by ``benchmarks/vs_original.py``, inside a child process that runs AllenNLP and
nothing else. No code of AllenNLP is copied here; it is imported at run time from a
checkout of https://github.com/allenai/allennlp::

    import allennlp_elmo
    elmo, nn_util = allennlp_elmo.import_elmo("/path/to/allennlp")
    allennlp_elmo.embed_file(elmo, nn_util, options_file, weight_file, "sentences.txt", "out.hdf5")

**Import.** AllenNLP's package ``__init__`` files import the whole library (``allennlp``
imports spaCy and transformers, ``allennlp.data`` torchvision, ``allennlp.common`` its
Hugging Face upload code, written for ``huggingface_hub`` < 1.0), none of which the ELMo
computation uses. :func:`import_elmo` puts a *lazy* stand-in for every package of the
checkout in ``sys.modules``: the package's own modules import as usual, and a name the
package's ``__init__`` would import (``from allennlp.common import FromParams``) is
imported from the module the ``__init__`` names, when first asked for. So only the
modules ``allennlp.modules.elmo`` and ``allennlp.nn.util`` need are loaded (the ELMo
modules, ``allennlp.common``'s and ``allennlp.data``'s pieces for ``batch_to_ids``);
their own top-level imports still need PyTorch, h5py, spaCy, transformers,
cached-path, lmdb, dill and base58 installed.

**Embedding.** :func:`embed_file` does what AllenNLP's ``allennlp elmo --all`` did
(``ElmoEmbedder.embed_file``, removed from AllenNLP in 1.0 with the command; its pieces
remain): ``_ElmoBiLm`` (stateful, its LSTM states carried from batch to batch), batches
of 64 sentences in file order, ``batch_to_ids``, ``remove_sentence_boundaries``, one
HDF5 dataset per sentence keyed by its line number, shape (3, n_tokens, 2 *
projection_dim), float32, and the ``sentence_to_index`` JSON dataset.
"""
import ast
import importlib
import json
import os
import sys
import types

BATCH_SIZE = 64  # ElmoEmbedder's default


class _LazyPackage(types.ModuleType):
    """A package whose ``__init__`` is not run: each name it imports is imported when first asked for."""

    def __init__(self, name, directory):
        super().__init__(name)
        self.__path__ = [directory]
        self.__file__ = os.path.join(directory, "__init__.py")
        self._sources = {}  # name -> (module, attribute), from the __init__'s `from allennlp.x import y [as z]`
        with open(self.__file__, encoding="utf-8") as fin:
            tree = ast.parse(fin.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "allennlp":
                for alias in node.names:
                    self._sources[alias.asname or alias.name] = (node.module, alias.name)

    def __getattr__(self, name):
        if name not in self._sources:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        module, attribute = self._sources[name]
        value = getattr(importlib.import_module(module), attribute)
        setattr(self, name, value)
        return value


def install_lazy_packages(root, top="allennlp"):
    """Put a :class:`_LazyPackage` in ``sys.modules`` for ``root`` (the package ``top``) and every package under it."""
    if top in sys.modules:
        raise RuntimeError(f"{top} is already imported in this process; the lazy packages need a fresh process")
    root = os.path.abspath(root)
    for directory, _, files in os.walk(root):
        if "__init__.py" in files:
            relative = os.path.relpath(directory, root)
            name = top if relative == "." else f"{top}.{relative.replace(os.sep, '.')}"
            sys.modules[name] = _LazyPackage(name, directory)


def import_elmo(checkout):
    """AllenNLP's ``allennlp.modules.elmo`` and ``allennlp.nn.util`` from the checkout ``checkout``."""
    package = os.path.join(os.path.abspath(checkout), "allennlp")
    if not os.path.isfile(os.path.join(package, "modules", "elmo.py")):
        raise FileNotFoundError(f"{checkout}: no allennlp/modules/elmo.py; expected a checkout of allenai/allennlp")
    install_lazy_packages(package)
    elmo = importlib.import_module("allennlp.modules.elmo")
    nn_util = importlib.import_module("allennlp.nn.util")
    if not os.path.abspath(elmo.__file__).startswith(package + os.sep):
        raise RuntimeError(f"imported AllenNLP's ELMo from {elmo.__file__}, not from {package}")
    return elmo, nn_util


def embed_file(elmo, nn_util, options_file, weight_file, input_file, output_file, batch_size=BATCH_SIZE):
    """Every layer of every line of ``input_file`` (whitespace-tokenized sentences) into ``output_file``.

    Returns the number of tokens embedded.
    """
    import h5py
    import torch

    bilm = elmo._ElmoBiLm(options_file, weight_file)
    with open(input_file, encoding="utf-8") as fin:
        lines = [line.strip() for line in fin]
    sentences = [line.split() for line in lines]
    with h5py.File(output_file, "w") as fout:
        for first in range(0, len(sentences), batch_size):
            batch = sentences[first:first + batch_size]
            output = bilm(elmo.batch_to_ids(batch))
            layers = [nn_util.remove_sentence_boundaries(layer, output["mask"])[0] for layer in output["activations"]]
            activations = torch.stack(layers, dim=1)  # (batch, 3, max_len, 2P)
            for i, sentence in enumerate(batch):
                fout.create_dataset(str(first + i), dtype="float32",
                                    data=activations[i, :, :len(sentence)].detach().numpy())
        fout.create_dataset("sentence_to_index", data=[json.dumps({line: str(i) for i, line in enumerate(lines)})])
    return sum(len(sentence) for sentence in sentences)
