r"""A resizable, resumable batch source: the batch size changes at the very next batch.

:class:`ResizableLoader` replaces ``DataLoader(dataset, batch_size=b, shuffle=True)``
in a training loop whose batch size b_m changes between stages (Algorithm 2).
Setting :attr:`ResizableLoader.batch_size` between any two steps takes effect at
the next batch the loop receives, also with ``num_workers > 0`` and prefetching.

Conventions (stated once, here)
-------------------------------
* **Order.** Epoch e visits the n samples in the order π_e, a permutation that is a
  pure function of ``(seed, e)`` (:func:`epoch_permutation`); there is no hidden
  RNG state, so resuming needs only ``(seed, epoch, position)``. Sampling is
  without replacement within an epoch.
* **Position in samples.** ``position`` p counts the samples *delivered to the
  training loop* in the current epoch. The next batch is
  π_e[p : p + b] with the b in force when the batch is requested, so a batch-size
  change never loses or repeats a sample.
* **Epoch end.** A batch never crosses the end of an epoch. The last batch of an
  epoch is short (n − p < b samples) unless ``drop_last=True``, in which case the
  n − p remaining samples are skipped (counted in :attr:`ResizableLoader.dropped`).
  :attr:`ResizableLoader.last_batch_len` is the true size of the last batch, which is
  what the SFO count uses (the reference code counted b for a short batch).
* **Iteration.** ``for batch in loader`` runs from the current position to the end
  of the epoch, then moves to epoch e + 1 at position 0. Leaving the loop early
  keeps the position: the next ``iter(loader)`` continues the same epoch.
  ``state_dict()``/``load_state_dict()`` hold ``(seed, epoch, position, b)``.

Why prefetching cannot make a size change late
----------------------------------------------
A ``DataLoader`` with workers fetches ``prefetch_factor × num_workers`` batches
ahead, each of the size it had when its indices were drawn. Here the workers fetch
*chunks* of ``chunk_size`` consecutive permutation positions,
π_e[q : q + c], π_e[q + c : q + 2c], …, which do not depend on b; the main process
slices and concatenates chunks into batches of the current b when the loop asks
for the next batch. Prefetched work is therefore never of the wrong size. With
``num_workers=0`` nothing is prefetched and each batch π_e[p : p + b] is fetched
and collated directly, exactly as ``DataLoader`` would.

Sharding: the state is global (position in samples over the whole permutation,
global batch b), so a rank r of w can take the positions p ≡ r (mod w) of each
global batch; :class:`~sfotorch.distributed.ShardedLoader` is that view.

>>> import torch
>>> data = torch.utils.data.TensorDataset(torch.arange(10))
>>> loader = ResizableLoader(data, batch_size=4, seed=0, shuffle=False)
>>> it = iter(loader)
>>> next(it)[0].tolist()
[0, 1, 2, 3]
>>> loader.batch_size = 2
>>> next(it)[0].tolist()
[4, 5]
>>> loader.batch_size = 3
>>> [b[0].tolist() for b in it]          # the last batch of the epoch is short
[[6, 7, 8], [9]]
>>> loader.epoch, loader.position, loader.last_batch_len
(1, 0, 1)
"""

from __future__ import annotations

import collections.abc
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from sfotheory.validation import ParameterTypeError, check_integer, fail

