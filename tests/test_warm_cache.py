"""The warm states kept on disk (bilm.core.warm_cache): the same bits, and never another model's."""
import logging
import os
import threading
import time

import h5py
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from bilm import BidirectionalLanguageModel
from bilm.core import warm_cache
from bilm.precompute import ElmoEmbedder
from conftest import make_options, random_sentences, write_model
from test_state_modes import warm_states_by_oracle


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BILM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(warm_cache.ENV_DISABLE, raising=False)
    return tmp_path / "cache" / warm_cache.SUBDIR


@pytest.fixture
def model(tmp_path):
    options = make_options(skip=True)
    options_file, weight_file = write_model(tmp_path / "model", options, seed=3)
    return options, options_file, weight_file


def warm_states(options_file, weight_file, precision="float32"):
    """The warm states after initialisation, and whether the graph computed them (a warm-up loop)."""
    with tf.Graph().as_default() as graph:
        ids = tf.placeholder(tf.int32, (None, None, 50))
        model = BidirectionalLanguageModel(options_file, weight_file, state_mode="warm", precision=precision)
        model(ids)
        computed = any(op.type in ("While", "StatelessWhile") and op.name.startswith("bilm/warm_states")
                       for op in graph.get_operations())
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            return sess.run(model.state_variables(ids)), computed


def flat(states):
    return [value for direction in states for layer in direction for value in layer]


def test_kept_states_are_the_computed_ones_bit_for_bit_and_skip_the_warm_up(model, cache):
    options, options_file, weight_file = model
    computed, ran_warm_up = warm_states(options_file, weight_file)
    assert ran_warm_up and len(list(cache.glob("*.npz"))) == 1
    kept, ran_warm_up = warm_states(options_file, weight_file)
    assert not ran_warm_up
    for a, b in zip(flat(computed), flat(kept)):
        assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)
    expected = warm_states_by_oracle(options, weight_file)  # and they are the warm-up text's states
    for got, want in zip(flat(kept), [v[None] for v in flat(expected)]):
        np.testing.assert_allclose(got, want, atol=2e-5)
    sentences = random_sentences(np.random.default_rng(2), 7)
    vectors = []
    for _ in range(2):  # a job: the same vectors, to the bit, from the kept states
        with ElmoEmbedder(options_file, weight_file, batch_size=3) as embedder:
            vectors.append(embedder.embed_sentences(sentences))
    assert all(np.array_equal(a, b) for a, b in zip(*vectors))


