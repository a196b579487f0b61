#!/usr/bin/env python3
"""Build the default English training corpus for ``bilm`` from Debian packages.

The corpus is assembled from public-domain English texts that Debian ships as
SWORD modules (see ``tools/CORPUS.md`` for licences and install commands)::

    apt-get install sword-comm-tdavid sword-comm-mhcc sword-text-web

=================  ==================  ==========================================
Debian package     SWORD module        text
=================  ==================  ==========================================
sword-comm-tdavid  TDavid              C. H. Spurgeon, *The Treasury of David*
sword-comm-mhcc    MHCC                M. Henry, *Concise Commentary on the Bible*
sword-text-web     engWEB2015eb        *World English Bible* (with Deuterocanon)
=================  ==================  ==========================================

The script finds the installed modules (``/usr/share/sword`` by default),
decompresses them with ``zlib`` (no SWORD library needed), turns the OSIS
markup into plain paragraphs (dropping headings, footnotes, cross-references
and chapter-outline tables), splits paragraphs into sentences, tokenizes each
sentence with a deterministic Penn-style regex tokenizer (case is kept) and
writes::

    OUTDIR/train/shard_000.txt ...   one sentence per line, tokens separated by
                                     single spaces, 100,000 lines per shard,
                                     sentences shuffled with a fixed seed
    OUTDIR/heldout/heldout.txt       held-out sentences, in document order
    OUTDIR/manifest.json             sources, package versions and counts

Held-out rule: the paragraphs that survive cleaning are numbered 0, 1, 2, ...
across all sources in a fixed order; every paragraph whose number is a
multiple of 100 goes to the held-out split (about 1% of the text).  Held-out
text therefore comes in whole paragraphs, never as single sentences
interleaved with training sentences of the same paragraph.

The output depends only on the installed package versions, the options and
numpy's legacy ``RandomState`` stream (which numpy keeps fixed), so the same
inputs give byte-identical files.

Usage::

    python tools/prepare_corpus.py OUTDIR [--max-tokens N] [--overwrite]
        [--sword-root DIR] [--seed S] [--shard-lines L]

Only the standard library and numpy are used.
"""

import argparse
import html
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import unicodedata
import zlib

import numpy as np

LOG = logging.getLogger("prepare_corpus")

#: (SWORD module name, Debian package) in the fixed order they are read.
SOURCES = (
    ("TDavid", "sword-comm-tdavid"),
    ("MHCC", "sword-comm-mhcc"),
    ("engWEB2015eb", "sword-text-web"),
)

#: Where SWORD modules are looked for when ``--sword-root`` is not given.
DEFAULT_SWORD_ROOTS = ("/usr/share/sword", "/usr/local/share/sword")

#: Every paragraph whose running number is a multiple of this is held out.
HELDOUT_EVERY = 100

DEFAULT_SHARD_LINES = 100000
DEFAULT_SEED = 1


# ---------------------------------------------------------------------------
# Reading SWORD modules
# ---------------------------------------------------------------------------

def parse_sword_conf(path):
    """Parse a SWORD ``mods.d/*.conf`` file.

    Returns ``(module_name, {key: value})``; for repeated keys the first value
    is kept and continuation lines (ending in a backslash) are joined.
    """
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().splitlines()
    name = None
    conf = {}
    key = None
    for line in lines:
        if name is None:
            match = re.match(r"\s*\[(.+)\]\s*$", line)
            if match:
                name = match.group(1)
            continue
        if key is not None and conf[key].endswith("\\"):
            conf[key] = conf[key][:-1] + line
            continue
        key = None
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            k = k.strip()
            if k not in conf:
                conf[k] = v.strip()
                key = k
    return name, conf


def find_module(module, sword_roots):
    """Return ``(sword_root, conf)`` of the first root that has ``module``."""
    for root in sword_roots:
        mods_d = os.path.join(root, "mods.d")
        if not os.path.isdir(mods_d):
            continue
        for fname in sorted(os.listdir(mods_d)):
            if not fname.endswith(".conf"):
                continue
            name, conf = parse_sword_conf(os.path.join(mods_d, fname))
            if name is not None and name.lower() == module.lower():
                return root, conf
    return None, None


