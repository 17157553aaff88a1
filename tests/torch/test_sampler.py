"""ResizableLoader: size changes at the next batch (with and without workers), coverage, order, resume."""

import pytest

torch = pytest.importorskip("torch")

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sfotheory.validation import ParameterError  # noqa: E402
from sfotorch.sampler import ResizableLoader, epoch_permutation  # noqa: E402


class IndexDataset(torch.utils.data.Dataset):
    """Sample i is (i, float features): top-level so that worker processes can pickle it."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor(i), torch.full((3,), float(i))


class DictDataset(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"index": i, "name": f"s{i}"}


def ids(batch):
    return batch[0].tolist()


def take(loader_iter, sizes, loader):
    """Set each size, then draw one batch; returns the batches' index lists."""
    out = []
    for b in sizes:
        loader.batch_size = b
        out.append(ids(next(loader_iter)))
    return out


# -- the size change reaches the very next batch ----------------------------------------------------

@pytest.mark.parametrize("num_workers", [0, 2])
def test_next_batch_has_the_new_size_right_after_a_change(num_workers):
    loader = ResizableLoader(IndexDataset(500), batch_size=4, seed=1, num_workers=num_workers,
                             chunk_size=8 if num_workers else None, prefetch_factor=4 if num_workers else None)
    it = iter(loader)
    sizes = [4, 4, 4, 16, 16, 3, 1, 64, 5, 5, 32, 2]
    got = []
    for b in sizes:
        loader.batch_size = b
        batch = next(it)
        got.append(len(batch[0]))
        assert batch[1].shape == (b, 3)
        assert torch.equal(batch[1][:, 0].long(), batch[0])   # features travel with their index
    assert got == sizes
    assert loader.position == sum(sizes)


def test_workers_deliver_the_same_batches_as_the_main_process():
    sizes = [3, 17, 1, 40, 8, 8, 99, 2]
    batches = []
    for kw in ({"num_workers": 0}, {"num_workers": 0, "chunk_size": 7}, {"num_workers": 2, "chunk_size": 16}):
        loader = ResizableLoader(IndexDataset(300), batch_size=3, seed=5, **kw)
        batches.append(take(iter(loader), sizes, loader))
    assert batches[0] == batches[1] == batches[2]


# -- coverage, order ----------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), sizes=st.lists(st.integers(1, 60), min_size=1, max_size=40),
       chunk=st.one_of(st.none(), st.integers(1, 9)), drop_last=st.booleans())
@example(n=10, sizes=[3], chunk=None, drop_last=False)    # a short final batch of 1
@example(n=10, sizes=[3], chunk=4, drop_last=True)        # one sample dropped
def test_each_index_once_per_epoch_for_any_size_changes(n, sizes, chunk, drop_last):
    sizes = [min(b, n) for b in sizes]
    loader = ResizableLoader(IndexDataset(n), batch_size=sizes[0], seed=7, chunk_size=chunk, drop_last=drop_last)
    seen, lens, k = [], [], 0
    for batch in loader:                     # one epoch, changing b before every batch
        seen.extend(ids(batch))
        lens.append(len(batch[0]))
        assert loader.last_batch_len == len(batch[0])
        k += 1
        loader.batch_size = sizes[k % len(sizes)]
    assert len(seen) == len(set(seen))                                  # no duplicate
    assert seen == loader.epoch_order(0).tolist()[:len(seen)]           # in permutation order
    if drop_last:
        assert loader.dropped == n - len(seen) and all(x == b for x, b in zip(lens, _requested(sizes, lens)))
    else:
        assert sorted(seen) == list(range(n))                           # nothing missing
    assert loader.samples_delivered == len(seen)                        # counted truthfully
    assert (loader.epoch, loader.position) == (1, 0)


def _requested(sizes, lens):
    return [sizes[k % len(sizes)] for k in range(len(lens))]


