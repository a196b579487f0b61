"""Training: the original's training cases, towers, restart, mixed precision, and the checkpoint -> weight file
round trip."""
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm import BidirectionalLanguageModel, Batcher
from bilm.data import BidirectionalLMDataset, LMDataset
from bilm.errors import InputError, OptionsError
from bilm.training.evaluation import evaluate_checkpoint
from bilm.training.graph import feed, session_config
from bilm.training import (LanguageModel, build_training_graph, dump_weights, load_options_latest_checkpoint,
                           load_vocab, train)
from bilm.training import test as perplexity_of  # not collected as a test
from bilm.core.weights import expected_weight_shapes
from conftest import TINY_CORPUS

DATA = str(TINY_CORPUS)
VOCAB = str(TINY_CORPUS.with_name("tiny_vocab.txt"))
CHAR_CNN = {"activation": "relu", "embedding": {"dim": 4}, "filters": [[1, 8], [2, 8], [3, 16], [4, 32]],
            "max_characters_per_token": 50, "n_characters": 261, "n_highway": 1}


def make_options(char=True, bidirectional=True, skip=False, share=False, n_batches=300, batch_size=2,
                 unroll_steps=5, dim=32, projection_dim=16, **extra):
    options = {
        "bidirectional": bidirectional, "dropout": 0.1, "all_clip_norm_val": 10.0,
        "lstm": {"dim": dim, "projection_dim": projection_dim, "n_layers": 2, "cell_clip": 5, "proj_clip": 5,
                 "use_skip_connections": skip},
        "n_epochs": 1, "n_train_tokens": n_batches * batch_size * unroll_steps, "batch_size": batch_size,
        "unroll_steps": unroll_steps, "n_tokens_vocab": load_vocab(VOCAB).size, "n_negative_samples_batch": 8,
        "learning_rate": 0.2,
    }
    if char:
        options["char_cnn"] = json.loads(json.dumps(CHAR_CNN))
    if share:
        options["share_embedding_softmax"] = True
    options.update(extra)
    return options


def dataset(options, test_mode=False):
    vocab = load_vocab(VOCAB, 50 if "char_cnn" in options else None)
    cls = BidirectionalLMDataset if options["bidirectional"] else LMDataset
    return cls(DATA, vocab, test=test_mode)


def train_and_test(options, tmp_path, **kwargs):
    save_dir = str(tmp_path / "checkpoints")
    train(options, dataset(options), 1, save_dir, str(tmp_path / "logs"), seed=0, **kwargs)
    saved_options, ckpt_file = load_options_latest_checkpoint(save_dir)
    assert saved_options == options
    return perplexity_of(saved_options, ckpt_file, dataset(saved_options, test_mode=True), batch_size=1), save_dir


@pytest.mark.parametrize("case, options", [
    ("forward-only token model", dict(char=False, bidirectional=False)),
    ("bidirectional character model", dict(char=True, n_batches=600)),
    ("shared softmax and token embedding", dict(char=False, share=True)),
    ("skip connections", dict(char=True, skip=True, n_batches=600)),
])
def test_original_training_cases_learn_the_data(tmp_path, case, options):
    perplexity, _ = train_and_test(make_options(**options), tmp_path)
    print(f"{case}: perplexity {perplexity:.2f} (vocabulary of {load_vocab(VOCAB).size})")
    assert perplexity < 20


def test_shared_softmax_with_characters_raises():
    with tf.Graph().as_default(), pytest.raises(OptionsError, match="share_embedding_softmax"):
        LanguageModel(make_options(char=True, share=True), is_training=True)


def _variable_names(options, n_towers):
    with tf.Graph().as_default():
        build_training_graph(options, n_towers)
        return sorted(v.op.name for v in tf.global_variables())


def test_towers_share_variables():
    options = make_options()
    assert _variable_names(options, 2) == _variable_names(options, 1)


def _one_update(options, n_towers, batch, initial):
    """Variables after one training step from ``initial`` values."""
    with tf.Graph().as_default():
        graph = build_training_graph(options, n_towers)
        variables = tf.trainable_variables()
        with tf.Session(config=session_config(n_towers)) as sess:
            sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
            if initial is None:
                return {v.op.name: value for v, value in zip(variables, sess.run(variables))}
            for v in variables:
                v.load(initial[v.op.name], sess)
            sess.run(graph["train_op"], feed(graph["models"], batch))
            devices = {op.device for op in tf.get_default_graph().get_operations() if "tower_1" in op.name}
            return {v.op.name: value for v, value in zip(variables, sess.run(variables))}, devices


