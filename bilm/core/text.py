"""Reading text: lines of a file, sentences of a dataset, tokenization.

Every text ``bilm`` reads (vocabularies, corpora, datasets to embed) goes through
``read_text_lines``: line by line, in a given encoding (UTF-8 by default), with an
error naming the file and line for bytes that are not in that encoding.
"""
import codecs
import logging
import os
import re

from ..errors import InputError, flag

logger = logging.getLogger(__name__)

EMPTY_LINE_CHOICES = ("error", "keep")
ENCODING_ERROR_CHOICES = ("strict", "replace")
TOKENIZERS = ("moses",)
_LISTED = 5  # line numbers shown in a message
_UNTOKENIZED_SAMPLE = 1000  # lines looked at for untokenized text
# A token that ends a word with attached punctuation ("world!", "cat,"), as untokenized text has.
_ATTACHED = re.compile(r"\w[,;:!?\"]$|\w\.$")


def check_encoding(encoding):
    try:
        return codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise InputError(f"{flag('encoding', '--encoding')} is {encoding!r}; expected a Python codec name such "
                         f"as utf-8 or latin-1") from None


def check_text_file(path, what="text file", error=InputError):
    """Raise ``error`` unless ``path`` is a file: "not found", or "is a directory"."""
    if os.path.isdir(path):
        raise error(f"{path}: is a directory; expected a file ({what})")
    if not os.path.isfile(path):
        raise error(f"{path}: {what} not found")


def read_text_lines(path, what="text file", error=InputError, encoding_errors="strict", hint="", encoding="utf-8",
                    start=(0, 1)):
    """Yield ``(line number from 1, line)`` of a text file, read line by line.

    A missing file or a line that is not in ``encoding`` (with ``encoding_errors``
    ``"strict"``) raises ``error`` naming the file and line; ``hint`` is appended to
    that message. A UTF-8 byte-order mark at the start is dropped. ``start``:
    (byte offset, its line number) of the line to begin at, to read part of a file.
    """
    check_text_file(path, what, error)
    codec = check_encoding(encoding)
    label = "UTF-8" if codec == "utf-8" else encoding
    offset, first = start
    with open(path, "rb") as fin:
        fin.seek(offset)
        for line_number, raw in enumerate(fin, start=first):
            name = "utf-8-sig" if line_number == 1 and codec == "utf-8" else codec
            try:
                yield line_number, raw.decode(name, encoding_errors)
            except UnicodeDecodeError as err:
                raise error(f"{path}, line {line_number}: not valid {label} ({err.reason} at byte {err.start})"
                            f"{hint}") from None


