"""The ``bilm`` command: argument parsing and a call into the library, nothing else.

TensorFlow is imported only once the arguments are parsed, with its start-up lines
silenced unless ``--verbose``; Ctrl-C and SIGTERM end any command with one line and
a non-zero status (130, 143) after the running job has saved what it completed.
"""
import argparse
import contextlib
import difflib
import json
import logging
import math
import os
import re
import shlex
import signal
import sys

from . import __version__
from .core.files import check_output
from .core.startup import start_tensorflow
from .errors import BilmError, speak_in_flags

logger = logging.getLogger("bilm")
EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 130, 143


# -- argument types ----------------------------------------------------------------------------------

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


def _number(low, high=None, what="number"):
    """A finite float in [low, high) (``high`` None: no upper bound)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}") from None
        if not (math.isfinite(value) and value >= low and (high is None or value < high)):
            bounds = f"in [{low}, {high})" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"expected a {what} {bounds}, got {text!r}")
        return value
    return parse


def _json_filters(text):
    try:
        return json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected JSON like '[[1,32],[2,64]]', got {text!r}") from None


def _shard(text):
    """'K/N' -> (K, N)."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"expected 0 <= K < N, got {text!r}")
    return k, n


def _ray_address(text):
    """'local', 'auto', HOST:PORT or ray://HOST:PORT (not a file: --ray given before the input and output)."""
    if text in ("local", "auto") or re.fullmatch(r"(ray://)?[^\s/:]+:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"expected local, auto, HOST:PORT or ray://HOST:PORT, got {text!r} (give "
                                     f"--ray after the input and output files)")


def _floats(text):
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, e.g. 0.2,0.3,0.5, got {text!r}") from None


def _flag(name):
    """Both spellings of a flag: ``--save_dir`` (the original scripts') and ``--save-dir``."""
    name = name.replace("-", "_")
    return ("--" + name, "--" + name.replace("_", "-")) if "_" in name else ("--" + name,)


# -- shared argument groups --------------------------------------------------------------------------

MODEL_RULE = ("A model is --model NAME (default: the model shipped with bilm), or --options and --weights "
              "together; --vocab may be added to either.")


def add_model_arguments(parser, vocab=True):
    """--model NAME, or --options and --weights (and --vocab); see ``resolve_model_arguments``."""
    parser.set_defaults(model_arguments=True)
    group = parser.add_argument_group("model", MODEL_RULE)
    group.add_argument("--model", help="model name: 'default' (shipped with bilm) or a downloaded one "
                                       "(`bilm download --list`)")
    group.add_argument("--options", help="the model's options.json (with --weights)")
    group.add_argument("--weights", help="the model's HDF5 weight file (with --options)")
    if vocab:
        group.add_argument("--vocab", help="vocabulary file, one token per line (optional for character models: "
                                           "its tokens' character ids are cached)")


def resolve_model_arguments(parser, args, check_files=False):
    """Fill --options/--weights/--vocab from --model; a usage error for a partial or contradictory set.

    ``check_files`` (the usage scripts, which have no ``main`` to turn errors into one line): also a usage
    error for a model file that is missing or does not fit the options, before anything starts.
    """
    given = [f"--{name}" for name in ("options", "weights") if getattr(args, name)]
    if len(given) == 1:
        missing = "--weights" if given == ["--options"] else "--options"
        parser.error(f"{given[0]} needs {missing} too: {MODEL_RULE}")
    if given and args.model:
        parser.error(f"give --model or --options/--weights, not both: {MODEL_RULE}")
    if not given:
        from .core.download import model_files

        args.model = args.model or "default"
        try:
            options, weights, vocab = model_files(args.model)
        except BilmError as err:
            parser.error(f"{err} (or give --options and --weights)")
        args.options, args.weights = options, weights
        if getattr(args, "vocab", False) is None:
            args.vocab = vocab
    if check_files:
        from .core.options import ModelOptions
        from .core.text import check_text_file
        from .core.weights import check_weight_file
        from .errors import VocabularyError

        try:
            check_weight_file(args.weights, ModelOptions.from_file(args.options))
            if getattr(args, "vocab", None):
                check_text_file(args.vocab, "vocabulary file", VocabularyError)
        except BilmError as err:
            parser.error(str(err))
    return args