def test_two_towers_on_half_batches_equal_one_tower_on_the_whole_batch():
    # deterministic loss: full softmax, no dropout
    options = make_options(dropout=0.0, sample_softmax=False, batch_size=4)
    batch = next(dataset(options).iter_batches(4, options["unroll_steps"]))
    initial = _one_update(options, 1, None, None)
    one, _ = _one_update(options, 1, batch, initial)
    half = dict(options, batch_size=2)
    two, devices = _one_update(half, 2, batch, initial)
    assert any("cpu:1" in d.lower() for d in devices), devices  # the second tower ran on a second device
    changed = 0
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-5, atol=1e-6, err_msg=name)
        changed += not np.array_equal(one[name], initial[name])  # some updates are ~1e-6 (W_carry)
    assert changed == len(one)


def test_restart_continues_global_step_and_total(tmp_path):
    options = make_options(n_batches=60, sample_softmax=False, dropout=0.0)  # a loss without sampling noise
    first, save_dir = train_and_test(options, tmp_path, checkpoint_every=1000)
    _, ckpt = load_options_latest_checkpoint(save_dir)
    assert ckpt.endswith("model.ckpt-60")

    # The same total again: nothing left to do, the step stays.
    train(options, dataset(options), 1, save_dir, save_dir, restart_ckpt_file=ckpt, seed=0)
    assert load_options_latest_checkpoint(save_dir)[1].endswith("model.ckpt-60")

    more = dict(options, n_epochs=4)  # 240 batches in all: 180 more
    train(more, dataset(more), 1, save_dir, save_dir, restart_ckpt_file=ckpt, checkpoint_every=1000, seed=0)
    saved_options, ckpt = load_options_latest_checkpoint(save_dir)
    assert ckpt.endswith("model.ckpt-240")
    second = perplexity_of(saved_options, ckpt, dataset(saved_options, test_mode=True), batch_size=1)
    assert second < first


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(options, save directory) of a character model with skip connections trained 40 batches (read only)."""
    options = make_options(n_batches=40, skip=True)
    _, save_dir = train_and_test(options, tmp_path_factory.mktemp("trained"))
    return options, save_dir


def test_checkpoint_round_trip_through_weight_file(tmp_path, trained):
    """dump_weights -> BidirectionalLanguageModel reproduces the training graph's LSTM outputs."""
    options, save_dir = trained
    weight_file, options_file = str(tmp_path / "weights.hdf5"), str(tmp_path / "options.json")
    dump_weights(save_dir, weight_file, options_outfile=options_file)

    with h5py.File(weight_file, "r") as fin:
        found = {}
        fin.visititems(lambda n, o: found.update({n: o.shape}) if isinstance(o, h5py.Dataset) else None)
    assert found == expected_weight_shapes(options)  # no softmax, char_embed with 261 rows
    assert json.load(open(options_file))["char_cnn"]["n_characters"] == 262

    sentence = "the children walk to the old mill .".split()
    vocab = load_vocab(VOCAB, 50)
    n = len(sentence)
    # Training graph: the whole sentence with <S> and </S> as one window, zero initial state.
    _, ckpt = load_options_latest_checkpoint(save_dir)
    window = dict(options, batch_size=1, unroll_steps=n + 2)
    with tf.Graph().as_default():
        with tf.variable_scope("lm"):
            model = LanguageModel(window, is_training=False)
        with tf.Session() as sess:
            sess.run(tf.local_variables_initializer())
            tf.train.Saver(tf.global_variables()).restore(sess, ckpt)
            forward, backward = sess.run(model.lstm_outputs, {
                model.tokens_characters: vocab.encode_chars(sentence, split=False)[None],
                model.tokens_characters_reverse: vocab.encode_chars(sentence[::-1], reverse=True,
                                                                    split=False)[None],
                model.next_token_id: np.zeros((1, n + 2), np.int32),
                model.next_token_id_reverse: np.zeros((1, n + 2), np.int32),
            })
    # Inference graph from the dumped files.
    with tf.Graph().as_default():
        ids = tf.placeholder(tf.int32, (None, None, 50))
        ops = BidirectionalLanguageModel(options_file, weight_file)(ids)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            lm_embeddings = sess.run(ops["lm_embeddings"], {ids: Batcher(VOCAB, 50).batch_sentences([sentence])})
    p = options["lstm"]["projection_dim"]
    for layer in range(2):
        np.testing.assert_allclose(lm_embeddings[0, layer + 1, :, :p], forward[layer][0, 1:n + 1], atol=1e-5)
        np.testing.assert_allclose(lm_embeddings[0, layer + 1, :, p:], backward[layer][0, n:0:-1], atol=1e-5)


