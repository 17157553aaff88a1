r"""Debian's ``fortunes`` (English quotations, about 2.6 MB) as a language-model data set, read from local files.

Where it looks: ``root`` (default :data:`DEBIAN_FORTUNES`, where Debian's package ``fortunes``
installs the files; nothing is downloaded). A **fortune file** is every regular file directly in
``root`` (not in a sub-folder, where ``fortunes-off`` keeps its rot13 files) whose name has no
``.dat`` suffix (strfile's index) or ``.u8`` suffix (Debian's links to the same text) and does
not start with a dot; the files are read in sorted order. In each, fortunes are separated by
lines holding exactly ``%`` (strfile's default delimiter); empty and whitespace-only fortunes
are dropped, and so are exact repeats (the same quotation twice: 83 of 15 217 here).

**Held-out split, by fortune.** Fortune φ goes to the validation split iff

.. math::

    u(\varphi) = h_{0:8}(\varphi)\,/\,2^{64} < \text{val\_fraction},

with h the BLAKE2b-128 digest of its bytes (h_{0:8}: the first 8 bytes as a big-endian integer).
By fortune rather than by file, because a file is a topic (``computers``, ``love``, …): a split
by file would measure the loss on unseen topics, and its size would jump with the files drawn;
a fortune-level split keeps both splits on the same mixture, which is what a validation loss
beside the training loss f(θ) should measure. By a hash of the text rather than a seeded
permutation, because then the split of a fortune does not depend on the other fortunes or on
the order of the files: a package update that adds a file moves no fortune across the split,
and a repeated quotation cannot sit on both sides. The fortunes of each split are ordered by the
next 8 bytes of the digest (a topic-mixing order, fixed by the text alone), so the first k
sequences of a split are a fair sample of it.

**Tokens.** Each split is the concatenation of its fortunes, each followed by the separator line
``%\n`` (the model sees where a fortune ends). ``level="byte"``: the UTF-8 bytes, V = 256.
``level="char"``: Unicode characters, V = the distinct characters of all fortune files (both
splits: the alphabet, not the text, so nothing of the validation text leaks), ids in sorted order.
The stream is cut into windows of ``context`` + 1 tokens (:class:`~sfotorch.datasets.text.TextDataset`).

With the files of ``fortunes 1:1.99.1-7.3`` (43 files, 15 134 distinct fortunes, 2 535 435 bytes of
text): ``val_fraction=0.1`` holds out 1 516 fortunes; 36 142 training and 3 946 validation
sequences of 64 tokens, bytes or characters alike (the training text is 2 313 149 bytes,
2 313 105 characters; the character vocabulary has V = 113).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import torch

from sfotheory.validation import check_choice, check_integer, fail

from .images import DatasetNotFoundError, MalformedDatasetError
from .text import TextDataset

__all__ = ["DEBIAN_FORTUNES", "FORTUNE_SEPARATOR", "fortune_files", "load_fortunes", "read_fortunes",
           "split_fortunes"]

DEBIAN_FORTUNES = "/usr/share/games/fortunes"
#: what follows every fortune in the token stream (a line holding ``%``, as in the files)
FORTUNE_SEPARATOR = b"%\n"
_DELIMITER = re.compile(rb"^%\r?(?:\n|\Z)", re.MULTILINE)
_SKIPPED_SUFFIXES = (".dat", ".u8")
_WHERE = "load_dataset('fortunes')"
_LAYOUT = (f"a folder holding fortune files (plain text, fortunes separated by lines holding '%'; Debian's "
           f"package fortunes installs them in {DEBIAN_FORTUNES}: apt-get install fortunes; nothing is downloaded)")


def fortune_files(root) -> list[Path]:
    """The fortune files directly in ``root``, sorted by name (see the module doc for the rule);
    raises :class:`DatasetNotFoundError` naming the folder and the package when there are none."""
    root = Path(os.fspath(root)).expanduser()
    if not root.is_dir():
        fail("root", _WHERE, _LAYOUT, str(root), reason=f"{root} does not exist or is not a folder",
             cls=DatasetNotFoundError)
    files = sorted(p for p in root.iterdir()
                   if p.is_file() and not p.is_symlink() and not p.name.startswith(".")
                   and not p.name.endswith(_SKIPPED_SUFFIXES))
    if not files:
        fail("root", _WHERE, _LAYOUT, str(root), reason=f"{root} holds no fortune file (only .dat/.u8 files, "
             "sub-folders or nothing)", cls=DatasetNotFoundError)
    return files


def read_fortunes(root=None) -> list[bytes]:
    """Every distinct non-empty fortune of the files in ``root`` (default :data:`DEBIAN_FORTUNES`),
    as UTF-8 bytes ending in one newline, in file order (first occurrence kept).

    A file that is not UTF-8 raises :class:`MalformedDatasetError` naming it.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = Path(tmp, "wit").write_bytes(b"Brevity.\\n%\\nBrevity.\\n%\\n\\n%\\nSoul of wit.\\n")
    ...     read_fortunes(tmp)
    [b'Brevity.\\n', b'Soul of wit.\\n']
    """
    root = DEBIAN_FORTUNES if root is None else root
    seen, out = set(), []
    for path in fortune_files(root):
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            fail("root", _WHERE, _LAYOUT, str(root), reason=f"file {path} is not UTF-8 text ({exc})",
                 cls=MalformedDatasetError)
        for part in _DELIMITER.split(raw):
            text = part.replace(b"\r\n", b"\n").strip(b"\n")
            if not text.strip():
                continue
            text += b"\n"
            if text not in seen:
                seen.add(text)
                out.append(text)
    return out


def _digest(fortune: bytes) -> tuple[int, int]:
    """(split key, order key): the first and the last 8 bytes of the BLAKE2b-128 digest, as integers."""
    h = hashlib.blake2b(fortune, digest_size=16).digest()
    return int.from_bytes(h[:8], "big"), int.from_bytes(h[8:], "big")


def split_fortunes(fortunes, val_fraction: float = 0.1) -> tuple[list[bytes], list[bytes]]:
    """(training, validation) fortunes: φ is held out iff h_{0:8}(φ)/2⁶⁴ < ``val_fraction``; each
    split ordered by the next 8 bytes of the digest (see the module doc).

    >>> train, val = split_fortunes([b"a\\n", b"b\\n", b"c\\n", b"d\\n"], val_fraction=0.5)
    >>> sorted(train + val) == [b"a\\n", b"b\\n", b"c\\n", b"d\\n"], split_fortunes([b"a\\n"], 0.0)
    (True, ([b'a\\n'], []))
    """
    where = "split_fortunes"
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        fail("val_fraction", where, ">= 0 and < 1 (the share of fortunes held out)", val_fraction)
    cut = val_fraction * 2.0 ** 64
    ordered = sorted(((*_digest(f), f) for f in fortunes), key=lambda sof: (sof[1], sof[2]))
    return [f for s, _, f in ordered if s >= cut], [f for s, _, f in ordered if s < cut]


def load_fortunes(root=None, train: bool = True, *, context: int = 64, level: str = "byte",
                  val_fraction: float = 0.1) -> TextDataset:
    """The training or validation split of the fortunes in ``root`` as a :class:`TextDataset` of
    ``context``-token sequences, byte- or character-level (see the module doc for every rule).

    Parameters
    ----------
    root : the folder of fortune files; default :data:`DEBIAN_FORTUNES` (``apt-get install fortunes``).
    train : the training split (True) or the held-out validation split.
    context : T, input tokens per sequence.
    level : ``"byte"`` (UTF-8 bytes, V = 256) or ``"char"`` (characters, V = the files' alphabet).
    val_fraction : the share of fortunes held out, in [0, 1).
    """
    where = "load_dataset('fortunes')"
    context = check_integer(context, "context", where, minimum=1)
    check_choice(level, ("byte", "char"), "level", where)
    if not isinstance(train, bool):
        fail("train", where, "a bool", train)
    root = Path(os.fspath(DEBIAN_FORTUNES if root is None else root)).expanduser()
    fortunes = read_fortunes(root)
    train_part, val_part = split_fortunes(fortunes, val_fraction)
    part = train_part if train else val_part
    stream = b"".join(f + FORTUNE_SEPARATOR for f in part)
    split = "training" if train else "validation"
    if len(stream) < 1:
        fail("val_fraction", where, "large enough that the validation split holds a fortune", val_fraction,
             reason=f"{len(fortunes)} fortunes in {root}")
    if level == "byte":
        tokens = torch.from_numpy(np.frombuffer(stream, dtype=np.uint8).copy())
        vocab = None
    else:
        vocab = sorted(set("".join(f.decode("utf-8") for f in fortunes) + FORTUNE_SEPARATOR.decode()))
        ids = {ch: i for i, ch in enumerate(vocab)}
        tokens = torch.tensor([ids[ch] for ch in stream.decode("utf-8")], dtype=torch.int16 if len(vocab) < 2 ** 15
                              else torch.int32)
    if tokens.numel() < context + 1:
        fail("context", where, f"< the {tokens.numel()} tokens of the {split} split (one window needs context + 1)",
             context, reason=f"{len(part)} fortunes in {root}")
    return TextDataset(tokens, context=context, vocab_size=256 if vocab is None else len(vocab), vocab=vocab,
                       name="fortunes", train=train, source=str(root))
