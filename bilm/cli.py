"""The ``bilm`` command: argument parsing and a call into the library, nothing else."""
import argparse
import json
import logging
import random
import os
import sys

from .errors import BilmError


def add_model_arguments(parser, vocab=True):
    """--model NAME, or --options/--weights (and --vocab) paths; see ``resolve_model_arguments``."""
    parser.add_argument("--model", default="default",
                        help="model name: 'default' (shipped with bilm) or a downloaded one (see `bilm download "
                             "--list`); --options/--weights/--vocab override its files")
    parser.add_argument("--options", help="the model's options.json")
    parser.add_argument("--weights", help="the model's HDF5 weight file")
    if vocab:
        parser.add_argument("--vocab", help="vocabulary file, one token per line (optional for character models)")


def resolve_model_arguments(parser, args):
    """Fill --options/--weights/--vocab from --model where not given; a usage error if impossible."""
    if args.options and args.weights:
        return args
    from .download import model_files

    try:
        options, weights, vocab = model_files(args.model)
    except BilmError as err:
        parser.error(f"{err} (or give --options and --weights)")
    args.options, args.weights = args.options or options, args.weights or weights
    if hasattr(args, "vocab") and args.vocab is None:
        args.vocab = vocab
    return args


def _int_at_least(minimum, what):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1, "positive")
_non_negative_int = _int_at_least(0, "non-negative")


def _json_filters(text):
    try:
        return json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected JSON like '[[1,32],[2,64]]', got {text!r}") from None


def add_output_arguments(parser, resume=True):
    """--overwrite (and --resume): what to do when the output exists or a killed run left parts."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--overwrite", action="store_true", help="replace an existing output (once the new one "
                                                                "is complete)")
    if resume:
        group.add_argument("--resume", action="store_true", help="finish the job a killed run left unfinished")


def _shard(text):
    """'K/N' -> (K, N)."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"expected 0 <= K < N, got {text!r}")
    return k, n


def _embed(args):
    from .precompute import dump_bilm_embeddings
    dump_bilm_embeddings(args.vocab, args.input, args.options, args.weights, args.output,
                         state_mode=args.state_mode, batch_size=args.batch_size, shard=args.shard,
                         overwrite=args.overwrite, resume=args.resume, encoding_errors=args.encoding_errors,
                         empty_lines=args.empty_lines, layers=args.layers, mix_weights=args.mix_weights,
                         sentence_to_index=True)


def _merge(args):
    from .precompute import merge_shards
    merge_shards(args.shards, args.output, overwrite=args.overwrite)


def _dump_token_embeddings(args):
    from .errors import InputError
    from .precompute import dump_token_embeddings

    if args.vocab is None:
        raise InputError(f"model {args.model!r} has no vocabulary file; give the tokens to embed with --vocab")
    dump_token_embeddings(args.vocab, args.options, args.weights, args.output, overwrite=args.overwrite,
                          resume=args.resume)


def _export(args):
    from .export import export_saved_model
    export_saved_model(args.options, args.weights, args.output, state_mode=args.state_mode, overwrite=args.overwrite)


def _download(args):
    from .download import catalogue, download

    if args.list or not args.name:
        for name, entry in sorted(catalogue().items()):
            print(f"{name:16} {entry.get('parameters', ''):>7}  {entry.get('description', '')}")
        return
    for role, path in download(args.name, cache=args.cache_dir, progress=not args.quiet).items():
        print(f"{role}: {path}")


def _floats(text):
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, e.g. 0.2,0.3,0.5, got {text!r}") from None


def _flag(name):
    """Both spellings of a flag: the original scripts' ``--save_dir`` and ``--save-dir``."""
    return ("--" + name, "--" + name.replace("_", "-")) if "_" in name else ("--" + name,)


def _training_data(options, vocab, pattern, test):
    """The dataset of ``pattern`` for these options; ``vocab``: a loaded vocabulary or a vocabulary file."""
    from .lm_dataset import BidirectionalLMDataset, LMDataset
    from .options import uses_char_cnn
    from .training import load_vocab

    if isinstance(vocab, str):
        vocab = load_vocab(vocab, options["char_cnn"]["max_characters_per_token"] if uses_char_cnn(options) else None)
    dataset = BidirectionalLMDataset if options.get("bidirectional") else LMDataset
    return dataset(pattern, vocab, test=test, shuffle_on_load=not test)


