"""ELMo from cached token embeddings: faster, for a fixed vocabulary.

    python usage_token.py [--model NAME | --options OPTIONS --weights WEIGHTS] [--workdir DIR] [--verbose]

The context-independent token vectors of every token of the data are computed once
(``dump_token_embeddings``); the biLM then only runs its LSTMs on token ids.
"""
import argparse
import os
import tempfile

from bilm.cli import add_model_arguments, resolve_model_arguments
from bilm.core.startup import start_tensorflow

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
add_model_arguments(parser, vocab=False)
parser.add_argument("--workdir", help="where to write the vocabulary and token embeddings (default: a temporary directory, removed at the end)")
parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's start-up lines")
args = resolve_model_arguments(parser, parser.parse_args(), check_files=True)  # a bad file: one line, no traceback
start_tensorflow(args.verbose)  # imports TensorFlow, its start-up lines hidden

import tensorflow.compat.v1 as tf  # noqa: E402

from bilm import BidirectionalLanguageModel, TokenBatcher, dump_token_embeddings, weight_layers  # noqa: E402

temporary = None if args.workdir else tempfile.TemporaryDirectory(prefix="bilm_usage_token_")  # removed at the end
workdir = args.workdir or temporary.name
os.makedirs(workdir, exist_ok=True)

raw_context = [
    "Pretrained biLMs compute representations useful for NLP tasks .",
    "They give state of the art performance for many tasks .",
]
tokenized_context = [sentence.split() for sentence in raw_context]
tokenized_question = ["What are biLMs useful for ?".split()]

# 1. A vocabulary of every token in the data, with the sentence begin/end tokens.
all_tokens = {"<S>", "</S>"} | {token for sentence in tokenized_context + tokenized_question for token in sentence}
vocab_file = os.path.join(workdir, "vocab_small.txt")
with open(vocab_file, "w", encoding="utf-8") as fout:
    fout.write("\n".join(sorted(all_tokens)) + "\n")

# 2. Its token embeddings, computed once by the character CNN.
token_embedding_file = os.path.join(workdir, "elmo_token_embeddings.hdf5")
dump_token_embeddings(vocab_file, args.options, args.weights, token_embedding_file, overwrite=True)

# 3. The biLM on token ids.
batcher = TokenBatcher(vocab_file)
with tf.Graph().as_default():
    context_token_ids = tf.placeholder(tf.int32, shape=(None, None))
    question_token_ids = tf.placeholder(tf.int32, shape=(None, None))
    bilm = BidirectionalLanguageModel(args.options, args.weights, use_character_inputs=False,
                                      embedding_weight_file=token_embedding_file)
    context_embeddings_op = bilm(context_token_ids)
    question_embeddings_op = bilm(question_token_ids)

    elmo_context_input = weight_layers("input", context_embeddings_op, l2_coef=0.0)
    with tf.variable_scope("", reuse=True):
        elmo_question_input = weight_layers("input", question_embeddings_op, l2_coef=0.0)

    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        context, question = sess.run(
            [elmo_context_input["weighted_op"], elmo_question_input["weighted_op"]],
            feed_dict={context_token_ids: batcher.batch_sentences(tokenized_context),
                       question_token_ids: batcher.batch_sentences(tokenized_question)})

print(f"token embeddings of {len(all_tokens)} tokens computed in {token_embedding_file}")
print(f"ELMo context input: shape {context.shape}; question input: shape {question.shape}")
if temporary is not None:
    temporary.cleanup()  # pass --workdir to keep the files
