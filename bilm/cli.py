"""The ``bilm`` command: argument parsing and a call into the library, nothing else."""
import argparse
import logging
import os
import sys

from .errors import BilmError
from .models import default_model_files


def add_model_arguments(parser, vocab=True):
    """--options/--weights (and --vocab), defaulting to the shipped model when it is installed."""
    defaults = default_model_files() or (None, None, None)
    arguments = [("--options", "the model's options.json"), ("--weights", "the model's HDF5 weight file")]
    if vocab:
        arguments.append(("--vocab", "vocabulary file, one token per line"))
    for (flag, text), default in zip(arguments, defaults):
        parser.add_argument(flag, default=default, required=default is None,
                            help=text + (" (default: the shipped model)" if default else ""))


def _embed(args):
    from .precompute import dump_bilm_embeddings
    dump_bilm_embeddings(args.vocab, args.input, args.options, args.weights, args.output)


def _dump_token_embeddings(args):
    from .precompute import dump_token_embeddings
    dump_token_embeddings(args.vocab, args.options, args.weights, args.output)


def build_parser():
    parser = argparse.ArgumentParser(prog="bilm", description="ELMo biLM: embed text, dump token embeddings.")
    parser.add_argument("--quiet", action="store_true", help="log warnings only, no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    embed = commands.add_parser(
        "embed", help="every biLM layer of every sentence of a text file -> HDF5",
        description="Write one dataset per input line, keyed by its 0-based line number, of shape "
                    "(n_layers + 1, n_tokens, 2 * projection_dim), like the original dump_bilm_embeddings.",
        epilog="example: bilm embed sentences.txt elmo.hdf5")
    embed.add_argument("input", help="text file, one whitespace-tokenized sentence per line")
    embed.add_argument("output", help="HDF5 file to write")
    add_model_arguments(embed)
    embed.set_defaults(run=_embed)

    tokens = commands.add_parser(
        "dump-token-embeddings", help="context-independent vectors of a vocabulary -> HDF5 (token input)",
        epilog="example: bilm dump-token-embeddings token_embeddings.hdf5 --vocab vocab.txt")
    tokens.add_argument("output", help="HDF5 file to write (dataset 'embedding')")
    add_model_arguments(tokens)
    tokens.set_defaults(run=_dump_token_embeddings)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    if args.quiet:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        args.run(args)
    except (BilmError, OSError) as err:
        print(f"bilm: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