def _index_entries(idx, entry_size):
    """Unpack a verse index (``*.?zv``): (block, offset, size) per key."""
    fmt = "<III" if entry_size == 12 else "<IIH"
    return [struct.unpack_from(fmt, idx, i) for i in range(0, len(idx), entry_size)]


def _valid_index(idx, entry_size, block_table):
    """True if ``idx`` parses with ``entry_size`` and points inside blocks."""
    if len(idx) % entry_size:
        return False
    for block, offset, size in _index_entries(idx, entry_size):
        if size == 0:
            continue
        if block >= len(block_table) or offset + size > block_table[block][2]:
            return False
    return True


def read_module_entries(data_dir, declared_driver):
    """Yield the distinct, non-empty entries of a zText/zCom module in order.

    A compressed SWORD module stores, per testament (``ot``/``nt``), a block
    table ``?zs`` (offset, compressed size, uncompressed size), the
    zlib-compressed blocks ``?zz`` and a key index ``?zv`` giving
    (block, offset, size) for every verse key in canonical order.  The ``?zv``
    entries are 10 bytes (zText/zCom) or 12 bytes (zText4/zCom4); the width
    is checked against the data because a driver name and its files can
    disagree.  Commentaries link several keys to one text; such repeats are
    returned only once.
    """
    for testament in ("ot", "nt"):
        candidates = sorted(
            f for f in os.listdir(data_dir)
            if re.fullmatch(testament + r"\.[a-z]zs", f))
        if not candidates:
            continue
        base = os.path.join(data_dir, candidates[0][:-1])  # e.g. ".../ot.bz"
        with open(base + "s", "rb") as fh:
            table_bytes = fh.read()
        with open(base + "z", "rb") as fh:
            blob = fh.read()
        with open(base + "v", "rb") as fh:
            idx = fh.read()
        if not table_bytes or not idx:
            continue
        block_table = [struct.unpack_from("<III", table_bytes, i)
                       for i in range(0, len(table_bytes) - 11, 12)]
        preferred = 12 if declared_driver.endswith("4") else 10
        for entry_size in (preferred, 22 - preferred):
            if _valid_index(idx, entry_size, block_table):
                break
        else:
            raise ValueError("cannot parse SWORD index %sv" % base)
        if entry_size != preferred:
            LOG.debug("%sv: %d-byte index entries (driver says %s)",
                      base, entry_size, declared_driver)
        cache = {}
        seen = set()
        for block, offset, size in _index_entries(idx, entry_size):
            if size == 0 or (block, offset, size) in seen:
                continue
            seen.add((block, offset, size))
            if block not in cache:
                cache.clear()  # keys run through the blocks in order: keep one
                start, csize, _ = block_table[block]
                cache[block] = zlib.decompress(blob[start:start + csize])
            yield cache[block][offset:offset + size].decode("utf-8", "replace")


# ---------------------------------------------------------------------------
# OSIS markup -> paragraphs
# ---------------------------------------------------------------------------

#: Elements whose content is not running text: headings, footnotes,
#: cross-references, variant readings, speaker labels, outline tables.
_DROP_ELEMENT = re.compile(
    r"<(title|note|table|rdg|speaker|catchWord|figure)\b[^>]*?(?<!/)>.*?</\1\s*>",
    re.S)
#: Tags that end a paragraph-like block (``div`` milestones of type
#: ``x-milestone`` mark verse starts inside paragraphs and are not blocks).
_BLOCK_TAG = re.compile(
    r"<(?:/?(?:div|chapter|lg|list|item|p|head|table|row|cell)\b"
    r"|lb\b[^>]*type=\"x-p\")[^>]*>")
_MILESTONE_DIV = re.compile(r"<div\b[^>]*type=\"x-milestone\"[^>]*>")
_LINE_TAG = re.compile(r"</?(?:l|lb)\b[^>]*>")
_ANY_TAG = re.compile(r"<[^>]*>")
_BLOCK_SEP = "\x00"