__all__ = ["ResizableLoader", "epoch_permutation", "epoch_seed"]

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit seed that is a pure function of ``(seed, epoch, stream)`` (splitmix64 mixing).

    ``stream`` separates independent uses (0: the permutation, 1: worker seeds).

    >>> epoch_seed(0, 0) == epoch_seed(0, 0), epoch_seed(0, 0) != epoch_seed(0, 1)
    (True, True)
    """
    x = _splitmix64(int(seed) & _MASK64)
    x = _splitmix64(x ^ (int(epoch) & _MASK64))
    x = _splitmix64(x ^ (int(stream) & _MASK64))
    return x >> 1


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """π_e: the visiting order of epoch ``epoch``, ``torch.randperm(n)`` seeded by (seed, epoch).

    A private :class:`torch.Generator` is used; the global RNG is not touched.

    >>> p = epoch_permutation(6, seed=3, epoch=0)
    >>> sorted(p.tolist())
    [0, 1, 2, 3, 4, 5]
    >>> torch.equal(p, epoch_permutation(6, seed=3, epoch=0))
    True
    """
    g = torch.Generator()
    g.manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(n, generator=g)


# -- slicing and joining collated batches ----------------------------------------------------------

def _is_field_container(x) -> bool:
    return isinstance(x, (torch.Tensor, np.ndarray, collections.abc.Mapping)) or (
        isinstance(x, (list, tuple)) and not isinstance(x, str))


def _is_fields(seq) -> bool:
    """A list/tuple of collated fields (recurse) rather than a list of per-sample leaves (slice)."""
    return len(seq) > 0 and all(_is_field_container(x) for x in seq)


def _batch_len(batch) -> int:
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        return int(batch.shape[0])
    if isinstance(batch, collections.abc.Mapping):
        return _batch_len(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        return _batch_len(batch[0]) if _is_fields(batch) else len(batch)
    raise ParameterTypeError(
        "The 'collate_fn' parameter of ResizableLoader must return tensors, numpy arrays or "
        f"(nested) tuples, lists or dicts of them, sliceable along the first axis. Got a batch of type "
        f"{type(batch).__name__} instead.")


def _rebuild(like, items):
    if isinstance(like, tuple) and hasattr(like, "_fields"):  # namedtuple
        return type(like)(*items)
    return type(like)(items)


def _slice(batch, start: int, stop: int):
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        return batch[start:stop]
    if isinstance(batch, collections.abc.Mapping):
        return type(batch)({k: _slice(v, start, stop) for k, v in batch.items()})
    if isinstance(batch, (list, tuple)):
        if _is_fields(batch):
            return _rebuild(batch, [_slice(x, start, stop) for x in batch])
        return batch[start:stop]
    _batch_len(batch)  # raises the error naming the type
    raise AssertionError("unreachable")  # pragma: no cover


def _concat(parts: list):
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    if isinstance(first, collections.abc.Mapping):
        return type(first)({k: _concat([p[k] for p in parts]) for k in first})
    if isinstance(first, (list, tuple)):
        if _is_fields(first):
            return _rebuild(first, [_concat([p[i] for p in parts]) for i in range(len(first))])
        out = []
        for p in parts:
            out.extend(p)
        return _rebuild(first, out) if not isinstance(first, list) else out
    _batch_len(first)
    raise AssertionError("unreachable")  # pragma: no cover


def _fetch(dataset, indices: list, collate_fn):
    """What ``DataLoader``'s map-style fetcher does for one batch of indices."""
    getitems = getattr(dataset, "__getitems__", None)
    data = getitems(indices) if callable(getitems) else [dataset[i] for i in indices]
    return collate_fn(data)