def _count_train_tokens(pattern, vocab):
    """Tokens per epoch of the training files (the </S> or <S> targets included); warns about vocab order."""
    import glob

    from .errors import InputError
    from .vocabulary import count_tokens, frequency_order_warning

    files = sorted(path for path in glob.glob(pattern) if os.path.isfile(path))
    if not files:
        raise InputError(f"no training file matches {pattern!r}; expected a glob of text files")
    counts, n_sentences = count_tokens(files)
    logger = logging.getLogger(__name__)
    logger.info("counted %d tokens in %d sentences of %s", sum(counts.values()), n_sentences, pattern)
    warning = frequency_order_warning(vocab, counts)
    if warning:
        logger.warning(warning)
    return sum(counts.values()) + n_sentences


def _train(args):
    from .training import load_vocab, original_training_options, train

    vocab = load_vocab(args.vocab_file, None if args.token_input else 50)  # the original's 50 characters
    n_train_tokens = args.n_train_tokens or _count_train_tokens(args.train_prefix, vocab)
    options = original_training_options(vocab.size, n_train_tokens)
    lstm, cnn = options["lstm"], options["char_cnn"]
    for value, (node, key) in [
        (args.batch_size, (options, "batch_size")), (args.n_epochs, (options, "n_epochs")),
        (args.unroll_steps, (options, "unroll_steps")), (args.dropout, (options, "dropout")),
        (args.learning_rate, (options, "learning_rate")),
        (args.n_negative_samples, (options, "n_negative_samples_batch")),
        (args.lstm_dim, (lstm, "dim")), (args.projection_dim, (lstm, "projection_dim")),
        (args.n_layers, (lstm, "n_layers")), (args.n_highway, (cnn, "n_highway")),
        (args.char_embedding_dim, (cnn["embedding"], "dim")), (args.filters, (cnn, "filters")),
    ]:
        if value is not None:
            node[key] = value
    if args.token_input:
        del options["char_cnn"]
    if args.seed is not None:
        random.seed(args.seed)
    train(options, _training_data(options, vocab, args.train_prefix, test=False), args.n_gpus,
          args.save_dir, args.log_dir or args.save_dir, checkpoint_every=args.checkpoint_every,
          log_every=args.log_every, seed=args.seed, overwrite=args.overwrite)


def _restart(args):
    from .training import load_options_latest_checkpoint, train

    options, ckpt_file = load_options_latest_checkpoint(args.save_dir)
    for key in ("n_train_tokens", "n_epochs", "batch_size"):
        if getattr(args, key):
            options[key] = getattr(args, key)
    train(options, _training_data(options, args.vocab_file, args.train_prefix, test=False), args.n_gpus,
          args.save_dir, args.log_dir or args.save_dir, restart_ckpt_file=ckpt_file,
          checkpoint_every=args.checkpoint_every, log_every=args.log_every)


def _test(args):
    from .training import load_options_latest_checkpoint, test

    options, ckpt_file = load_options_latest_checkpoint(args.save_dir)
    perplexity = test(options, ckpt_file, _training_data(options, args.vocab_file, args.test_prefix, test=True),
                      batch_size=args.batch_size)
    print(f"perplexity: {perplexity:.3f}")


def _dump_weights(args):
    from .training import dump_weights

    dump_weights(args.save_dir, args.outfile, options_outfile=args.options_outfile, overwrite=args.overwrite)


def _vocab(args):
    from .vocabulary import build_vocabulary, count_tokens, write_vocabulary

    counts, n_sentences = count_tokens(args.inputs)
    tokens = build_vocabulary(counts, args.min_count, args.max_size)
    write_vocabulary(tokens, args.output, overwrite=args.overwrite)
    logging.getLogger(__name__).info("%d sentences, %d tokens, %d types; wrote %d vocabulary entries to %s",
                                     n_sentences, sum(counts.values()), len(counts), len(tokens), args.output)


def _add_training_run_arguments(parser):
    parser.add_argument(*_flag("n_gpus"), type=_positive_int, default=1, help="towers (GPUs; CPU devices without GPUs)")
    parser.add_argument(*_flag("log_dir"), help="TensorBoard directory (default: --save_dir)")
    parser.add_argument(*_flag("checkpoint_every"), type=_positive_int, default=1250,
                        help="batches between checkpoints")
    parser.add_argument(*_flag("log_every"), type=_positive_int, default=100, help="batches between progress logs")