def test_dump_weights_without_lstm_projection(tmp_path):
    """dim == projection_dim: no W_P_0 is written, and the file loads."""
    options = make_options(n_batches=5, dim=16, projection_dim=16)
    save_dir = str(tmp_path / "checkpoints")
    train(options, dataset(options), 1, save_dir, save_dir)
    weight_file, options_file = str(tmp_path / "w.hdf5"), str(tmp_path / "o.json")
    dump_weights(save_dir, weight_file, options_outfile=options_file)
    with h5py.File(weight_file, "r") as fin:
        names = []
        fin.visit(names.append)
    assert not [n for n in names if n.endswith("W_P_0")]
    with tf.Graph().as_default():
        ops = BidirectionalLanguageModel(options_file, weight_file)(tf.placeholder(tf.int32, (None, None, 50)))
        assert ops["lm_embeddings"].shape[-1] == 32


# --- held-out perplexity: every target once, whatever the batch size --------------------------------

def _oracle_losses(lm, softmax, sentences, word_ids, direction, start=None):
    """Negative log-probabilities of every target of ``sentences`` in one direction, by the NumPy oracle
    (independent of bilm): each sentence read as a training stream reads it (inputs ``<S> w_1 .. w_n``,
    targets ``w_1 .. w_n </S>``; reversed backwards), from copies of ``start`` states, or carried along
    from the oracle's current states when ``start`` is None."""
    from numpy_bilm import DIRECTIONS, char_ids_for_sentences

    w, b = softmax
    losses = []
    for sentence in sentences:
        if start is not None:
            lm.states[DIRECTIONS[direction]] = [[v.copy() for v in layer] for layer in start]
        chars = char_ids_for_sentences([sentence])[0]  # <S> w_1 .. w_n </S>, +1 shifted
        ids = [word_ids["<S>"]] + [word_ids.get(word, word_ids["<UNK>"]) for word in sentence] + [word_ids["</S>"]]
        inputs, targets = (chars[:-1], ids[1:]) if direction == 0 else (chars[1:][::-1], ids[:-1][::-1])
        top = lm.run_lstm(lm.token_embeddings(inputs[None]), np.array([len(inputs)]), DIRECTIONS[direction])[-1][0]
        logits = top.astype(np.float64) @ w.T + b  # (n + 1, V)
        top_logit = logits.max(axis=1, keepdims=True)
        log_z = top_logit[:, 0] + np.log(np.exp(logits - top_logit).sum(axis=1))
        losses += list(log_z - logits[np.arange(len(targets)), targets])
    return losses


def _oracle(save_dir, tmp_path):
    """(NumPy biLM of the checkpoint, its softmax (W, b), {word: id}) read from the files, not through bilm's graph."""
    from numpy_bilm import NumpyBiLM, load_weight_file

    dump_weights(save_dir, str(tmp_path / "oracle.hdf5"))
    _, ckpt = load_options_latest_checkpoint(save_dir)
    reader = tf.train.load_checkpoint(ckpt)
    softmax = (reader.get_tensor("lm/softmax/W").astype(np.float64), reader.get_tensor("lm/softmax/b"))
    options = json.loads((Path(save_dir) / "options.json").read_text())
    word_ids = {word: k for k, word in enumerate(open(VOCAB, encoding="utf-8").read().split())}
    return NumpyBiLM(options, load_weight_file(tmp_path / "oracle.hdf5"), max_batch_size=1), softmax, word_ids