class _ChunkSampler:
    """Batch sampler for the worker ``DataLoader``: chunks of ``chunk_size`` consecutive positions.

    Reads the loader's epoch and start position when iterated, so one ``DataLoader``
    (and persistent workers) serve every epoch and every resume.
    """

    def __init__(self, loader: ResizableLoader):
        self.loader = loader

    def __iter__(self):
        order = self.loader._order(self.loader._chunk_epoch)
        c = self.loader.chunk_size
        n = self.loader.n
        for q in range(self.loader._chunk_start, n, c):
            yield order[q:min(q + c, n)].tolist()

    def __len__(self):
        c = self.loader.chunk_size
        return -(-(self.loader.n - self.loader._chunk_start) // c)


class ResizableLoader:
    r"""Batches of a map-style dataset whose size b can change between any two steps.

    Parameters
    ----------
    dataset : a map-style dataset (``__getitem__`` and ``__len__``), n = ``len(dataset)``.
    batch_size : b, the number of samples of the next batch, 1 ≤ b ≤ n.
    seed : the seed of the permutations π_e (:func:`epoch_permutation`) and of the worker seeds.
    shuffle : ``False`` visits the samples in index order every epoch.
    drop_last : skip the n − p < b samples left at the end of an epoch instead of a short batch.
    num_workers, collate_fn, pin_memory, prefetch_factor, persistent_workers, worker_init_fn,
    multiprocessing_context, timeout : as in :class:`torch.utils.data.DataLoader`. ``collate_fn``
        must return tensors, numpy arrays, or (nested) tuples, lists or dicts of them, so that a
        collated chunk can be sliced along its first axis.
    chunk_size : c, the samples per worker fetch (default 512 with workers). With
        ``num_workers=0`` batches are fetched directly unless ``chunk_size`` is given. Each fetch
        has a fixed cost (a worker round trip, whatever c), so c should be at least the batch
        sizes the run reaches (``benchmarks/bench_scheduler_overhead.py --workers 2`` times it
        against a DataLoader). Prefetched memory is ``prefetch_factor × num_workers × c`` samples: lower
        c for large samples.

    Worker RNGs are seeded from (seed, epoch, position at which the iteration started) — with
    ``persistent_workers`` from the first iteration — not from the global RNG, which this class
    never touches.

    Attributes: ``epoch``, ``position`` (samples delivered in this epoch), ``last_batch_len``
    (true size of the last batch), ``samples_delivered`` (all epochs), ``dropped``.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = False, num_workers: int = 0, chunk_size: int | None = None,
                 collate_fn=None, pin_memory: bool = False, prefetch_factor: int | None = None,
                 persistent_workers: bool = False, worker_init_fn=None, multiprocessing_context=None,
                 timeout: float = 0):
        where = "ResizableLoader"
        if isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__len__") \
                or not hasattr(dataset, "__getitem__"):
            fail("dataset", where, "a map-style dataset with __getitem__ and __len__", type(dataset).__name__,
                 reason="positions in an epoch are counted over a permutation of len(dataset) indices")
        self.dataset = dataset
        self.n = check_integer(len(dataset), "len(dataset)", where, minimum=1)
        self.seed = check_integer(seed, "seed", where)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.num_workers = check_integer(num_workers, "num_workers", where, minimum=0)
        if chunk_size is not None:
            chunk_size = check_integer(chunk_size, "chunk_size", where, minimum=1)
        self._direct = self.num_workers == 0 and chunk_size is None
        self.chunk_size = chunk_size if chunk_size is not None else 512
        self.collate_fn = default_collate if collate_fn is None else collate_fn
        self._batch_size = self._check_batch_size(batch_size)
        self.epoch = 0
        self.position = 0
        self.last_batch_len = 0
        self.samples_delivered = 0
        self.dropped = 0
        self._generation = 0
        self._perm_cache: tuple[int, torch.Tensor] | None = None
        self._chunk_epoch = 0
        self._chunk_start = 0
        self._worker_generator = torch.Generator()
        self._dataloader = None
        if not self._direct:
            self._dataloader = DataLoader(
                dataset, batch_sampler=_ChunkSampler(self), num_workers=self.num_workers,
                collate_fn=self.collate_fn, pin_memory=pin_memory, prefetch_factor=prefetch_factor,
                persistent_workers=persistent_workers, worker_init_fn=worker_init_fn,
                multiprocessing_context=multiprocessing_context, generator=self._worker_generator,
                timeout=timeout)

    # -- batch size ----------------------------------------------------------------------------

    def _check_batch_size(self, b) -> int:
        b = check_integer(b, "batch_size", "ResizableLoader", minimum=1, reason="a batch holds at least one sample")
        if b > self.n:
            fail("batch_size", "ResizableLoader", f"<= the dataset size n = {self.n}", b,
                 reason="a batch is drawn without replacement from one epoch")
        return b

    @property
    def batch_size(self) -> int:
        """b: the size of the next batch; setting it takes effect at the very next batch."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, b: int) -> None:
        self._batch_size = self._check_batch_size(b)

    def set_batch_size(self, b: int) -> None:
        """Same as ``loader.batch_size = b``."""
        self.batch_size = b

    # -- order ---------------------------------------------------------------------------------

    def _order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            if self._perm_cache is None or self._perm_cache[0] != -1:
                self._perm_cache = (-1, torch.arange(self.n))
            return self._perm_cache[1]
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            self._perm_cache = (epoch, epoch_permutation(self.n, self.seed, epoch))
        return self._perm_cache[1]

    def epoch_order(self, epoch: int | None = None) -> torch.Tensor:
        """π_e of ``epoch`` (default: the current one), as dataset indices."""
        return self._order(self.epoch if epoch is None else check_integer(epoch, "epoch", "epoch_order", minimum=0))

    def __len__(self) -> int:
        """Batches left in the current epoch at the current b (changes when b changes)."""
        left = self.n - self.position
        if left == 0:
            left = self.n
        return left // self._batch_size if self.drop_last else -(-left // self._batch_size)

    # -- iteration -----------------------------------------------------------------------------

    def _finish_epoch(self) -> None:
        self.epoch += 1
        self.position = 0

    def __iter__(self):
        self._generation += 1
        if self.position >= self.n:
            self._finish_epoch()
        return self._iterate(self._generation)

    def _check_live(self, generation: int) -> None:
        if generation != self._generation:
            raise RuntimeError("this ResizableLoader iterator was superseded by a newer iter(loader) or by "
                               "load_state_dict(); take a new iterator with iter(loader)")

    def _take(self, generation: int) -> int | None:
        """Size of the next batch, or None at the end of the epoch (after dropping a short rest)."""
        self._check_live(generation)
        left = self.n - self.position
        if left <= 0:
            return None
        take = min(self._batch_size, left)
        if take < self._batch_size and self.drop_last:
            self.dropped += left
            self.position = self.n
            return None
        return take

    def _deliver(self, take: int) -> None:
        self.position += take
        self.last_batch_len = take
        self.samples_delivered += take

    def _iterate(self, generation: int):
        # one generator per path (no delegating frame): each batch is one resume
        return self._iterate_direct(generation) if self._direct else self._iterate_chunks(generation)

    def _end_iteration(self, generation: int) -> None:
        if generation == self._generation:
            self._finish_epoch()

    def _iterate_direct(self, generation: int):
        # π_e as a NumPy view of the cached permutation (no copy): slicing it and listing the
        # slice costs far less per batch than slicing the tensor
        order = self._order(self.epoch).numpy()
        while (take := self._take(generation)) is not None:
            p = self.position
            batch = _fetch(self.dataset, order[p:p + take].tolist(), self.collate_fn)
            self._deliver(take)
            yield batch
        self._end_iteration(generation)

    def _iterate_chunks(self, generation: int):
        self._chunk_epoch = self.epoch
        self._chunk_start = self.position
        self._worker_generator.manual_seed(epoch_seed(self.seed, self.epoch, stream=1 + self.position))
        chunks = None
        pending: list = []          # collated pieces, in order, not yet delivered
        pending_len = 0
        while (take := self._take(generation)) is not None:
            if chunks is None:
                chunks = iter(self._dataloader)
            while pending_len < take:
                chunk = next(chunks)
                pending.append(chunk)
                pending_len += _batch_len(chunk)
            parts, need = [], take
            while need:
                piece = pending[0]
                m = _batch_len(piece)
                if m <= need:
                    parts.append(piece)
                    pending.pop(0)
                    need -= m
                else:
                    parts.append(_slice(piece, 0, need))
                    pending[0] = _slice(piece, need, m)
                    need = 0
            pending_len -= take
            self._deliver(take)
            yield _concat(parts)
        self._end_iteration(generation)

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """``{seed, epoch, position, batch_size, n, shuffle, drop_last, samples_delivered, dropped}``."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position, "batch_size": self._batch_size,
                "n": self.n, "shuffle": self.shuffle, "drop_last": self.drop_last,
                "samples_delivered": self.samples_delivered, "dropped": self.dropped}

    def load_state_dict(self, state: dict) -> None:
        """Resume at ``(epoch, position)`` with batch size b; live iterators are invalidated.

        The dataset size and the shuffle setting must match the ones the state was written with.
        """
        where = "ResizableLoader.load_state_dict"
        missing = sorted({"seed", "epoch", "position", "batch_size", "n"} - set(state))
        if missing:
            fail("state_dict", where, "a dict written by ResizableLoader.state_dict()", missing,
                 reason="these keys are missing")
        if state["n"] != self.n:
            fail("state_dict", where, f"written for a dataset of the same size n = {self.n}", state["n"])
        if "shuffle" in state and bool(state["shuffle"]) != self.shuffle:
            fail("state_dict", where, f"written with the same shuffle = {self.shuffle}", state["shuffle"])
        position = check_integer(state["position"], "position", where, minimum=0)
        if position > self.n:
            fail("position", where, f"<= n = {self.n}", position)
        if "drop_last" in state and bool(state["drop_last"]) != self.drop_last:
            warnings.warn(f"ResizableLoader.load_state_dict: the state was written with drop_last="
                          f"{state['drop_last']}; this loader keeps drop_last={self.drop_last}", stacklevel=2)
        seed = check_integer(state["seed"], "seed", where)
        if seed != self.seed:
            self._perm_cache = None  # π_e is a pure function of (seed, e): the cache survives otherwise
        self.seed = seed
        self.epoch = check_integer(state["epoch"], "epoch", where, minimum=0)
        self.position = position
        self.batch_size = state["batch_size"]
        self.samples_delivered = int(state.get("samples_delivered", 0))
        self.dropped = int(state.get("dropped", 0))
        self.last_batch_len = 0
        self._generation += 1