def _add_training_commands(commands):
    train = commands.add_parser(
        "train", help="train a biLM (the original ELMo hyperparameters unless changed)",
        epilog="example: bilm train --train_prefix 'data/train/*' --vocab_file vocab.txt --save_dir ckpt "
               "--lstm_dim 512 --projection_dim 128 --batch_size 32")
    train.add_argument(*_flag("train_prefix"), required=True, help="glob of training shards")
    train.add_argument(*_flag("vocab_file"), required=True, help="vocabulary (see `bilm vocab`)")
    train.add_argument(*_flag("save_dir"), required=True, help="checkpoints and options.json go here")
    train.add_argument(*_flag("n_train_tokens"), type=_positive_int,
                       help="tokens per epoch (default: counted from the data)")
    train.add_argument(*_flag("n_epochs"), type=_positive_int)
    train.add_argument(*_flag("batch_size"), type=_positive_int, help="per tower (default 128)")
    train.add_argument(*_flag("unroll_steps"), type=_positive_int)
    train.add_argument("--dropout", type=float)
    train.add_argument(*_flag("learning_rate"), type=float)
    train.add_argument(*_flag("n_negative_samples"), type=_positive_int,
                       help="sampled softmax negatives (default 8192)")
    train.add_argument(*_flag("lstm_dim"), type=_positive_int, help="LSTM cell size (default 4096)")
    train.add_argument(*_flag("projection_dim"), type=_positive_int, help="token and LSTM output size (default 512)")
    train.add_argument(*_flag("n_layers"), type=_positive_int, help="LSTM layers (default 2)")
    train.add_argument(*_flag("n_highway"), type=_non_negative_int, help="highway layers (default 2)")
    train.add_argument(*_flag("char_embedding_dim"), type=_positive_int, help="character embedding size (default 16)")
    train.add_argument("--filters", type=_json_filters, help="char CNN filters as JSON, e.g. '[[1,32],[2,64]]'")
    train.add_argument(*_flag("token_input"), action="store_true", help="a token-input model (no char CNN)")
    train.add_argument("--seed", type=int, help="seed the shard order, initialisation, dropout and sampling")
    train.add_argument("--overwrite", action="store_true", help="start a new model in a save_dir that has "
                                                                "checkpoints (they are removed)")
    _add_training_run_arguments(train)
    train.set_defaults(run=_train)

    restart = commands.add_parser(
        "restart", help="continue training from the latest checkpoint of --save_dir (or fine-tune on new data)",
        epilog="example: bilm restart --train_prefix 'data/train/*' --vocab_file vocab.txt --save_dir ckpt")
    restart.add_argument(*_flag("train_prefix"), required=True)
    restart.add_argument(*_flag("vocab_file"), required=True)
    restart.add_argument(*_flag("save_dir"), required=True)
    for key in ("n_train_tokens", "n_epochs", "batch_size"):
        restart.add_argument(*_flag(key), type=_positive_int, help="change this option (total batches are recomputed)")
    _add_training_run_arguments(restart)
    restart.set_defaults(run=_restart)

    test = commands.add_parser("test", help="perplexity of the latest checkpoint on held-out data",
                               epilog="example: bilm test --test_prefix heldout.txt --vocab_file vocab.txt "
                                      "--save_dir ckpt --batch_size 64")
    test.add_argument(*_flag("test_prefix"), required=True)
    test.add_argument(*_flag("vocab_file"), required=True)
    test.add_argument(*_flag("save_dir"), required=True)
    test.add_argument(*_flag("batch_size"), type=_positive_int, default=256)
    test.set_defaults(run=_test)

    dump = commands.add_parser("dump-weights", help="latest checkpoint -> HDF5 weight file (no softmax)",
                               epilog="example: bilm dump-weights --save_dir ckpt --outfile weights.hdf5 "
                                      "--options_outfile options.json")
    dump.add_argument(*_flag("save_dir"), required=True)
    dump.add_argument("--outfile", required=True)
    dump.add_argument(*_flag("options_outfile"), help="also write options.json for inference (n_characters 262)")
    add_output_arguments(dump, resume=False)
    dump.set_defaults(run=_dump_weights)

    vocab = commands.add_parser(
        "vocab", help="build a vocabulary: <S>, </S>, <UNK>, then tokens by descending count",
        epilog="example: bilm vocab data/train/*.txt --output vocab.txt --min-count 3")
    vocab.add_argument("inputs", nargs="+", help="whitespace-tokenized text files")
    vocab.add_argument("--output", required=True)
    vocab.add_argument(*_flag("min_count"), type=_positive_int, default=1)
    vocab.add_argument(*_flag("max_size"), type=_positive_int,
                       help="at most this many entries, special tokens included")
    add_output_arguments(vocab, resume=False)
    vocab.set_defaults(run=_vocab)