def test_perplexity_scores_every_target_once_whatever_the_batch_size(tmp_path, trained):
    from bilm.core.states import WARMUP_TEXT
    from numpy_bilm import DIRECTIONS

    _, save_dir = trained
    rng = np.random.default_rng(3)  # 23 sentences of the corpus's words, and words the vocabulary lacks
    words = TINY_CORPUS.read_text(encoding="utf-8").split() + ["zeppelin", "Überlingen"]
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("".join(" ".join(rng.choice(words, rng.integers(1, 15))) + "\n" for _ in range(23)),
                       encoding="utf-8")
    text = heldout.read_text(encoding="utf-8")
    sentences = [line.split() for line in text.splitlines()]
    targets = len(text.split()) + len(text.splitlines())  # each token, and each sentence's end

    lm, softmax, word_ids = _oracle(save_dir, tmp_path)
    warmup = [line.split() for line in WARMUP_TEXT.read_text(encoding="utf-8").splitlines() if line.split()]
    expected = []
    for direction in range(2):  # each sentence starts from the states after the warm-up text, read as a stream
        lm.reset_states()
        _oracle_losses(lm, softmax, warmup, word_ids, direction)
        warm = [[v.copy() for v in layer] for layer in lm.states[DIRECTIONS[direction]]]
        losses = _oracle_losses(lm, softmax, sentences, word_ids, direction, start=warm)
        assert len(losses) == targets
        expected.append(np.exp(np.mean(losses)))

    results = {}
    for batch_size in (1, 7, 64, 100):  # 64 and 100: more streams than sentences
        results[batch_size] = evaluate_checkpoint(save_dir, str(heldout), VOCAB, batch_size)
        result = results[batch_size]
        assert result.tokens == result.tokens_in_text == targets
        assert result.forward == pytest.approx(expected[0], rel=1e-5)
        assert result.backward == pytest.approx(expected[1], rel=1e-5)
        assert result == pytest.approx((expected[0] + expected[1]) / 2, rel=1e-5)
        assert result == pytest.approx(results[1], rel=1e-5)  # the batch size changes only the speed

    # The original's figure: states carried from sentence to sentence from zero, exp of the mean over batches
    # of both directions' mean loss; with one stream, every target is a batch.
    carried = []
    for direction in range(2):
        lm.reset_states()
        carried.append(_oracle_losses(lm, softmax, sentences, word_ids, direction))
    original = evaluate_checkpoint(save_dir, str(heldout), VOCAB, 1, original_figure=True)
    assert original.tokens == targets and original.original_figure
    assert original == pytest.approx(np.exp(np.mean(np.add(*carried) / 2)), rel=1e-5)
    assert original.forward == pytest.approx(np.exp(np.mean(carried[0])), rel=1e-5)
    # With 7 streams the original stops when the first runs out: fewer targets, in whole batches.
    seven = evaluate_checkpoint(save_dir, str(heldout), VOCAB, 7, original_figure=True)
    assert seven.tokens < targets and seven.tokens % 7 == 0 and seven.tokens_in_text == targets
    with pytest.raises(InputError, match=r"the original's figure scores no target: .*batch_size \(--batch_size\) = 64"):
        evaluate_checkpoint(save_dir, str(heldout), VOCAB, 64, original_figure=True)


def _reduced_products(graph):
    return [op for op in graph.get_operations()
            if op.type in ("MatMul", "BatchMatMulV2", "Conv2D") and op.get_attr("T") != tf.float32]


@pytest.mark.parametrize("reduced", ["bfloat16", "float16"])
def test_mixed_precision_step_is_close_to_float32_with_float32_weights(reduced):
    # Dropout and sampled softmax on: a seeded graph draws the same masks and samples in every precision.
    options = make_options(batch_size=4)
    batch = next(dataset(options).iter_batches(4, options["unroll_steps"]))
    updates = {}
    for precision in ("float32", reduced):
        with tf.Graph().as_default() as graph:
            tf.set_random_seed(0)
            ops = build_training_graph(options, 1, precision=precision)
            variables = {v.op.name: v for v in tf.global_variables()}
            assert all(v.dtype.base_dtype == tf.float32 for v in variables.values() if v.dtype.is_floating)
            assert not any(v.op.name.startswith("loss_scale") for v in variables.values())  # not in checkpoints
            # the products of the char CNN and the LSTMs run in the reduced type; the softmax does not
            reduced_ops = _reduced_products(graph)
            assert bool(reduced_ops) == (precision != "float32")
            assert not any("softmax" in op.name for op in reduced_ops)
            with tf.Session(config=session_config(1)) as sess:
                sess.run([tf.global_variables_initializer(), tf.local_variables_initializer()])
                if precision == "float32":
                    initial = {name: v.eval() for name, v in variables.items()}
                else:
                    for name, v in variables.items():
                        v.load(initial[name], sess)
                loss, _ = sess.run([ops["train_loss"], ops["train_op"]], feed(ops["models"], batch))
                updates[precision] = loss, {name: v.eval() - initial[name] for name, v in variables.items()
                                            if name.startswith("lm/")}
    (loss32, delta32), (loss_reduced, delta_reduced) = updates["float32"], updates[reduced]
    assert sorted(delta32) == sorted(delta_reduced)
    assert abs(loss_reduced - loss32) < 0.01 * loss32
    for name in delta32:  # every weight moves as in float32 (Adagrad's first step: about +-learning rate)
        a, b = delta32[name].ravel(), delta_reduced[name].ravel()
        assert np.abs(a - b).mean() < 0.1 * np.abs(a).mean() + 1e-7, name