def osis_to_paragraphs(osis):
    """Split OSIS text into plain-text paragraphs (markup removed)."""
    text = _DROP_ELEMENT.sub(" ", osis)
    text = _MILESTONE_DIV.sub("", text)
    text = _BLOCK_TAG.sub(_BLOCK_SEP, text)
    text = _LINE_TAG.sub(" ", text)   # poetry lines: a sentence may span them
    text = _ANY_TAG.sub("", text)     # inline: w, hi, q, reference, seg, ...
    for para in text.split(_BLOCK_SEP):
        para = normalize_text(html.unescape(para))
        if para:
            yield para


_CHAR_MAP = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u02bc": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
    "\u00ab": '"', "\u00bb": '"',
    "\u2026": "...",
    "\u00a0": " ", "\u2009": " ", "\u200a": " ", "\u2002": " ", "\u2003": " ",
    "\u200b": "", "\u200c": "", "\u200d": "", "\ufeff": "", "\u00ad": "",
}
_CHAR_TABLE = str.maketrans(_CHAR_MAP)


def normalize_text(text):
    """NFC-normalize, unify quotes/apostrophes and collapse whitespace."""
    text = unicodedata.normalize("NFC", text).translate(_CHAR_TABLE)
    text = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(text.split())


# ---------------------------------------------------------------------------
# Sentence splitting and tokenization
# ---------------------------------------------------------------------------

#: Words that take an abbreviation period and do not end a sentence.
ABBREVIATIONS = frozenset("""
    Mr Mrs Messrs Dr St Rev Revd Prof Bp Abp Esq Jun Sen Sr Jr Capt Col Gen Lt
    viz ver vers vs vv ch chap chaps cap vol vols p pp ed edit edn cf comp
    ib ibid id sq seq ff fol ll lib sect art no Nos
    Ps Psa Psal Gn Ex Exod Lev Num Deut Josh Judg Sam Kgs Chron Neh Esth Prov
    Eccl Eccles Cant Isa Jer Lam Ezek Dan Hos Obad Mic Nah Hab Zeph Hag Zech
    Mal Matt Mk Lk Jn Rom Cor Gal Eph Phil Thess Tim Tit Philem Heb Jas Pet
    Apoc Lat Gr Chald Syr Sept Vulg Targ Arab Eng Germ Fr Ital Span
""".split())

#: Single capital letters that are words rather than initials.
_NOT_INITIALS = frozenset("IO")

#: Candidate sentence ends: terminal punctuation, optional closing quotes or
#: brackets, then whitespace and an (optionally quoted) capital or digit.
_SENT_END = re.compile(r"[.!?]+[\"')\]]*(?=\s+[\"'(\[]*[A-Z0-9])")
_LAST_WORD = re.compile(r"([\w.]+)$")


def _is_abbreviation(word):
    word = word.rstrip(".")
    return (word in ABBREVIATIONS
            or (len(word) == 1 and word.isupper() and word not in _NOT_INITIALS)
            or re.fullmatch(r"(?:[A-Za-z]\.)+[A-Za-z]", word) is not None)


def split_sentences(paragraph):
    """Split a normalized paragraph into sentence strings."""
    sentences = []
    start = 0
    for match in _SENT_END.finditer(paragraph):
        if paragraph[match.start()] == ".":
            before = _LAST_WORD.search(paragraph, 0, match.start())
            if before and _is_abbreviation(before.group(1)):
                continue
        sentences.append(paragraph[start:match.end()].strip())
        start = match.end()
    sentences.append(paragraph[start:].strip())
    return [s for s in sentences if s]


_TOKEN = re.compile(r"""
      \.\.\.+                        # ellipsis
    | --+                            # double dash
    | (?:[A-Za-z]\.){2,}             # i.e. e.g. A.D.
    | \d+(?:[.,:\u2013-]\d+)+        # 1,000  3.5  5:20  3-5
    | [^\W_]+(?:['-][^\W_]+)*        # words, with inner hyphens/apostrophes
    | \S                             # any other single character
""", re.X)
_NEGATION = re.compile(r"(?i)^(.+)(n't)$")
_CLITIC = re.compile(r"(?i)^(.+)('(?:s|re|ve|ll|d|m))$")


