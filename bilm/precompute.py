"""Precompute biLM outputs to HDF5: token embeddings of a vocabulary, all layers of a dataset."""
import logging

import h5py
import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

from . import options as opts
from .batching import Batcher
from .model import BidirectionalLanguageModel
from .vocabulary import UnicodeCharsVocabulary

logger = logging.getLogger(__name__)

TOKEN_CHUNK = 512


def _session():
    return tf.Session(config=tf.ConfigProto(allow_soft_placement=True))


def dump_token_embeddings(vocab_file, options_file, weight_file, outfile):
    """Write the context-independent token vectors of every vocabulary token.

    Output: HDF5 dataset ``embedding`` float32 (n_vocab, P), row i for line i of the
    vocabulary (``<S>``/``</S>`` get the sentence begin/end vectors). It is the
    ``embedding_weight_file`` of a token-input ``BidirectionalLanguageModel``.
    Tokens are run through the character CNN in chunks of ``TOKEN_CHUNK``.
    """
    options = opts.check_options(opts.load_options(options_file), options_file)
    max_chars = options["char_cnn"]["max_characters_per_token"]
    vocab = UnicodeCharsVocabulary(vocab_file, max_chars)
    char_ids = vocab.word_char_ids + 1  # (n_vocab, C), shifted as the Batcher does

    with tf.Graph().as_default():
        ids_placeholder = tf.placeholder(tf.int32, shape=(None, None, max_chars))
        model = BidirectionalLanguageModel(options_file, weight_file)
        embedding_op = model(ids_placeholder)["token_embeddings"]  # (n, 1, P); no LSTM runs
        embeddings = np.zeros((vocab.size, opts.projection_dim(options)), dtype=np.float32)
        with _session() as sess:
            sess.run(tf.global_variables_initializer())
            for start in tqdm(range(0, vocab.size, TOKEN_CHUNK), desc="token embeddings", unit="chunk",
                              disable=None):
                chunk = char_ids[start:start + TOKEN_CHUNK, None, :]
                embeddings[start:start + len(chunk)] = sess.run(embedding_op, {ids_placeholder: chunk})[:, 0]
    with h5py.File(outfile, "w") as fout:
        fout.create_dataset("embedding", data=embeddings, dtype="float32")
    logger.info("wrote %d token embeddings to %s", vocab.size, outfile)


def dump_bilm_embeddings(vocab_file, dataset_file, options_file, weight_file, outfile):
    """Write every biLM layer of every sentence of a dataset.

    ``dataset_file`` has one whitespace-tokenized sentence per line. Output: one HDF5
    dataset per line, keyed ``str(line_index)``, float32 (n_layers + 1, n_tokens, 2P).
    Sentences run one at a time with the LSTM states carried from line to line, as the
    original did.
    """
    options = opts.check_options(opts.load_options(options_file), options_file)
    max_chars = options["char_cnn"]["max_characters_per_token"]
    batcher = Batcher(vocab_file, max_chars)
    with tf.Graph().as_default():
        ids_placeholder = tf.placeholder(tf.int32, shape=(None, None, max_chars))
        lm_embeddings = BidirectionalLanguageModel(options_file, weight_file)(ids_placeholder)["lm_embeddings"]
        with _session() as sess, open(dataset_file, encoding="utf-8") as fin, h5py.File(outfile, "w") as fout:
            sess.run(tf.global_variables_initializer())
            n_sentences = 0
            for sentence_id, line in enumerate(tqdm(fin, desc="sentences", unit="sent", disable=None)):
                char_ids = batcher.batch_sentences([line.split()])
                embeddings = sess.run(lm_embeddings, {ids_placeholder: char_ids})
                fout.create_dataset(str(sentence_id), data=embeddings[0], dtype="float32")
                n_sentences += 1
    logger.info("wrote %d sentences to %s", n_sentences, outfile)
