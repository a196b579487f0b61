"""Import paths, the package's layout, and TensorFlow behaviour: bilm changes no global setting."""
import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import make_options, write_model

ROOT = Path(__file__).resolve().parents[1]


def _python(code):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    return result


def test_original_import_paths():
    import bilm
    from bilm import (Batcher, BidirectionalLanguageModel, TokenBatcher, dump_bilm_embeddings,  # noqa: F401
                      dump_token_embeddings, weight_layers)
    from bilm.data import UnicodeCharsVocabulary, Vocabulary  # noqa: F401
    from bilm.elmo import weight_layers as wl
    from bilm.model import BidirectionalLanguageModel as M, dump_bilm_embeddings as d
    assert wl is bilm.weight_layers and M is bilm.BidirectionalLanguageModel and d is bilm.dump_bilm_embeddings


def test_bilms_own_documented_import_paths():
    import bilm
    from bilm.data import BidirectionalLMDataset, LMDataset  # noqa: F401
    from bilm.download import download, model_files  # noqa: F401
    from bilm.errors import BilmError  # noqa: F401
    from bilm.export import export_saved_model  # noqa: F401
    from bilm.keras import ELMo  # noqa: F401
    from bilm.models import default_model_files  # noqa: F401
    from bilm.pooling import masked_max, masked_mean, sentence_vectors  # noqa: F401
    from bilm.precompute import ElmoEmbedder, merge_shards
    from bilm.training import dump_weights, load_options_latest_checkpoint, load_vocab, test, train  # noqa: F401
    assert ElmoEmbedder is bilm.ElmoEmbedder and merge_shards is bilm.merge_shards


def _modules():
    """{dotted name: path} of every module of the package."""
    modules = {}
    for path in sorted((ROOT / "bilm").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(name, path, modules):
    """The modules of bilm that module ``name`` imports, anywhere in it (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                assert base in modules, f"{path}: line {node.lineno} imports from {base}, which is not a module"
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names)
    return {module for module in found if module in modules and module != name}


def test_the_layout_has_no_circle_and_nothing_imports_the_command_line():
    modules = _modules()
    assert {"bilm.core", "bilm.training", "bilm.embedding", "bilm.cli"} <= set(modules)
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert not [name for name, imported in graph.items() if "bilm.cli" in imported]
    wing = {name: name.split(".")[1] if name.count(".") else "" for name in modules}
    for name, imported in graph.items():  # the core takes nothing from the wings; the wings nothing from each other
        if wing[name] in ("core", "training", "embedding"):
            assert all(wing[m] in ("core", wing[name]) or m in ("bilm.errors", "bilm.models") for m in imported), \
                (name, sorted(imported))
    # A package's __init__ that re-exports its modules is not a circle with them: leave those edges out.
    edges = {name: {m for m in imported if not (modules[m].name == "__init__.py" and name.startswith(m + "."))}
             for name, imported in graph.items()}
    state = {}

    def visit(name, trail):
        state[name] = "open"
        for other in edges[name]:
            assert state.get(other) != "open", " -> ".join(trail + [name, other])
            if other not in state:
                visit(other, trail + [name])
        state[name] = "done"

    for name in modules:
        if name not in state:
            visit(name, [])


def test_every_module_imports_alone():
    names = sorted(_modules())
    result = _python(f"""
        import importlib, sys
        import tensorflow  # once, for speed; every bilm module is forgotten before the next is imported
        for name in {names!r}:
            for loaded in [m for m in sys.modules if m == "bilm" or m.startswith("bilm.")]:
                del sys.modules[loaded]
            importlib.import_module(name)
        print("ok")
    """)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


@pytest.fixture(scope="module")
def imported():
    """What importing bilm does to a fresh process (one process for both tests below): TensorFlow's global
    settings before and after ``import bilm``, then the modules loaded once its TF1, training and Keras faces
    are imported."""
    result = _python("""
        import json, sys
        import tensorflow as tf
        def settings():
            return (tf.executing_eagerly(), tf.compat.v1.resource_variables_enabled(),
                    tf.config.threading.get_intra_op_parallelism_threads())
        before = settings()
        import bilm, bilm.model, bilm.elmo, bilm.data
        after = settings()
        import bilm.training, bilm.keras
        print(json.dumps({"before": before, "after": after, "modules": sorted(sys.modules)}))
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_import_changes_no_global_tensorflow_setting(imported):
    assert imported["before"] == imported["after"] == [True, True, 0], imported


def test_the_library_uses_no_contrib_and_no_legacy_keras(imported):
    # TensorFlow through tensorflow.compat.v1 (and, in bilm/keras.py only, Keras 3 for TF2 users); tf_keras and
    # the 1.x RNN cells are used by benchmarks/original_shim.py alone, to run the original library itself.
    forbidden = re.compile(r"tf_keras|tf\.contrib|tensorflow\.contrib|TF_USE_LEGACY_KERAS|rnn_cell\.|tf\.keras|"
                           r"tensorflow\.keras|from tensorflow import keras")
    found = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "bilm").rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if forbidden.search(line)]
    assert not found, found
    assert {"bilm.training", "bilm.keras"} <= set(imported["modules"])
    assert not [m for m in imported["modules"] if m.startswith(("tf_keras", "tensorflow.contrib"))]


@pytest.mark.parametrize("setup, block", [
    ("", "with tf.Graph().as_default():"),
    ("tf.disable_v2_behavior()", "if True:"),
])
def test_graph_runs_under_tf2_defaults_and_after_disable_v2_behavior(tmp_path, setup, block):
    options_file, weight_file = write_model(tmp_path, make_options())
    result = _python(f"""
        import tensorflow.compat.v1 as tf
        {setup}
        from bilm import Batcher, BidirectionalLanguageModel, weight_layers
        {block}
            ids = tf.placeholder(tf.int32, (None, None, 50))
            ops = BidirectionalLanguageModel("{options_file}", "{weight_file}", state_mode="warm")(ids)
            elmo = weight_layers("x", ops)["weighted_op"]
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                out = sess.run(elmo, {{ids: Batcher(None, 50).batch_sentences([["Hi", "there"]])}})
                print(out.shape)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(1, 2, 16)" in result.stdout


def test_import_without_tensorflow_says_how_to_install():
    result = _python("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "tensorflow" or name.startswith("tensorflow."):
                    raise ImportError("No module named 'tensorflow'")
        sys.meta_path.insert(0, Block())
        import bilm
    """)
    assert result.returncode != 0
    assert "pip install '.[cpu]'" in result.stderr and "pip install '.[gpu]'" in result.stderr
