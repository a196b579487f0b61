"""ELMo from raw tokens (character input), the most general way to use a biLM.

    python usage_character.py [--model NAME | --options OPTIONS --weights WEIGHTS --vocab VOCAB] [--verbose]

Builds a question/context reading-comprehension style graph: one biLM, two inputs,
ELMo at both the input and the output of a task model, weights shared between
question and context.
"""
import argparse

from bilm.cli import add_model_arguments, resolve_model_arguments
from bilm.core.startup import start_tensorflow

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
add_model_arguments(parser)
parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's start-up lines")
args = resolve_model_arguments(parser, parser.parse_args(), check_files=True)  # a bad file: one line, no traceback
start_tensorflow(args.verbose)  # imports TensorFlow, its start-up lines hidden

import tensorflow.compat.v1 as tf  # noqa: E402

from bilm import Batcher, BidirectionalLanguageModel, weight_layers  # noqa: E402
from bilm.core.options import load_options  # noqa: E402

raw_context = [
    "Pretrained biLMs compute representations useful for NLP tasks .",
    "They give state of the art performance for many tasks .",
]
tokenized_context = [sentence.split() for sentence in raw_context]
tokenized_question = ["What are biLMs useful for ?".split()]

# Map text to character ids; tokens outside the vocabulary are fine.
max_chars = load_options(args.options)["char_cnn"]["max_characters_per_token"]  # 50 for published models
batcher = Batcher(args.vocab, max_chars)

with tf.Graph().as_default():
    context_character_ids = tf.placeholder(tf.int32, shape=(None, None, max_chars))
    question_character_ids = tf.placeholder(tf.int32, shape=(None, None, max_chars))

    # One biLM: its weights are shared by both inputs.
    bilm = BidirectionalLanguageModel(args.options, args.weights)
    context_embeddings_op = bilm(context_character_ids)
    question_embeddings_op = bilm(question_character_ids)

    # ELMo for the input and the output of the task model; question and context
    # share each ELMo's mixing weights (reuse=True).
    elmo_context_input = weight_layers("input", context_embeddings_op, l2_coef=0.0)
    with tf.variable_scope("", reuse=True):
        elmo_question_input = weight_layers("input", question_embeddings_op, l2_coef=0.0)
    elmo_context_output = weight_layers("output", context_embeddings_op, l2_coef=0.0)
    with tf.variable_scope("", reuse=True):
        elmo_question_output = weight_layers("output", question_embeddings_op, l2_coef=0.0)

    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())  # also loads the pretrained weights
        feed = {
            context_character_ids: batcher.batch_sentences(tokenized_context),
            question_character_ids: batcher.batch_sentences(tokenized_question),
        }
        ops = [elmo_context_input, elmo_question_input, elmo_context_output, elmo_question_output]
        values = sess.run([op["weighted_op"] for op in ops], feed_dict=feed)

for name, value in zip(["context input", "question input", "context output", "question output"], values):
    print(f"ELMo {name}: shape {value.shape} (sentences, tokens, 2 x projection_dim)")