def test_a_changed_weight_file_with_the_same_size_and_time_is_not_taken_for_the_kept_one(model, cache):
    options, options_file, weight_file = model
    before, _ = warm_states(options_file, weight_file)
    status = os.stat(weight_file)
    with h5py.File(weight_file, "r+") as fout:
        kernel = fout["RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/W_0"]
        kernel[0, 0] = kernel[0, 0] + 0.5
    os.utime(weight_file, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert os.stat(weight_file).st_size == status.st_size
    after, ran_warm_up = warm_states(options_file, weight_file)
    assert ran_warm_up and len(list(cache.glob("*.npz"))) == 2
    assert not np.array_equal(flat(before)[0], flat(after)[0])
    expected = warm_states_by_oracle(options, weight_file)
    for got, want in zip(flat(after), [v[None] for v in flat(expected)]):
        np.testing.assert_allclose(got, want, atol=2e-5)


def test_a_damaged_kept_file_is_said_ignored_and_replaced(model, cache, caplog):
    _, options_file, weight_file = model
    computed, _ = warm_states(options_file, weight_file)
    (path,) = cache.glob("*.npz")
    path.write_bytes(path.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="bilm.core.warm_cache"):
        again, ran_warm_up = warm_states(options_file, weight_file)
    assert ran_warm_up and any(str(path) in r.getMessage() and "computing them again" in r.getMessage()
                               for r in caplog.records)
    assert all(np.array_equal(a, b) for a, b in zip(flat(computed), flat(again)))
    kept, ran_warm_up = warm_states(options_file, weight_file)  # replaced by a whole one
    assert not ran_warm_up and all(np.array_equal(a, b) for a, b in zip(flat(computed), flat(kept)))


def test_states_of_another_key_are_not_taken(model, cache):
    _, options_file, weight_file = model
    computed, _ = warm_states(options_file, weight_file)
    (path,) = cache.glob("*.npz")
    with np.load(path) as saved:
        arrays = dict(saved)
    arrays["key"] = np.array(str(arrays["key"]).replace('"version": 1', '"version": 0'))
    arrays["0_0_c"] = arrays["0_0_c"] + 1.0  # as another model's would be
    np.savez(path, **arrays)
    again, ran_warm_up = warm_states(options_file, weight_file)
    assert ran_warm_up and all(np.array_equal(a, b) for a, b in zip(flat(computed), flat(again)))


def test_nothing_is_kept_when_asked_or_when_the_cache_cannot_be_written(model, cache, monkeypatch, tmp_path):
    _, options_file, weight_file = model
    monkeypatch.setenv(warm_cache.ENV_DISABLE, "1")
    computed, ran_warm_up = warm_states(options_file, weight_file)
    assert ran_warm_up and not cache.exists()
    monkeypatch.delenv(warm_cache.ENV_DISABLE)
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("")
    monkeypatch.setenv("BILM_CACHE", str(blocker))
    again, ran_warm_up = warm_states(options_file, weight_file)  # computed; the write fails quietly
    assert ran_warm_up and all(np.array_equal(a, b) for a, b in zip(flat(computed), flat(again)))


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_a_reduced_precision_keeps_its_matrices_reduced_and_computes_the_warm_states_in_float32(
        model, cache, precision, tmp_path, monkeypatch):
    _, options_file, weight_file = model
    with tf.Graph().as_default():
        weights = BidirectionalLanguageModel(options_file, weight_file, precision=precision).weight_variables()
        assert {(w.shape.rank, w.dtype.base_dtype.name) for w in weights} == {(1, "float32"), (2, precision),
                                                                              (4, precision)}  # (4: the CNN's)
    computed_reduced, ran_warm_up = warm_states(options_file, weight_file, precision)
    assert ran_warm_up
    monkeypatch.setenv("BILM_CACHE", str(tmp_path / "another cache"))
    computed_exact, _ = warm_states(options_file, weight_file)
    for a, b in zip(flat(computed_reduced), flat(computed_exact)):
        assert np.array_equal(a, b)  # the same bits as float32's (the reduced type's would differ)


def test_states_maybe_computed_in_tf32_are_not_kept(model, cache, monkeypatch):
    _, options_file, weight_file = model
    machine = warm_cache._machine()
    monkeypatch.setattr(warm_cache, "_machine", lambda: dict(machine, gpus=["NVIDIA A100-SXM4-40GB"]))
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    try:
        tf.config.experimental.enable_tensor_float_32_execution(True)
        warm_states(options_file, weight_file)
        assert not cache.exists()
        tf.config.experimental.enable_tensor_float_32_execution(False)  # as bilm's float32 jobs run
        warm_states(options_file, weight_file)
        assert len(list(cache.glob("*.npz"))) == 1
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(tf32)


def test_a_hash_that_does_not_end_is_waited_for_a_bounded_time_then_the_job_goes_on(model, cache, monkeypatch, caplog):
    _, options_file, weight_file = model
    never = threading.Event()
    monkeypatch.setattr(warm_cache, "file_digest", lambda path: never.wait(30))  # a hung file system
    monkeypatch.setattr(warm_cache, "KEY_WAIT", 0.5)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="bilm.core.warm_cache"):
        states, ran_warm_up = warm_states(options_file, weight_file)
    never.set()
    assert ran_warm_up and not cache.exists() and time.monotonic() - start < 20
    assert sum("took over" in r.getMessage() for r in caplog.records) == 1  # waited once, not per use