def add_output_arguments(parser, resume=True):
    """--overwrite (and --resume): what to do when the output exists or an interrupted run left parts."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--overwrite", action="store_true", help="replace an existing output (once the new one "
                                                                "is complete)")
    if resume:
        group.add_argument("--resume", action="store_true", help="finish the job an interrupted or killed run "
                                                                 "left unfinished (same inputs and settings)")


def _add_text_arguments(parser):
    parser.add_argument(*_flag("encoding"), default="utf-8",
                        help="the input's text encoding (default utf-8; e.g. latin-1)")
    parser.add_argument(*_flag("encoding-errors"), choices=["strict", "replace"], default="strict",
                        help="bytes not in the encoding are an error (strict, default) or replaced by U+FFFD")
    parser.add_argument(*_flag("tokenize"), choices=["moses"],
                        help="tokenize each line with the Moses tokenizer (as the published models' training text "
                             "was; needs `pip install sacremoses`); default: the input is already tokenized "
                             "and split on whitespace")


# -- commands ------------------------------------------------------------------------------------------

def _embed(args):
    from .embedding.devices import parse_devices
    from .embedding.dumps import dump_bilm_embeddings
    from .errors import InputError

    if args.ray is not None:
        return _embed_on_ray(args)
    if args.ray_workers is not None:
        raise InputError("--ray-workers goes with --ray (the number of Ray actors)")
    dump_bilm_embeddings(args.vocab, args.input, args.options, args.weights, args.output,
                         state_mode=args.state_mode, batch_size=args.batch_size, shard=args.shard,
                         overwrite=args.overwrite, resume=args.resume, encoding=args.encoding,
                         encoding_errors=args.encoding_errors, empty_lines=args.empty_lines, tokenize=args.tokenize,
                         layers=args.layers, mix_weights=args.mix_weights, sentence_to_index=True,
                         precision=args.precision, dtype=args.dtype, pool=args.pool,
                         devices=parse_devices(args.devices) if args.devices else None, precision_hint=True)


def _embed_on_ray(args):
    from .errors import InputError
    from .embedding.ray import dump_on_ray

    other = "--devices" if args.devices else "--shard" if args.shard != (0, 1) else None
    if other:
        raise InputError(f"--ray shares the lines among the Ray cluster's workers: give it without {other}")
    dump_on_ray(args.ray, args.vocab, args.input, args.options, args.weights, args.output,
                state_mode=args.state_mode, batch_size=args.batch_size, overwrite=args.overwrite, resume=args.resume,
                encoding=args.encoding, encoding_errors=args.encoding_errors, empty_lines=args.empty_lines,
                tokenize=args.tokenize, layers=args.layers, mix_weights=args.mix_weights, sentence_to_index=True,
                precision=args.precision, dtype=args.dtype, pool=args.pool, workers=args.ray_workers)


def _merge(args):
    from .embedding.dumps import merge_shards
    merge_shards(args.shards, args.output, overwrite=args.overwrite)


def _dump_token_embeddings(args):
    from .embedding.dumps import dump_token_embeddings
    from .errors import InputError

    if args.vocab is None:
        raise InputError(f"model {args.model!r} has no vocabulary file; give the tokens to embed with --vocab")
    dump_token_embeddings(args.vocab, args.options, args.weights, args.output, overwrite=args.overwrite,
                          resume=args.resume)


def _export(args):
    from .embedding.export import export_saved_model
    export_saved_model(args.options, args.weights, args.output, state_mode=args.state_mode, overwrite=args.overwrite)


def _download(args):
    from .core.download import catalogue, download
    from .errors import InputError

    if args.list or not args.name:
        rows = [(name, str(entry.get("parameters", "")), entry.get("description", ""))
                for name, entry in sorted(catalogue().items())]
        widths = [max(len(row[k]) for row in rows) for k in (0, 1)]
        for name, parameters, description in rows:
            print(f"{name:{widths[0]}}  {parameters:>{widths[1]}}  {description}")
        return
    if catalogue().get(args.name, {}).get("kind") == "corpus":
        from .training import lm1b

        record = lm1b.prepare(from_file=args.from_file, cache=args.cache_dir, progress=not args.quiet)
        print("\n".join(lm1b.summary(record, args.cache_dir)))
        return
    if args.from_file:
        raise InputError(f"--from-file takes a corpus's archive; {args.name!r} is not a corpus")
    for role, path in download(args.name, cache=args.cache_dir, progress=not args.quiet).items():
        print(f"{role}: {path}")


DATA_NAME_FLAGS = ("train_prefix", "test_prefix", "heldout_prefix", "general_heldout", "vocab_file")


def resolve_data_names(args):
    """--train_prefix lm1b, --test_prefix lm1b-heldout|lm1b-test, --vocab_file lm1b: the unpacked benchmark's files
    (``bilm.lm1b.resolve``); a file of that name here is taken as given."""
    from .training.lm1b import resolve

    for name in DATA_NAME_FLAGS:
        if getattr(args, name, None):
            setattr(args, name, resolve(getattr(args, name), vocab=name == "vocab_file"))


def _sample_corpus(args):
    from .models import write_sample_corpus

    for path in write_sample_corpus(args.directory, overwrite=args.overwrite):
        print(path)


# Training flags -> option paths (None: not an option).
TRAINING_FLAGS = {
    "batch_size": "batch_size", "n_epochs": "n_epochs", "unroll_steps": "unroll_steps", "dropout": "dropout",
    "learning_rate": "learning_rate", "n_negative_samples": "n_negative_samples_batch", "lstm_dim": "lstm.dim",
    "projection_dim": "lstm.projection_dim", "n_layers": "lstm.n_layers", "n_highway": "char_cnn.n_highway",
    "char_embedding_dim": "char_cnn.embedding.dim", "filters": "char_cnn.filters",
}


def _cluster(args):
    """The cluster of --workers/--worker_index, or of $TF_CONFIG, or None."""
    from .training.cluster import Cluster

    if args.workers or args.worker_index is not None:
        if not (args.workers and args.worker_index is not None):
            args.parser.error("--workers and --worker_index go together")
        return Cluster.of(args.workers.split(","), args.worker_index)
    return Cluster.from_tf_config()


def _train(args):
    from .training.lm1b import epoch_tokens
    from .training.loop import train_new_model

    changes = {path: getattr(args, name) for name, path in TRAINING_FLAGS.items()}
    n_train_tokens = args.n_train_tokens or epoch_tokens(args.train_prefix)
    if args.plan:
        from .training.plan import plan_training

        cluster = _cluster(args)
        source = "the original's n_train_tokens for the benchmark" if n_train_tokens != args.n_train_tokens else None
        plan = plan_training(args.train_prefix, args.vocab_file, args.n_gpus, n_train_tokens, source,
                             args.token_input, cluster.size if cluster else 1, args.plan_steps, **changes)
        print("\n".join(plan.lines()))
        return
    with _restart_hint(args):
        train_new_model(args.train_prefix, args.vocab_file, args.save_dir, args.log_dir, args.n_gpus,
                        n_train_tokens=n_train_tokens, token_input=args.token_input, seed=args.seed,
                        overwrite=args.overwrite, checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                        keep_checkpoints=args.keep_checkpoints, cluster=_cluster(args),
                        worker_timeout=args.worker_timeout, on_divergence=args.on_divergence,
                        max_rollbacks=args.max_rollbacks, precision=args.precision, **changes)
    _next_steps(args)


def _restart(args):
    from .core.download import is_checkpoint
    from .errors import InputError
    from .training.loop import restart_training

    if not os.path.isdir(args.save_dir) and is_checkpoint(args.save_dir):
        raise InputError(f"{args.save_dir} is a downloaded checkpoint, never written to: fine-tune it into a new "
                         f"directory with `bilm finetune --from {args.save_dir} --save_dir NEW ...`")
    with _restart_hint(args):
        restart_training(args.train_prefix, args.vocab_file, args.save_dir, args.log_dir, args.n_gpus,
                         checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                         keep_checkpoints=args.keep_checkpoints, cluster=_cluster(args),
                         worker_timeout=args.worker_timeout, on_divergence=args.on_divergence,
                         max_rollbacks=args.max_rollbacks, precision=args.precision,
                         n_train_tokens=args.n_train_tokens,
                         n_epochs=args.n_epochs, batch_size=args.batch_size)
    _next_steps(args)


@contextlib.contextmanager
def _restart_hint(args):
    """On a training or fine-tuning run stopped with a checkpoint saved, add the command that continues it."""
    try:
        yield
    except (KeyboardInterrupt, BilmError) as err:
        if getattr(err, "bilm_checkpoint", None):
            if args.command == "finetune":  # its settings are in finetune.json
                command = ["bilm", "finetune", "--resume", "--save_dir", args.save_dir, "--train_prefix",
                           args.train_prefix, "--vocab_file", args.vocab_file, "--heldout_prefix", args.heldout_prefix]
                command += ["--general_heldout", args.general_heldout] if args.general_heldout else []
            else:
                command = ["bilm", "restart", "--train_prefix", args.train_prefix, "--vocab_file", args.vocab_file,
                           "--save_dir", args.save_dir]
            if args.n_gpus != 1:
                command += ["--n_gpus", str(args.n_gpus)]
            if args.log_dir:
                command += ["--log_dir", args.log_dir]
            if args.precision != "float32":
                command += ["--precision", args.precision]
            if args.workers:
                command += ["--workers", args.workers, "--worker_index", str(args.worker_index)]
            note = getattr(err, "bilm_note", None)
            err.bilm_note = f"{note + '; ' if note else ''}continue with: {shlex.join(command)}"
        raise


def _finetune(args):
    from .training.finetune import finetune, resolve_save_dir

    source = None
    if args.source:
        if args.options or args.weights:
            args.parser.error("give --from (a checkpoint) or --options and --weights (a weight file), not both")
        source = resolve_save_dir(args.source)
    elif not (args.options and args.weights) and not args.resume:
        args.parser.error("start from --from SAVE_DIR_OR_NAME (a checkpoint) or from --options and --weights "
                          "(a weight file)")
    with _restart_hint(args):
        perplexity = finetune(
            args.save_dir, args.train_prefix, args.vocab_file, args.heldout_prefix, source_dir=source,
            options_file=args.options, weight_file=args.weights, n_epochs=args.n_epochs,
            n_train_tokens=args.n_train_tokens, batch_size=args.batch_size, learning_rate=args.learning_rate,
            dropout=args.dropout, n_negative_samples=args.n_negative_samples, eval_every=args.eval_every,
            patience=args.patience, eval_batch_size=args.eval_batch_size,
            softmax_only_batches=args.softmax_only_batches, n_gpus=args.n_gpus, log_dir=args.log_dir,
            keep_checkpoints=args.keep_checkpoints, log_every=args.log_every, seed=args.seed,
            overwrite=args.overwrite, resume=args.resume, cluster=_cluster(args), worker_timeout=args.worker_timeout,
            general_heldout_prefix=args.general_heldout, precision=args.precision)
    if perplexity is not None:  # the chief's
        print(f"best held-out perplexity: {perplexity:.3f}")
        if args.general_heldout:  # evaluated beside it: recorded in finetune.json
            from .training.checkpoints import FINETUNE_RECORD

            with open(os.path.join(args.save_dir, FINETUNE_RECORD), encoding="utf-8") as fin:
                general = json.load(fin)["best"].get("general_heldout_perplexity")
            if general is not None:
                print(f"general held-out perplexity at that checkpoint: {general:.3f} ({args.general_heldout})")
    _next_steps(args)


def _save_dir(args):
    """--save_dir as given, or the directory of a downloaded training checkpoint named so."""
    from .training.finetune import resolve_save_dir
    return resolve_save_dir(args.save_dir)


def _next_steps(args):
    evaluate = ["bilm", "test", "--save_dir", args.save_dir, "--vocab_file", args.vocab_file, "--test_prefix",
                getattr(args, "heldout_prefix", None) or "HELDOUT"]
    export = ["bilm", "dump-weights", "--save_dir", args.save_dir, "--outfile", "weights.hdf5", "--options_outfile",
              "options.json"]
    logger.info("next: `%s` to evaluate (any --batch_size gives the same perplexity), `%s` to export",
                shlex.join(evaluate), shlex.join(export))


def _test(args):
    from .training.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(_save_dir(args), args.test_prefix, args.vocab_file, args.batch_size,
                                 original_figure=args.original_figure)
    left_out = result.tokens_in_text - result.tokens
    print(f"targets scored: {result.tokens:,} per direction"
          + (f", {left_out:,} of the text's {result.tokens_in_text:,} left out (the original's last, incomplete batch)"
             if left_out else " (every token and sentence end of the text, once)"))
    print(f"forward perplexity: {result.forward:.3f}")
    if result.backward is not None:
        print(f"backward perplexity: {result.backward:.3f}")
    what = ("the original's figure: exp of the mean over batches of both directions' mean loss"
            if result.original_figure else "average of forward and backward" if result.backward is not None
            else "forward only")
    print(f"perplexity: {result:.3f} ({what})")


def _dump_weights(args):
    from .training.checkpoints import dump_weights

    dump_weights(_save_dir(args), args.outfile, options_outfile=args.options_outfile, overwrite=args.overwrite)


def _vocab(args):
    from .core.vocabulary import build_vocabulary, count_tokens, write_vocabulary

    counts, n_sentences = count_tokens(args.inputs)
    tokens = build_vocabulary(counts, args.min_count, args.max_size)
    write_vocabulary(tokens, args.output, overwrite=args.overwrite, inputs=args.inputs)
    logger.info("%d sentences, %d tokens, %d types; wrote %d vocabulary entries to %s",
                n_sentences, sum(counts.values()), len(counts), len(tokens), args.output)


# -- the parser ------------------------------------------------------------------------------------------

def _command(commands, name, help_text, description, example, run):
    parser = commands.add_parser(name, help=help_text, description=description, epilog=f"example: {example}",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run, parser=parser)
    return parser


def _add_training_run_arguments(parser, checkpoint_every=True):
    parser.add_argument(*_flag("n_gpus"), type=_positive_int, default=1,
                        help="towers (data-parallel replicas): GPUs, or CPU devices without GPUs (default 1)")
    parser.add_argument("--precision", choices=["float32", "bfloat16", "float16"], default="float32",
                        help="the training steps' products and convolutions: float32 (default, exact), or mixed "
                             "precision in bfloat16 (CPUs with AMX or AVX-512 BF16, GPUs from Ampere) or float16 "
                             "(GPUs, with dynamic loss scaling); weights, optimizer, loss, evaluations and checkpoints "
                             "stay float32 (a run may continue in another precision)")
    parser.add_argument(*_flag("log_dir"), help="TensorBoard directory (default: --save_dir)")
    if checkpoint_every:
        parser.add_argument(*_flag("checkpoint_every"), type=_positive_int, default=1250,
                            help="batches between checkpoints (default 1250); one is always written at the end")
    cluster = parser.add_argument_group(
        "cluster", "Train as one worker of a cluster (every worker runs the same command with its own index); "
                   "without these flags, $TF_CONFIG describes the cluster when set. Run clusters on a trusted network "
                   "only: TensorFlow's servers have no authentication.")
    cluster.add_argument(*_flag("workers"), metavar="HOST:PORT,...", help="every worker's address; the first is the chief")
    cluster.add_argument(*_flag("worker_index"), type=_non_negative_int, help="this worker's position in --workers")
    cluster.add_argument(*_flag("worker_timeout"), type=_number(1, what="number of seconds"), default=600,
                         help="seconds to wait for the other workers, at start and at each batch, before the run "
                              "stops naming the ones that never came or are gone (default 600)")
    parser.add_argument(*_flag("keep_checkpoints"), type=_positive_int, default=2,
                        help="checkpoints kept in --save_dir, the newest, earlier runs' included (default 2)")
    parser.add_argument(*_flag("log_every"), type=_positive_int, default=100,
                        help="batches between progress lines and TensorBoard summaries, at most (default 100; "
                             "short runs log about 10 times)")


def _add_divergence_arguments(parser):
    from .training.divergence import DIVERGED_AFTER, MAX_ROLLBACKS, SPIKE_FACTOR, UNIFORM_MARGIN, WARMUP_BATCHES

    group = parser.add_argument_group(
        "divergence", f"A run has diverged when its loss is not finite, or is bad for {DIVERGED_AFTER} batches in a "
                      f"row after a warm-up of {WARMUP_BATCHES}: above ln({UNIFORM_MARGIN:g} x vocabulary size), worse "
                      f"than guessing uniformly, or a perplexity over {SPIKE_FACTOR:g} x its recent level. A checkpoint "
                      f"becomes the latest only once the next batch's loss is good: no checkpoint of diverged weights "
                      f"is kept.")
    group.add_argument(*_flag("on_divergence"), choices=["stop", "rollback"], default="stop",
                       help="stop (default: exit with an error naming the batch, the loss and the last good "
                            "checkpoint), or rollback: restore the last good checkpoint, skip the data that diverged "
                            "and continue (one machine only)")
    group.add_argument(*_flag("max_rollbacks"), type=_positive_int, default=MAX_ROLLBACKS,
                       help=f"with --on_divergence rollback: rollbacks at most, then stop (default {MAX_ROLLBACKS})")


def _add_training_commands(commands):
    from .core.options import ELMO_ORIGINAL

    lstm, cnn = ELMO_ORIGINAL["lstm"], ELMO_ORIGINAL["char_cnn"]
    train = _command(
        commands, "train", "train a new biLM (the original ELMo hyperparameters unless changed)",
        "Train a new biLM on sharded text (one whitespace-tokenized sentence per line) into --save_dir: "
        "checkpoints, options.json and TensorBoard events. Every model option defaults to the original ELMo "
        "model's. Refuses a --save_dir that has checkpoints (continue it with `bilm restart`, or --overwrite).",
        "bilm train --train_prefix 'data/train/*' --vocab_file vocab.txt --save_dir ckpt "
        "--lstm_dim 512 --projection_dim 128 --batch_size 32", _train)
    train.add_argument(*_flag("train_prefix"), required=True, help="glob of the training files (quote it)")
    train.add_argument(*_flag("vocab_file"), required=True, help="vocabulary: <S>, </S>, <UNK>, then tokens by "
                                                                 "descending count (see `bilm vocab`)")
    train.add_argument(*_flag("save_dir"), required=True, help="checkpoints and options.json go here")
    train.add_argument(*_flag("n_train_tokens"), type=_positive_int,
                       help="tokens per epoch (default: counted from the data)")
    train.add_argument(*_flag("n_epochs"), type=_positive_int, help=f"default {ELMO_ORIGINAL['n_epochs']}")
    train.add_argument(*_flag("batch_size"), type=_positive_int,
                       help=f"sentences streams per tower (default {ELMO_ORIGINAL['batch_size']})")
    train.add_argument(*_flag("unroll_steps"), type=_positive_int,
                       help=f"tokens per stream per batch: back-propagation length "
                            f"(default {ELMO_ORIGINAL['unroll_steps']})")
    train.add_argument("--dropout", type=_number(0, 1, "dropout rate"),
                       help=f"dropout rate (the share of units dropped, not a keep probability; "
                            f"default {ELMO_ORIGINAL['dropout']})")
    train.add_argument(*_flag("learning_rate"), type=_number(1e-12, what="learning rate"),
                       help="Adagrad learning rate (default 0.2)")
    train.add_argument(*_flag("n_negative_samples"), type=_positive_int,
                       help=f"sampled softmax negatives per batch, at most the vocabulary size "
                            f"(default {ELMO_ORIGINAL['n_negative_samples_batch']})")
    train.add_argument(*_flag("lstm_dim"), type=_positive_int, help=f"LSTM cell size (default {lstm['dim']})")
    train.add_argument(*_flag("projection_dim"), type=_positive_int,
                       help=f"token and LSTM output size (default {lstm['projection_dim']})")
    train.add_argument(*_flag("n_layers"), type=_positive_int, help=f"LSTM layers (default {lstm['n_layers']})")
    train.add_argument(*_flag("n_highway"), type=_non_negative_int,
                       help=f"highway layers (default {cnn['n_highway']})")
    train.add_argument(*_flag("char_embedding_dim"), type=_positive_int,
                       help=f"character embedding size (default {cnn['embedding']['dim']})")
    train.add_argument("--filters", type=_json_filters,
                       help=f"char CNN [width, n_filters] pairs as JSON (default {json.dumps(cnn['filters'])})")
    train.add_argument(*_flag("token_input"), action="store_true", help="a token-input model (no char CNN)")
    train.add_argument("--seed", type=int, help="seed the shard order, initialisation, dropout and sampling")
    train.add_argument("--overwrite", action="store_true",
                       help="start a new model in a save_dir that has checkpoints (they and the earlier TensorBoard "
                            "events are removed)")
    train.add_argument("--plan", action="store_true",
                       help="print what the run would do and stop (nothing is trained or written): parameters, tokens "
                            "per epoch, batches, memory (estimated, and measured on --plan_steps steps here), the step "
                            "time measured here and the time to the end, and the same at the README's GPU step times "
                            "(assumptions)")
    train.add_argument(*_flag("plan_steps"), type=_non_negative_int, default=3,
                       help="with --plan: training steps measured on this machine's devices, after a first one not "
                            "counted (default 3; 0: measure nothing)")
    _add_training_run_arguments(train)
    _add_divergence_arguments(train)

    restart = _command(
        commands, "restart", "continue training from the latest checkpoint of --save_dir",
        "Restore the latest intact checkpoint of --save_dir (weights, optimizer state, global step, tokens "
        "trained) and train the tokens left of the run's n_epochs x n_train_tokens. Progress is counted in "
        "tokens: with another --batch_size or --n_gpus the same tokens are trained in batches of the new size "
        "(more or fewer batches); --n_epochs or --n_train_tokens change the total. The vocabulary must be the "
        "run's (checked against the save directory's vocabulary.json). Checkpoints beyond --keep_checkpoints, "
        "earlier runs' included, are removed.",
        "bilm restart --train_prefix 'data/train/*' --vocab_file vocab.txt --save_dir ckpt", _restart)
    restart.add_argument(*_flag("train_prefix"), required=True, help="glob of the training files (quote it)")
    restart.add_argument(*_flag("vocab_file"), required=True, help="the vocabulary the model was trained with")
    restart.add_argument(*_flag("save_dir"), required=True, help="the save directory of the run")
    restart.add_argument(*_flag("n_train_tokens"), type=_positive_int, help="change the tokens per epoch")
    restart.add_argument(*_flag("n_epochs"), type=_positive_int, help="change the number of epochs")
    restart.add_argument(*_flag("batch_size"), type=_positive_int, help="change the streams per tower")
    _add_training_run_arguments(restart)
    _add_divergence_arguments(restart)

    finetune = _command(
        commands, "finetune", "fine-tune a pretrained biLM on new text into a new save directory",
        "Start from a training checkpoint (--from: a save directory of bilm or of the original library, or a "
        "downloaded checkpoint such as original-checkpoint; never written) or from a weight file (--options and "
        "--weights: the char CNN and LSTMs; the softmax is new, for --vocab_file). Train on --train_prefix, "
        "evaluate the held-out perplexity of --heldout_prefix every --eval_every batches, keep the best "
        "checkpoint (the latest of --save_dir at the end: `bilm dump-weights` exports it) and stop after "
        "--patience evaluations without improvement. The held-out text is read and checked before training. "
        "Interrupted (Ctrl-C, SIGTERM), it resumes with --resume. Defaults follow the original's advice for small "
        "corpora (under about 10 million tokens): tune briefly (1 epoch), watching held-out perplexity.",
        "bilm finetune --from original-checkpoint --save_dir tuned --train_prefix 'mine/train/*' "
        "--vocab_file vocab-2016-09-10.txt --heldout_prefix mine/heldout.txt", _finetune)
    finetune.add_argument("--from", dest="source", metavar="SAVE_DIR_OR_NAME",
                          help="the checkpoint to start from: a save directory (not while it is being trained) or a "
                               "downloaded checkpoint's name")
    finetune.add_argument("--options", help="with --weights: the options.json of a weight file to start from")
    finetune.add_argument("--weights", help="with --options: an HDF5 weight file to start from (a new softmax)")
    finetune.add_argument(*_flag("save_dir"), required=True, help="the new save directory")
    finetune.add_argument(*_flag("train_prefix"), required=True, help="glob of the new training files (quote it)")
    finetune.add_argument(*_flag("vocab_file"), required=True,
                          help="the checkpoint's vocabulary (with --weights: any vocabulary, for the new softmax)")
    finetune.add_argument(*_flag("heldout_prefix"), required=True, help="glob of held-out files of the new text")
    finetune.add_argument(*_flag("general_heldout"), metavar="PREFIX",
                          help="a second held-out set (e.g. lm1b-test, the benchmark's test set) also evaluated at "
                               "each evaluation, to see how much of the general ability the fine-tune loses (the "
                               "--heldout_prefix one alone chooses the best checkpoint)")
    finetune.add_argument(*_flag("n_epochs"), type=_positive_int, help="epochs at most (default 1)")
    finetune.add_argument(*_flag("n_train_tokens"), type=_positive_int,
                          help="tokens per epoch (default: counted from the data)")
    finetune.add_argument(*_flag("eval_every"), type=_positive_int,
                          help="batches between held-out evaluations (and checkpoints) (default 200)")
    finetune.add_argument("--patience", type=_positive_int,
                          help="evaluations without a lower held-out perplexity before stopping (default 3)")
    finetune.add_argument(*_flag("eval_batch_size"), type=_positive_int, default=64,
                          help="parallel token streams of the evaluation: the speed only, every held-out target is "
                               "scored once whatever it is (default 64)")
    finetune.add_argument(*_flag("softmax_only_batches"), type=_non_negative_int,
                          help="with --weights: first batches in which only the new softmax learns (default 0; a "
                               "warning when it covers the whole run)")
    finetune.add_argument(*_flag("batch_size"), type=_positive_int, help="streams per tower (default: the source's)")
    finetune.add_argument(*_flag("learning_rate"), type=_number(1e-12, what="learning rate"),
                          help="Adagrad learning rate (default: the source's; its accumulators are kept)")
    finetune.add_argument("--dropout", type=_number(0, 1, "dropout rate"), help="dropout rate (default: the source's)")
    finetune.add_argument(*_flag("n_negative_samples"), type=_positive_int,
                          help="sampled softmax negatives (default: the source's)")
    finetune.add_argument("--seed", type=int, help="seed the shard order, dropout and sampling")
    again = finetune.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true",
                       help="start afresh in a --save_dir that has checkpoints (they are removed)")
    again.add_argument("--resume", action="store_true",
                       help="continue the interrupted fine-tune of --save_dir from its latest checkpoint, with its "
                            "evaluations, best checkpoint and patience (finetune.json): --from/--weights and the "
                            "settings not given are the interrupted run's")
    _add_training_run_arguments(finetune, checkpoint_every=False)  # checkpoints follow the evaluations

    test = _command(
        commands, "test", "perplexity of the latest checkpoint on held-out data",
        "Evaluate the latest checkpoint of --save_dir on held-out text: full softmax, one token per stream per step "
        "as the original. Every target (each token and sentence end) is scored exactly once per direction, each "
        "sentence starting from the same LSTM states (those after a fixed warm-up text), so --batch_size changes "
        "only the speed. Prints the targets scored, the forward and backward perplexities (exp of the mean negative "
        "log-probability of the targets) and their average (the figure the paper quotes).",
        "bilm test --test_prefix heldout.txt --vocab_file vocab.txt --save_dir ckpt", _test)
    test.add_argument(*_flag("test_prefix"), required=True, help="glob of the held-out files")
    test.add_argument(*_flag("vocab_file"), required=True, help="the vocabulary the model was trained with")
    test.add_argument(*_flag("save_dir"), required=True, help="the save directory of the run")
    test.add_argument(*_flag("batch_size"), type=_positive_int, default=256,
                      help="parallel token streams (default 256): any number gives the same perplexity, it sets "
                           "only the speed")
    test.add_argument(*_flag("original_figure"), action="store_true",
                      help="reproduce the original's figure instead: states carried from sentence to sentence, the "
                           "tokens of the last, incomplete batch left out (how many is printed: with many streams "
                           "most of a small text), each batch weighted alike; it depends on --batch_size")

    dump = _command(
        commands, "dump-weights", "latest checkpoint -> HDF5 weight file (no softmax)",
        "Write the latest checkpoint of --save_dir as a weight file with the original's dataset names (loads in "
        "bilm and in AllenNLP), and optionally the options.json for inference (n_characters 262).",
        "bilm dump-weights --save_dir ckpt --outfile weights.hdf5 --options_outfile options.json", _dump_weights)
    dump.add_argument(*_flag("save_dir"), required=True, help="the save directory of the run")
    dump.add_argument("--outfile", required=True, help="the HDF5 weight file to write")
    dump.add_argument(*_flag("options_outfile"), help="also write options.json for inference here")
    add_output_arguments(dump, resume=False)

    vocab = _command(
        commands, "vocab", "build a vocabulary: <S>, </S>, <UNK>, then tokens by descending count",
        "Count the tokens of whitespace-tokenized text files and write a training vocabulary, in the order "
        "the sampled softmax assumes.",
        "bilm vocab data/train/*.txt --output vocab.txt --min-count 3", _vocab)
    vocab.add_argument("inputs", nargs="+", help="whitespace-tokenized text files")
    vocab.add_argument("--output", required=True, help="the vocabulary file to write")
    vocab.add_argument(*_flag("min_count"), type=_positive_int, default=1,
                       help="drop tokens seen fewer times (default 1)")
    vocab.add_argument(*_flag("max_size"), type=_positive_int,
                       help="at most this many entries, special tokens included")
    add_output_arguments(vocab, resume=False)


def build_parser():
    parser = argparse.ArgumentParser(prog="bilm", description="ELMo biLMs: embed text, train, export, download.")
    parser.add_argument("--version", action="version", version=f"bilm {__version__}")
    parser.add_argument("--quiet", action="store_true", help="log warnings only, no progress bars")
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's own messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    embed = _command(
        commands, "embed", "every biLM layer of every sentence of a text file -> HDF5",
        "Write one dataset per input line, keyed by its 0-based line number, of shape "
        "(n_layers + 1, n_tokens, 2 * projection_dim) as the original's dump_bilm_embeddings (or one layer "
        "with --layers), and a sentence_to_index record {line: index} as `allennlp elmo` (a sentence on "
        "several lines maps to the last). An interrupted job keeps what it computed: finish it with --resume; "
        "--resume on a complete output checks that this command made it (the output records its input and "
        "settings).",
        "bilm embed sentences.txt elmo.hdf5", _embed)
    embed.add_argument("input", help="text file, one sentence per line (whitespace-tokenized, or see --tokenize)")
    embed.add_argument("output", help="HDF5 file to write")
    add_model_arguments(embed)
    embed.add_argument(*_flag("state_mode"), choices=["warm", "zero", "stateful"], default="warm",
                       help="initial LSTM states: 'warm' (default) and 'zero' give each sentence the same start "
                            "(deterministic, batched by length); 'stateful' reproduces the original exactly "
                            "(one sentence at a time, states carried from line to line)")
    embed.add_argument(*_flag("batch_size"), type=_positive_int, default=64, help="sentences per batch (default 64)")
    embed.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N",
                       help="only lines whose index %% N == K, for N parallel jobs (then `bilm merge`)")
    _add_text_arguments(embed)
    embed.add_argument(*_flag("empty_lines"), choices=["error", "keep"], default="error",
                       help="an empty line is an error (default) or gets an empty dataset, as in the original")
    embed.add_argument("--layers", choices=["all", "top", "average", "mix"], default="all",
                       help="all layers, (n_layers + 1, n_tokens, 2P) per line as the original (default); or one "
                            "(n_tokens, 2P) array: the top layer, the average of the layers, or their mix")
    embed.add_argument(*_flag("mix_weights"), type=_floats, metavar="W0,W1,...",
                       help="with --layers mix (only): one weight per layer, used as given")
    embed.add_argument("--pool", choices=["mean", "max"],
                       help="one vector per line: the mean or max over its tokens (of each layer with --layers all)")
    embed.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                       help="the datasets' type: float32 (default) or float16 (half the size)")
    embed.add_argument("--precision", choices=["float32", "tf32", "bfloat16", "float16"], default="float32",
                       help="the computation: float32 (exact: the original's numbers on any GPU; default), tf32, "
                            "or bfloat16/float16 mixed precision (faster on GPUs with tensor cores). In float32 on "
                            "hardware with bfloat16 arithmetic, one line says how much faster bfloat16 measured on "
                            "this model (once per model and machine; silence it with --quiet or "
                            "BILM_NO_PRECISION_HINT=1)")
    embed.add_argument("--devices", metavar="gpu:0,gpu:1|cpu:N",
                       help="share the lines among several devices, one process each: GPUs by index (they must be "
                            "there), or N processes sharing the CPU cores; one output file, as one process's; "
                            "--resume needs as many devices")
    embed.add_argument("--ray", nargs="?", const="local", type=_ray_address, metavar="ADDRESS",
                       help="compute on a Ray cluster (needs `pip install 'ray[data]'`): no ADDRESS or 'local' starts "
                            "Ray on this machine, listening on 127.0.0.1 only; 'auto' or ray://HOST:PORT joins a running "
                            "cluster (trusted network "
                            "only). The output is written here, as without --ray")
    embed.add_argument(*_flag("ray_workers"), type=_positive_int, metavar="N",
                       help="with --ray: Ray actors, one model each (default: one per GPU of the cluster, else one "
                            "per machine sharing its CPUs)")
    add_output_arguments(embed)

    merge = _command(
        commands, "merge", "present `bilm embed --shard` outputs as one HDF5 file (links)",
        "Write an HDF5 file whose datasets are external links to the datasets of the shard files (no copy; keep "
        "the shards beside it), with their sentence_to_index records merged (the bytes one process writes). "
        "Shards that share a dataset are refused.",
        "bilm merge elmo.hdf5 elmo.0.hdf5 elmo.1.hdf5", _merge)
    merge.add_argument("output", help="the HDF5 file to write")
    merge.add_argument("shards", nargs="+", help="the outputs of `bilm embed --shard K/N`")
    add_output_arguments(merge, resume=False)

    tokens = _command(
        commands, "dump-token-embeddings", "context-independent vectors of a vocabulary -> HDF5 (token input)",
        "Run every token of --vocab through the char CNN once; the output (dataset 'embedding') is the "
        "embedding_weight_file of a token-input BidirectionalLanguageModel.",
        "bilm dump-token-embeddings token_embeddings.hdf5 --vocab vocab.txt", _dump_token_embeddings)
    tokens.add_argument("output", help="HDF5 file to write (dataset 'embedding')")
    add_model_arguments(tokens)
    add_output_arguments(tokens)

    export = _command(
        commands, "export", "write a TensorFlow SavedModel with TF Hub ELMo-like signatures (for TF2, eager)",
        "Signatures: 'default' (sentences, split on any Unicode whitespace as `bilm embed` splits a line -> elmo, "
        "default) and 'tokens' (padded tokens + sequence_len, one length in [0, T] per row, checked -> word_emb, "
        "lstm_outputs1.., elmo, default); an empty batch gives empty outputs. Load it with "
        "tf.saved_model.load(DIR).signatures['default'](tf.constant([...])).",
        "bilm export elmo_savedmodel --model default", _export)
    export.add_argument("output", help="directory to write")
    add_model_arguments(export, vocab=False)
    export.add_argument(*_flag("state_mode"), choices=["warm", "zero"], default="warm",
                        help="the LSTM states every sentence starts from (default: warm)")
    add_output_arguments(export, resume=False)

    download = _command(
        commands, "download", "download a published pretrained model into the cache (then use it with --model NAME)",
        "Models: small, medium, original, original-5.5b (AllenNLP's English ELMo models), original-checkpoint (the "
        "original's training checkpoint, to fine-tune from), lm1b (the 1 Billion Word Benchmark, the paper's "
        "training data: its 1.8 GB archive is streamed into the cache, checked against the published counts of "
        "files and sentences, and its files are then found by name: --train_prefix lm1b, --test_prefix "
        "lm1b-heldout (the 50 held-out files) or lm1b-test (news.en.heldout-00000-of-00050, the benchmark's test "
        "set), --vocab_file lm1b (vocab-2016-09-10.txt)), plus any listed in the JSON file named by "
        "$BILM_CATALOGUE (with a SHA-256 for each file). Cache: $BILM_CACHE or ~/.cache/bilm. A partial download "
        "resumes; a second download of the same model waits for the first. Each file is checked against the "
        "catalogue's SHA-256 and the size the server announces (one neither can check is refused), and against "
        "the size and SHA-256 recorded on its first download afterwards.",
        "bilm download small && bilm embed sentences.txt elmo.hdf5 --model small", _download)
    download.add_argument("name", nargs="?", help="model name (omit, or --list, to list them)")
    download.add_argument("--list", action="store_true", help="list the catalogue")
    download.add_argument(*_flag("cache_dir"), help="cache directory (default: $BILM_CACHE or ~/.cache/bilm)")
    download.add_argument(*_flag("from_file"), metavar="ARCHIVE",
                          help="lm1b: unpack this copy of the benchmark's archive (checked against the catalogue's "
                               "size and SHA-256) instead of downloading it")

    sample = _command(
        commands, "sample-corpus", "write a small public-domain English corpus to try training on",
        "Write DIRECTORY/corpus.txt (2,000 sentences) and DIRECTORY/heldout.txt (200 sentences): tokenized "
        "public-domain English from the default model's training corpus (see the README).",
        "bilm sample-corpus . && bilm vocab corpus.txt --output vocab.txt", _sample_corpus)
    sample.add_argument("directory", help="where to write corpus.txt and heldout.txt (created)")
    sample.add_argument("--overwrite", action="store_true", help="replace existing files")

    _add_training_commands(commands)
    for command in commands.choices.values():  # also after the command
        command.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="log warnings only, no progress bars")
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="also show TensorFlow's own messages (start-up lines, INFO logs)")
    return parser


# -- running -------------------------------------------------------------------------------------------

class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that jobs save what they completed, as on Ctrl-C."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _handle_sigterm(handler):
    """Install a SIGTERM handler (main thread only); return the previous one."""
    if handler is None:
        return None
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        return None


def _configure(args):
    """Logging, progress bars, messages in flags, and oneDNN (before TensorFlow is imported)."""
    level = logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    logging.getLogger("bilm").setLevel(level)
    if args.quiet:
        os.environ["TQDM_DISABLE"] = "1"
    # oneDNN's CPU kernels: TensorFlow turns them on by default only on some CPUs; on the others
    # (AVX2-only ones) they double the matrix-product rate. Numbers agree to the conformance bound.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    speak_in_flags(True)


def _parse(parser, argv):
    """The arguments; an unknown flag is a usage error of its subcommand, with the nearest flag."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = getattr(args, "parser", parser)
        flags = [f for action in command._actions for f in action.option_strings]
        near = difflib.get_close_matches(unknown[0], flags, n=1) if unknown[0].startswith("-") else []
        command.error(f"unrecognized arguments: {' '.join(unknown)}{f' (did you mean {near[0]}?)' if near else ''}")
    return args