def test_last_batch_of_an_epoch_is_short_and_never_crosses_the_epoch():
    loader = ResizableLoader(IndexDataset(10), batch_size=4, shuffle=False)
    assert [ids(b) for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert loader.last_batch_len == 2 and loader.samples_delivered == 10
    dropped = ResizableLoader(IndexDataset(10), batch_size=4, shuffle=False, drop_last=True)
    assert [ids(b) for b in dropped] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert dropped.dropped == 2 and dropped.samples_delivered == 8


def test_order_is_a_function_of_seed_and_epoch_only():
    a = ResizableLoader(IndexDataset(50), batch_size=7, seed=3)
    b = ResizableLoader(IndexDataset(50), batch_size=13, seed=3)
    rng = torch.get_rng_state()
    epochs_a = [sum((ids(x) for x in a), []) for _ in range(3)]
    epochs_b = [sum((ids(x) for x in b), []) for _ in range(3)]
    assert torch.equal(rng, torch.get_rng_state())                     # the global RNG is untouched
    assert epochs_a == epochs_b                                          # b does not change the order
    assert epochs_a[0] == epoch_permutation(50, 3, 0).tolist()
    assert epochs_a[0] != epochs_a[1] != epochs_a[2]
    other_seed = ResizableLoader(IndexDataset(50), batch_size=7, seed=4)
    assert sum((ids(x) for x in other_seed), []) != epochs_a[0]


def test_leaving_the_loop_keeps_the_position():
    loader = ResizableLoader(IndexDataset(20), batch_size=5, seed=0)
    it = iter(loader)
    first = ids(next(it))
    rest = sum((ids(b) for b in loader), [])        # a new iterator continues the same epoch
    assert first + rest == loader.epoch_order(0).tolist()
    with pytest.raises(RuntimeError, match="superseded"):
        next(it)


# -- resume ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_workers", [0, 2])
def test_mid_epoch_resume_gives_exactly_the_remaining_samples_in_order(num_workers):
    kw = {"num_workers": num_workers, "chunk_size": 8 if num_workers else None}
    ref = ResizableLoader(IndexDataset(120), batch_size=6, seed=11, **kw)
    it = iter(ref)
    head = take(it, [6, 6, 20, 3], ref)
    saved = ref.state_dict()
    tail_sizes = [9, 9, 50, 1, 10]
    tail = take(it, tail_sizes, ref)

    resumed = ResizableLoader(IndexDataset(120), batch_size=1, seed=0, **kw)
    resumed.load_state_dict(saved)
    assert (resumed.epoch, resumed.position, resumed.batch_size) == (0, 35, 3)
    assert take(iter(resumed), tail_sizes, resumed) == tail
    remaining = sum((ids(b) for b in resumed), [])
    assert sum(head, []) + sum(tail, []) + remaining == ref.epoch_order(0).tolist()


def test_resume_at_the_end_of_an_epoch_starts_the_next_epoch():
    loader = ResizableLoader(IndexDataset(8), batch_size=4, seed=2)
    it = iter(loader)
    next(it), next(it)
    saved = loader.state_dict()                     # 8 of 8 delivered, epoch not yet closed
    fresh = ResizableLoader(IndexDataset(8), batch_size=4, seed=2)
    fresh.load_state_dict(saved)
    assert sum((ids(b) for b in fresh), []) == epoch_permutation(8, 2, 1).tolist()


# -- bad input -----------------------------------------------------------------------------------------------

def test_batch_size_bounds_name_the_parameter_and_value():
    with pytest.raises(ParameterError, match=r"'batch_size' parameter of ResizableLoader must be <= the dataset "
                                             r"size n = 10.*Got batch_size=11 instead"):
        ResizableLoader(IndexDataset(10), batch_size=11)
    loader = ResizableLoader(IndexDataset(10), batch_size=2)
    with pytest.raises(ParameterError, match=r"must be >= 1.*Got batch_size=0 instead"):
        loader.batch_size = 0
    with pytest.raises(TypeError, match=r"must be an integer.*Got batch_size=2.5"):
        loader.batch_size = 2.5
    assert loader.batch_size == 2


def test_state_of_another_dataset_is_refused():
    a = ResizableLoader(IndexDataset(10), batch_size=2)
    b = ResizableLoader(IndexDataset(12), batch_size=2)
    with pytest.raises(ParameterError, match=r"same size n = 12.*Got state_dict=10"):
        b.load_state_dict(a.state_dict())


def test_iterable_dataset_is_refused():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(range(3))

    with pytest.raises(ParameterError, match="'dataset' parameter of ResizableLoader must be a map-style"):
        ResizableLoader(Stream(), batch_size=1)


def test_dict_samples_with_strings_are_sliced_and_joined():
    loader = ResizableLoader(DictDataset(9), batch_size=2, shuffle=False, chunk_size=4)
    it = iter(loader)
    loader.batch_size = 3
    first = next(it)
    loader.batch_size = 5
    second = next(it)
    assert first["index"].tolist() == [0, 1, 2] and first["name"] == ["s0", "s1", "s2"]
    assert second["index"].tolist() == [3, 4, 5, 6, 7] and second["name"] == ["s3", "s4", "s5", "s6", "s7"]


def test_persistent_workers_serve_breaks_epochs_and_resume():
    loader = ResizableLoader(IndexDataset(100), batch_size=7, seed=3, num_workers=2, chunk_size=5,
                             persistent_workers=True)
    it = iter(loader)
    head = [ids(next(it)) for _ in range(3)]
    loader.batch_size = 11
    rest = sum((ids(b) for b in loader), [])                 # a new iterator on the same workers
    assert sum(head, []) + rest == loader.epoch_order(0).tolist()
    assert sum((ids(b) for b in loader), []) == loader.epoch_order(1).tolist()
    saved = loader.state_dict()
    next(iter(loader))                                       # abandoned after one prefetching batch
    loader.load_state_dict(saved)
    assert sum((ids(b) for b in loader), []) == loader.epoch_order(2).tolist()