def build_parser():
    parser = argparse.ArgumentParser(prog="bilm", description="ELMo biLMs: embed text, train, export, download.")
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
    embed.add_argument("--state-mode", choices=["warm", "zero", "stateful"], default="warm",
                       help="initial LSTM states: 'warm' (default) and 'zero' give each sentence the same start "
                            "(deterministic, batched by length); 'stateful' reproduces the original exactly "
                            "(one sentence at a time, states carried from line to line)")
    embed.add_argument("--batch-size", type=_positive_int, default=64, help="sentences per batch (default 64)")
    embed.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N",
                       help="only lines whose index %% N == K, for N parallel jobs (then `bilm merge`)")
    embed.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict",
                       help="a line that is not UTF-8 is an error (strict, default) or has its bad bytes replaced")
    embed.add_argument("--empty-lines", choices=["error", "keep"], default="error",
                       help="an empty line is an error (default) or gets an empty dataset, as in the original")
    embed.add_argument("--layers", choices=["all", "top", "average", "mix"], default="all",
                       help="all layers, (n_layers + 1, n_tokens, 2P) per line as the original (default); or one "
                            "(n_tokens, 2P) array: the top layer, the average of the layers, or their mix")
    embed.add_argument("--mix-weights", type=_floats, metavar="W0,W1,...",
                       help="with --layers mix: one weight per layer, used as given")
    add_output_arguments(embed)
    embed.set_defaults(run=_embed)

    merge = commands.add_parser("merge", help="present `bilm embed --shard` outputs as one HDF5 file (links)",
                                epilog="example: bilm merge elmo.hdf5 elmo.0.hdf5 elmo.1.hdf5")
    merge.add_argument("output")
    merge.add_argument("shards", nargs="+")
    add_output_arguments(merge, resume=False)
    merge.set_defaults(run=_merge)

    tokens = commands.add_parser(
        "dump-token-embeddings", help="context-independent vectors of a vocabulary -> HDF5 (token input)",
        epilog="example: bilm dump-token-embeddings token_embeddings.hdf5 --vocab vocab.txt")
    tokens.add_argument("output", help="HDF5 file to write (dataset 'embedding')")
    add_model_arguments(tokens)
    add_output_arguments(tokens)
    tokens.set_defaults(run=_dump_token_embeddings)

    export = commands.add_parser(
        "export", help="write a TensorFlow SavedModel with TF Hub ELMo-like signatures (for TF2, eager)",
        description="Signatures: 'default' (untokenized strings, split on spaces -> elmo, default) and 'tokens' "
                    "(padded tokens + sequence_len -> word_emb, lstm_outputs1.., elmo, default). Load it with "
                    "tf.saved_model.load(DIR).signatures['default'](tf.constant([...])).",
        epilog="example: bilm export elmo_savedmodel --model default")
    export.add_argument("output", help="directory to write")
    add_model_arguments(export, vocab=False)
    export.add_argument("--state-mode", choices=["warm", "zero"], default="warm",
                        help="the LSTM states every sentence starts from (default: warm)")
    add_output_arguments(export, resume=False)
    export.set_defaults(run=_export)

    download = commands.add_parser(
        "download", help="download a published pretrained model into the cache (then use it with --model NAME)",
        description="Models: small, medium, original, original-5.5b (AllenNLP's English ELMo models), plus any "
                    "listed in the JSON file named by $BILM_CATALOGUE. Cache: $BILM_CACHE or ~/.cache/bilm. "
                    "A partial download resumes; files are checked against their size and a SHA-256 recorded "
                    "on the first download.",
        epilog="example: bilm download small && bilm embed sentences.txt elmo.hdf5 --model small")
    download.add_argument("name", nargs="?", help="model name (omit, or --list, to list them)")
    download.add_argument("--list", action="store_true", help="list the catalogue")
    download.add_argument("--cache-dir", help="cache directory (default: $BILM_CACHE or ~/.cache/bilm)")
    download.set_defaults(run=_download)
    _add_training_commands(commands)
    for command in commands.choices.values():  # --quiet also after the command
        command.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="log warnings only, no progress bars")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "options"):
        resolve_model_arguments(parser, args)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    if args.quiet:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        args.run(args)
    except (BilmError, OSError) as err:
        print(f"bilm: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bilm: interrupted; complete outputs are kept (rerun with --resume to finish a job)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
