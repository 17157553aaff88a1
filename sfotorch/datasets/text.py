r"""A token stream cut into fixed-length sequences: the sample of a language-model workload.

A :class:`TextDataset` holds one stream of token ids s_0, s_1, …, s_{L−1} (vocabulary of V
symbols) and a context length T. Sample k is the window

.. math::

    x^{(k)} = (s_{kT}, \dots, s_{kT+T-1}), \qquad y^{(k)} = (s_{kT+1}, \dots, s_{kT+T}),
    \qquad k = 0, \dots, N-1, \quad N = \lfloor (L-1)/T \rfloor,

the input and its targets shifted by one token. Consecutive windows overlap in one token (the
last target of window k is the first input of window k + 1), so every token of the stream but the
first is a target exactly once; the tail of fewer than T + 1 tokens is dropped.

A sample is a whole sequence: its loss is f_k = (1/T) Σ_t ℓ(x^{(k)}, y^{(k)}_t) (the mean token
cross-entropy, :class:`sfotorch.losses.SequenceCrossEntropy`), so b samples are b sequences of T
tokens and SFO counts sequences.

It offers what ``sfo train`` asks of its data sets (the interface of
:class:`~sfotorch.datasets.ImageDataset`): ``dataset[index_tensor]`` → a batch ``(x, y)`` of int64
(B, T) tensors in one gather, ``__getitems__`` for the DataLoader, ``subset``, ``to(device)``,
``num_classes`` (= V, the classes of next-token prediction) and ``in_channels`` (= 1, one token id
per position). Text has no augmentation: ``without_augmentation`` returns the data set itself and
``set_epoch`` only records the epoch.

>>> data = TextDataset(torch.arange(10, dtype=torch.uint8), context=3, vocab_size=256)
>>> len(data), data.num_classes
(3, 256)
>>> x, y = data[torch.tensor([0, 2])]
>>> x.tolist(), y.tolist()
([[0, 1, 2], [6, 7, 8]], [[1, 2, 3], [7, 8, 9]])
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch

from sfotheory.validation import ParameterTypeError, check_integer, fail

__all__ = ["TextDataset"]


class TextDataset(torch.utils.data.Dataset):
    """N windows of T + 1 tokens of one stream (see the module doc): inputs and targets shifted by one.

    Parameters
    ----------
    tokens : 1-D integer tensor, the stream s (uint8 for bytes; any integer dtype).
    context : T, tokens per input sequence (≥ 1).
    vocab_size : V; every token must lie in {0, …, V − 1}.
    vocab : for a character-level stream, the character of each id (length V); ``None`` for bytes.
    name : the data set's name, for messages and logs.
    train : whether this is the training split.
    source : where the text came from (a path), for messages and logs.
    """

    augment = False

    def __init__(self, tokens: torch.Tensor, *, context: int, vocab_size: int, vocab: Sequence[str] | None = None,
                 name: str = "text", train: bool = True, source: str | None = None):
        where = "TextDataset"
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1 or tokens.is_floating_point() \
                or tokens.dtype == torch.bool:
            fail("tokens", where, "a 1-D integer tensor (the token stream)",
                 f"tensor(dtype={tokens.dtype}, shape={tuple(tokens.shape)})" if isinstance(tokens, torch.Tensor)
                 else type(tokens).__name__)
        self.context = check_integer(context, "context", where, minimum=1)
        self.num_classes = check_integer(vocab_size, "vocab_size", where, minimum=2)
        if tokens.numel() < self.context + 1:
            fail("tokens", where, f"at least context + 1 = {self.context + 1} tokens long (one window)",
                 f"a stream of {tokens.numel()} tokens")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.num_classes:
            fail("tokens", where, f"ids in {{0, ..., {self.num_classes - 1}}} (vocab_size = {self.num_classes})",
                 (lo, hi))
        if vocab is not None and len(vocab) != self.num_classes:
            fail("vocab", where, f"of length vocab_size = {self.num_classes}", len(vocab))
        n = (tokens.numel() - 1) // self.context
        # window k = s[kT : kT + T + 1]: an (N, T + 1) copy, the batch gather is then one index_select
        self.sequences = tokens[: n * self.context + 1].unfold(0, self.context + 1, self.context).contiguous()
        self.vocab = list(vocab) if vocab is not None else None
        self.name = name
        self.train = bool(train)
        self.source = source
        self.epoch = 0

    # -- description --------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        """One token id per position (what a model builder's ``in_channels`` asks)."""
        return 1

    @property
    def level(self) -> str:
        """``"byte"`` (ids are UTF-8 bytes) or ``"char"`` (ids index :attr:`vocab`)."""
        return "byte" if self.vocab is None else "char"

    @property
    def tokens(self) -> int:
        """Input tokens N·T over all sequences."""
        return len(self) * self.context

    def __len__(self) -> int:
        return int(self.sequences.shape[0])

    def __repr__(self) -> str:
        split = "train" if self.train else "validation"
        return (f"TextDataset({self.name!r}, {split}, n={len(self)} sequences of {self.context} tokens, "
                f"{self.level}-level, vocab={self.num_classes})")

    def decode(self, ids) -> str:
        """The text of a sequence of ids (bytes decoded as UTF-8, undecodable bytes as U+FFFD).

        >>> TextDataset(torch.tensor(list(b"hello"), dtype=torch.uint8), context=2, vocab_size=256).decode([104, 105])
        'hi'
        """
        ids = [int(i) for i in (ids.flatten().tolist() if isinstance(ids, torch.Tensor) else ids)]
        if self.vocab is None:
            return bytes(ids).decode("utf-8", errors="replace")
        return "".join(self.vocab[i] for i in ids)

    # -- views (the ImageDataset interface sfo train uses) ------------------------------------------
    def _copy(self, **changes) -> TextDataset:
        new = TextDataset.__new__(TextDataset)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def without_augmentation(self) -> TextDataset:
        """The data set itself: text sequences are never augmented."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Record the epoch (nothing depends on it: there is no augmentation stream)."""
        self.epoch = check_integer(epoch, "epoch", "TextDataset.set_epoch", minimum=0)

    def subset(self, indices) -> TextDataset:
        """A data set of the selected sequences (copied, in the given order)."""
        idx = self._as_index(indices, "TextDataset.subset")
        return self._copy(sequences=self.sequences[idx.to(self.sequences.device)].contiguous())

    def to(self, device) -> TextDataset:
        """The same sequences on ``device`` (batches are then gathered there)."""
        return self._copy(sequences=self.sequences.to(torch.device(device)))

    # -- access ---------------------------------------------------------------------------------
    def _as_index(self, index, where: str) -> torch.Tensor:
        n = len(self)
        if isinstance(index, slice):
            return torch.arange(n)[index]
        if isinstance(index, torch.Tensor):
            idx = index
        elif isinstance(index, (np.ndarray, list, tuple, range)):
            idx = torch.as_tensor(np.asarray(index, dtype=np.int64) if len(index) else np.zeros(0, np.int64))
        else:
            fail("index", where, "an int, a slice, or a 1-D sequence/tensor of ints", index, cls=ParameterTypeError)
        if idx.dim() != 1 or idx.is_floating_point() or idx.dtype == torch.bool:
            fail("index", where, "a 1-D integer tensor", f"tensor(dtype={idx.dtype}, shape={tuple(idx.shape)})")
        idx = idx.to(dtype=torch.int64)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            fail("index", where, f"in [-{n}, {n})", (int(idx.min()), int(idx.max())))
        return torch.where(idx < 0, idx + n, idx)

    def get_batch(self, indices, generator: torch.Generator | None = None):
        """``(x, y)`` for ``indices``: int64 (B, T) inputs and their targets, shifted by one token.

        ``generator`` is accepted for the ImageDataset interface and unused (nothing is random).
        """
        idx = self._as_index(indices, "TextDataset.get_batch").to(self.sequences.device)
        windows = self.sequences.index_select(0, idx).to(torch.int64)
        return windows[:, :-1], windows[:, 1:]

    def __getitem__(self, index):
        if isinstance(index, numbers.Integral) and not isinstance(index, bool):
            x, y = self.get_batch(torch.tensor([int(index)]))
            return x[0], y[0]
        if isinstance(index, torch.Tensor) and index.dim() == 0:
            return self[int(index)]
        return self.get_batch(index)

    def __getitems__(self, indices) -> list:
        """DataLoader's batched fetch: a list of ``(x, y)`` pairs, gathered as one batch."""
        x, y = self.get_batch(indices)
        return list(zip(x.unbind(0), y.unbind(0)))