def tokenize(sentence):
    """Penn-style tokens of a sentence; case is kept.

    Punctuation is split from words, ``n't`` and the clitics ``'s 're 've
    'll 'd 'm`` are split off, and abbreviations (``Mr.``, initials) keep
    their period unless it ends the sentence.
    """
    raw = _TOKEN.findall(sentence)
    tokens = []
    i = 0
    while i < len(raw):
        tok = raw[i]
        # "Mr" "." -> "Mr." unless the period is the sentence's last token
        if i + 2 < len(raw) and raw[i + 1] == "." and _is_abbreviation(tok):
            tokens.append(tok + ".")
            i += 2
            continue
        match = _NEGATION.match(tok) or _CLITIC.match(tok)
        if match:
            tokens.extend(match.groups())
        else:
            tokens.append(tok)
        i += 1
    return tokens


def keep_sentence(tokens):
    """Keep sentences with >= 2 words, one of them lower-case.

    This drops verse labels ("Verse 1."), headings left in the running text
    and stray interjections such as "Selah.".
    """
    words = [t for t in tokens if any(c.isalpha() for c in t)]
    return len(words) >= 2 and any(t.islower() for t in words)


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------

def dpkg_version(package):
    """Installed Debian version of ``package`` (or None outside dpkg)."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True, text=True, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


def locate_sources(sword_roots):
    """Find every module of SOURCES: list of (module, package, root, conf)."""
    located = []
    for module, package in SOURCES:
        root, conf = find_module(module, sword_roots)
        if conf is None:
            raise SystemExit(
                "SWORD module %s not found under %s; install it with "
                "'apt-get install %s' (or pass --sword-root)"
                % (module, ", ".join(sword_roots), package))
        if conf.get("CompressType", "").upper() != "ZIP":
            raise SystemExit("module %s: unsupported CompressType %r"
                             % (module, conf.get("CompressType")))
        located.append((module, package, root, conf))
    return located


def iter_paragraphs(located):
    """Yield ``(module, tokenized sentences)`` per kept paragraph, in order."""
    for module, _, root, conf in located:
        data_dir = os.path.normpath(os.path.join(root, conf["DataPath"]))
        LOG.info("reading %s (%s) from %s", module, conf.get("Description", ""),
                 data_dir)
        osis = "\n".join(read_module_entries(data_dir, conf.get("ModDrv", "")))
        for para in osis_to_paragraphs(osis):
            sentences = [tokenize(s) for s in split_sentences(para)]
            sentences = [s for s in sentences if keep_sentence(s)]
            if sentences:
                yield module, sentences


def source_info(located):
    """Provenance of each source, for the manifest."""
    return [{
        "module": module,
        "debian_package": package,
        "debian_version": dpkg_version(package),
        "module_version": conf.get("Version"),
        "description": conf.get("Description"),
        "distribution_license": conf.get("DistributionLicense"),
    } for module, package, _, conf in located]


class SplitStats:
    """Sentence, token and type counts of one split."""

    def __init__(self):
        self.sentences = 0
        self.tokens = 0
        self.counts = {}

    def add(self, tokens):
        self.sentences += 1
        self.tokens += len(tokens)
        for tok in tokens:
            self.counts[tok] = self.counts.get(tok, 0) + 1

    def as_dict(self):
        return {"sentences": self.sentences, "tokens": self.tokens,
                "types": len(self.counts)}


def prepare_outdir(outdir, overwrite):
    if os.path.isdir(outdir) and os.listdir(outdir):
        if not overwrite:
            raise SystemExit("%s exists and is not empty (use --overwrite)" % outdir)
        for sub in ("train", "heldout"):
            shutil.rmtree(os.path.join(outdir, sub), ignore_errors=True)
        manifest = os.path.join(outdir, "manifest.json")
        if os.path.exists(manifest):
            os.remove(manifest)
    elif os.path.exists(outdir) and not os.path.isdir(outdir):
        raise SystemExit("%s exists and is not a directory" % outdir)
    os.makedirs(os.path.join(outdir, "train"), exist_ok=True)
    os.makedirs(os.path.join(outdir, "heldout"), exist_ok=True)


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")


def build(outdir, max_tokens=None, sword_roots=DEFAULT_SWORD_ROOTS,
          seed=DEFAULT_SEED, shard_lines=DEFAULT_SHARD_LINES, overwrite=False):
    """Write the corpus to ``outdir`` and return the manifest dict."""
    located = locate_sources(sword_roots)
    prepare_outdir(outdir, overwrite)

    train, heldout = [], []
    stats = {"train": SplitStats(), "heldout": SplitStats()}
    per_source = {m: {"paragraphs": 0, "sentences": 0, "tokens": 0}
                  for m, _ in SOURCES}
    n_par = 0
    total = 0
    for module, sentences in iter_paragraphs(located):
        split = "heldout" if n_par % HELDOUT_EVERY == 0 else "train"
        n_par += 1
        for tokens in sentences:
            (heldout if split == "heldout" else train).append(" ".join(tokens))
            stats[split].add(tokens)
            total += len(tokens)
        src = per_source[module]
        src["paragraphs"] += 1
        src["sentences"] += len(sentences)
        src["tokens"] += sum(len(t) for t in sentences)
        if max_tokens is not None and total >= max_tokens:
            LOG.info("reached --max-tokens %d after %d paragraphs", max_tokens, n_par)
            break

    order = np.random.RandomState(seed).permutation(len(train))
    shards = []
    for k, start in enumerate(range(0, len(train), shard_lines)):
        name = "shard_%03d.txt" % k
        write_lines(os.path.join(outdir, "train", name),
                    (train[i] for i in order[start:start + shard_lines]))
        shards.append(name)
    write_lines(os.path.join(outdir, "heldout", "heldout.txt"), heldout)

    oov = sum(c for t, c in stats["heldout"].counts.items()
              if t not in stats["train"].counts)
    manifest = {
        "sources": source_info(located),
        "options": {"max_tokens": max_tokens, "seed": seed,
                    "shard_lines": shard_lines, "heldout_every": HELDOUT_EVERY},
        "paragraphs": n_par,
        "per_source": per_source,
        "train": dict(stats["train"].as_dict(), shards=shards),
        "heldout": dict(stats["heldout"].as_dict(),
                        oov_tokens_vs_train=oov),
    }
    with open(os.path.join(outdir, "manifest.json"), "w", encoding="utf-8",
              newline="\n") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
        fh.write("\n")

    for module, src in per_source.items():
        LOG.info("source %-13s paragraphs=%d sentences=%d tokens=%d",
                 module, src["paragraphs"], src["sentences"], src["tokens"])
    for split in ("train", "heldout"):
        s = stats[split]
        LOG.info("%-7s sentences=%d tokens=%d types=%d",
                 split, s.sentences, s.tokens, len(s.counts))
    if stats["heldout"].tokens:
        LOG.info("heldout tokens unseen in train: %d (%.2f%%)",
                 oov, 100.0 * oov / stats["heldout"].tokens)
    LOG.info("wrote %d train shard(s) and heldout/heldout.txt to %s",
             len(shards), outdir)
    return manifest


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", help="output directory (created)")
    parser.add_argument("--max-tokens", type=int, default=None, metavar="N",
                        help="stop after the paragraph that brings the total "
                             "(train + held-out) to N tokens")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace train/, heldout/ and manifest.json in a "
                             "non-empty OUTDIR")
    parser.add_argument("--sword-root", action="append", default=None,
                        metavar="DIR",
                        help="SWORD data directory holding mods.d/ (repeatable; "
                             "default: %s)" % ", ".join(DEFAULT_SWORD_ROOTS))
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed of the training-sentence shuffle (default %(default)s)")
    parser.add_argument("--shard-lines", type=int, default=DEFAULT_SHARD_LINES,
                        help="sentences per training shard (default %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.max_tokens is not None and args.max_tokens <= 0:
        parser.error("--max-tokens must be positive")
    if args.shard_lines <= 0:
        parser.error("--shard-lines must be positive")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    roots = tuple(args.sword_root) if args.sword_root else DEFAULT_SWORD_ROOTS
    build(args.outdir, max_tokens=args.max_tokens, sword_roots=roots,
          seed=args.seed, shard_lines=args.shard_lines, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