def main(argv=None):
    """Run the ``bilm`` command; returns the exit status (0, 2 on an error, 130/143 when interrupted)."""
    previous = None
    try:
        previous = _handle_sigterm(_on_sigterm)  # inside: a signal from here on ends in one line
        args = _parse(build_parser(), argv)
        _configure(args)
        if getattr(args, "model_arguments", False):
            resolve_model_arguments(args.parser, args)
        resolve_data_names(args)
        if args.command == "embed" and not (args.overwrite or args.resume):
            check_output(args.output)  # at once, not after TensorFlow's seconds of start-up
        if args.command not in ("download", "sample-corpus", "vocab"):  # the others import TensorFlow
            if _in_a_cluster(args) and not args.verbose:
                # When a worker stops, TensorFlow's C++ logs an error for every collective it aborts on the
                # others (a hundred lines): the command says it in one line.
                os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
            start_tensorflow(args.verbose)
        args.run(args)
    except (BilmError, OSError) as err:
        note = getattr(err, "bilm_note", None)
        print(f"bilm: error: {err}{'; ' + note if note else ''}", file=sys.stderr)
        return _stopped(EXIT_ERROR)
    except KeyboardInterrupt as err:
        note = getattr(err, "bilm_note", None) or "nothing was left half-written"
        what = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
        print(f"bilm: {what}; {note}", file=sys.stderr)
        return _stopped(EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED)
    finally:
        speak_in_flags(False)
        _handle_sigterm(previous)
    return 0


def _in_a_cluster(args):
    """Whether a training command runs as a worker of a cluster (--workers, --worker_index or $TF_CONFIG)."""
    return hasattr(args, "worker_timeout") and bool(args.workers or args.worker_index is not None
                                                    or os.environ.get("TF_CONFIG"))


def _stopped(status):
    """``status``; or, when a TensorFlow call that waited for other workers was given up on (it never
    returns, and TensorFlow's clean-up would wait for it), end the process now with it."""
    cluster = sys.modules.get("bilm.training.cluster")  # imported only by training commands
    if cluster is not None and cluster.calls_left_running():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