def counted(n, noun):
    """'1 sentence', '6,000 sentences' for a message."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def listed(numbers, total=None):
    """'lines 3, 9, 12 and 4 more' for a message."""
    total = len(numbers) if total is None else total
    shown = ", ".join(str(n) for n in numbers[:_LISTED])
    more = f" and {total - _LISTED} more" if total > _LISTED else ""
    return f"line{'s' if total > 1 else ''} {shown}{more}"


class Tokenizer:
    """Splits a line into tokens: on whitespace, or with the Moses tokenizer (``sacremoses``).

    The published ELMo models were trained on the 1B Word Benchmark, tokenized in the
    Moses style; ``"moses"`` splits text that way (punctuation apart, ``it 's``).
    """

    def __init__(self, kind=None):
        self.kind = kind
        self._moses = None
        if kind is None:
            return
        if kind not in TOKENIZERS:
            raise InputError(f"{flag('tokenize', '--tokenize')} is {kind!r}; expected one of {TOKENIZERS} or None")
        try:
            from sacremoses import MosesTokenizer
        except ImportError:
            raise InputError(f"{flag('tokenize=' + repr(kind), '--tokenize ' + kind)} needs the sacremoses package: "
                             f"pip install sacremoses (in bilm's clone: pip install '.[tokenize]')") from None
        self._moses = MosesTokenizer(lang="en")

    def __call__(self, line):
        if self._moses is None:
            return line.split()
        return self._moses.tokenize(line.strip(), escape=False)


class DatasetReader:
    """The sentences of a dataset file: one sentence per line, split by a ``Tokenizer``.

    Args:
        path: the text file.
        shard: ``(k, n)``: only lines whose 0-based index % n == k.
        encoding, encoding_errors: see ``read_text_lines`` (``"strict"`` or ``"replace"``).
        empty_lines: ``"error"`` (an empty or whitespace-only line is an error) or
            ``"keep"`` (a sentence of no tokens, as in the original).
        tokenize: None (split on whitespace: the file is tokenized) or ``"moses"``.

    ``scan()`` reads the whole file once and raises one error for every problem found
    (naming how many lines and the first few); iterating yields
    ``(line index, line, tokens)`` for the lines of the shard.
    """

    def __init__(self, path, shard=(0, 1), encoding="utf-8", encoding_errors="strict", empty_lines="error",
                 tokenize=None):
        k, n = shard
        if not 0 <= k < n:
            raise InputError(f"{flag('shard', '--shard')} is {k} of {n}; expected 0 <= k < n")
        if encoding_errors not in ENCODING_ERROR_CHOICES:
            raise InputError(f"encoding_errors is {encoding_errors!r}; expected one of {ENCODING_ERROR_CHOICES}")
        if empty_lines not in EMPTY_LINE_CHOICES:
            raise InputError(f"empty_lines is {empty_lines!r}; expected one of {EMPTY_LINE_CHOICES}")
        self.path, self.shard = path, shard
        self.encoding = check_encoding(encoding)
        self.encoding_errors, self.empty_lines = encoding_errors, empty_lines
        self.tokenizer = Tokenizer(tokenize)

    def _lines(self):
        hint = (f"; pass the file's encoding ({flag('encoding=' + repr('latin-1'), '--encoding latin-1')}, for "
                f"example), or {flag('encoding_errors=' + repr('replace'), '--encoding-errors replace')} to replace "
                f"the bad bytes")
        return read_text_lines(self.path, "input file", InputError, self.encoding_errors, hint, self.encoding)

    def __iter__(self):
        k, n = self.shard
        for line_number, line in self._lines():
            if (line_number - 1) % n == k:
                yield line_number - 1, line.strip(), self.tokenizer(line)

    def scan(self):
        """Read the whole file once: return the number of sentences in the shard; raise on empty lines.

        Warns (once) when the text looks untokenized and no tokenizer was asked for.
        """
        k, n = self.shard
        count, empty, attached, looked, line_number = 0, [], [], 0, 0
        for line_number, line in self._lines():
            tokens = line.split()
            if not tokens:
                empty.append(line_number)
            elif self.tokenizer.kind is None and looked < _UNTOKENIZED_SAMPLE:
                looked += 1
                found = next((t for t in tokens if _ATTACHED.search(t) and not _abbreviation(t)), None)
                if found is not None:
                    attached.append((line_number, found))
            count += (line_number - 1) % n == k
        if empty and self.empty_lines == "error":
            raise InputError(
                f"{self.path}: {len(empty)} empty line{'s' if len(empty) > 1 else ''} ({listed(empty)}); expected "
                f"a sentence on every line (pass {flag('empty_lines=' + repr('keep'), '--empty-lines keep')} to write an "
                f"empty dataset for each)")
        if line_number == 0:
            logger.warning("%s: empty file; the output holds no sentences", self.path)
        if looked and len(attached) >= max(1, looked // 5):
            line_number, token = attached[0]
            logger.warning(
                "%s: %d of the first %d lines look untokenized (punctuation attached to words, e.g. %r on line %d); "
                "the models read whitespace-separated tokens as in their training text (the published ones: "
                "Moses-tokenized): pass %s, or tokenize the file first",
                self.path, len(attached), looked, token, line_number, flag("tokenize='moses'", "--tokenize moses"))
        return count


def _abbreviation(token):
    """'Mr.', 'U.S.', 'etc.': a period that tokenized text keeps attached."""
    return token.endswith(".") and (len(token) <= 4 or "." in token[:-1])