def test_float16_overflow_skips_batches_and_lowers_the_loss_scale(tmp_path, monkeypatch, caplog):
    from bilm.training import graph as training_graph
    monkeypatch.setattr(training_graph.LossScale, "START", 2.0 ** 40)  # float16 gradients overflow at first
    monkeypatch.setattr(training_graph.LossScale, "GROWTH_STEPS", 10 ** 6)
    monkeypatch.setattr("bilm.core.precision._cpu_flags", lambda: {"avx512_fp16"})
    options = make_options(n_batches=40)
    save_dir = str(tmp_path / "run")
    with caplog.at_level("INFO", logger="bilm"):
        train(options, dataset(options), 1, save_dir, save_dir, seed=0, precision="float16")
    _, ckpt = load_options_latest_checkpoint(save_dir)
    assert ckpt.endswith("model.ckpt-40")  # 40 batches applied, the overflowing ones not counted
    reader = tf.train.load_checkpoint(ckpt)
    assert reader.get_tensor("tokens_trained") == 40 * options["batch_size"] * options["unroll_steps"]
    assert "loss_scale" not in reader.get_variable_to_shape_map()
    skipped = [r.getMessage() for r in caplog.records if "float16 gradients overflowed" in r.getMessage()]
    assert len(skipped) == 1, caplog.text
    n_skipped = int(re.search(r"(\d+) more batch(es)? skipped", skipped[0]).group(1))
    # Scaled by 2^40, gradients above 6e-8 overflow float16 (65504): many halvings before the first good batch.
    assert 10 <= n_skipped < 40


def test_a_reduced_type_the_machine_has_no_fast_path_for_trains_in_float32(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("bilm.core.precision._cpu_flags", lambda: {"avx2", "fma"})
    built = []
    from bilm.training import loop
    real_build = loop.build_training_graph
    monkeypatch.setattr(loop, "build_training_graph",
                        lambda *args: built.append(args[-1]) or real_build(*args))
    options = make_options(n_batches=2)
    with caplog.at_level("WARNING", logger="bilm"):
        train(options, dataset(options), 1, str(tmp_path / "run"), str(tmp_path / "run"), precision="bfloat16")
    assert built == ["float32"]
    assert re.search(r"precision\b.* bfloat16: this CPU computes bfloat16 no faster than float32", caplog.text)
    assert "training in float32" in caplog.text
    with pytest.raises(InputError, match="precision.*'tf32'"):
        train(options, dataset(options), 1, str(tmp_path / "other"), str(tmp_path / "other"), precision="tf32")


def test_train_restart_and_finetune_take_precision_bfloat16_on_the_command_line(tmp_path, monkeypatch):
    # The example: `bilm train|restart|finetune --precision bfloat16`, on a machine with a fast bfloat16.
    from bilm.cli import main
    from bilm.training import loop
    monkeypatch.setattr("bilm.core.precision._cpu_flags", lambda: {"avx512_bf16"})
    built = []
    real_build = loop.build_training_graph
    monkeypatch.setattr(loop, "build_training_graph", lambda *args: built.append(args[-1]) or real_build(*args))
    data = ["--train_prefix", DATA, "--vocab_file", VOCAB]
    tiny = ["--lstm_dim", "16", "--projection_dim", "8", "--filters", "[[1, 8]]", "--batch_size", "2",
            "--unroll_steps", "5", "--n_negative_samples", "4"]
    run = str(tmp_path / "run")
    assert main(["--quiet", "train", *data, "--save_dir", run, *tiny, "--n_train_tokens", "40", "--n_epochs", "1",
                 "--precision", "bfloat16"]) == 0
    assert main(["--quiet", "restart", *data, "--save_dir", run, "--n_epochs", "2", "--precision", "bfloat16"]) == 0
    assert main(["--quiet", "finetune", "--from", run, "--save_dir", str(tmp_path / "tuned"), *data,
                 "--heldout_prefix", DATA, "--n_train_tokens", "40", "--eval_every", "2",
                 "--precision", "bfloat16"]) == 0
    assert built == ["bfloat16"] * 3
    _, ckpt = load_options_latest_checkpoint(run)
    assert ckpt.endswith("model.ckpt-8")  # 4 batches of 10 tokens, twice
    dtypes = tf.train.load_checkpoint(ckpt).get_variable_to_dtype_map()
    assert {dtype for name, dtype in dtypes.items() if name.startswith("lm/")} == {tf.float32}  # checkpoints: float32
