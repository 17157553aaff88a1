"""Data: CIFAR / Fashion-MNIST loaders on files written in the real formats, augmentation, messages."""

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sfotheory.validation import ParameterError  # noqa: E402
from sfotorch.datasets import (CIFAR10_MEAN, CIFAR10_STD, DATASETS, DEBIAN_FASHION_MNIST,  # noqa: E402
                               FASHION_MNIST_MEAN, FASHION_MNIST_STD, DatasetNotFoundError, ImageDataset,
                               MalformedDatasetError, augmentation_params, crop_flip, load_dataset,
                               random_params, select_subset, write_cifar, write_fashion_mnist, write_idx)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensor ops are faster on one thread on this 2-core machine (see test_models.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cifar10_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10")
    return root, write_cifar(root, "cifar10", train_size=23, test_size=7, seed=4)


@pytest.fixture(scope="module")
def fmnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    return root, write_fashion_mnist(root, train_size=30, test_size=12, seed=5)


def normalised(u8, mean, std):
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (torch.as_tensor(u8).double() / 255 - m.double()) / s.double()


def reference_crop_flip(images, dy, dx, flip, p):
    """Per-image loop over F.pad and slicing, to check the vectorised crop_flip."""
    h, w = images.shape[-2:]
    out = []
    for img, a, b, f in zip(images, dy.tolist(), dx.tolist(), flip.tolist()):
        crop = torch.nn.functional.pad(img, (p, p, p, p))[:, a:a + h, b:b + w]
        out.append(crop.flip(-1) if f else crop)
    return torch.stack(out)


# -- round trips through the real on-disk formats ----------------------------------------------

@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_round_trips_exactly(tmp_path, name):
    written = write_cifar(tmp_path, name, train_size=12, test_size=5, seed=1)
    for train, key in ((True, "train"), (False, "test")):
        data = load_dataset(name, root=tmp_path, train=train)
        assert isinstance(data, ImageDataset) and len(data) == len(written[f"{key}_labels"])
        assert data.images.dtype == torch.uint8 and data.images.shape[1:] == (3, 32, 32)
        assert np.array_equal(data.images.numpy(), written[f"{key}_images"])
        assert np.array_equal(data.labels.numpy(), written[f"{key}_labels"])
        assert (data.num_classes, data.in_channels, data.image_size) == (DATASETS[name].num_classes, 3, (32, 32))
        assert data.classes == written["classes"]
        x, y = data[torch.arange(len(data))]
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (len(data), 3, 32, 32)
        torch.testing.assert_close(x.double(), normalised(written[f"{key}_images"], *DATASETS[name][3:]),
                                   rtol=0, atol=1e-5)


def test_cifar10_pixel_order_is_red_then_green_then_blue_planes(cifar10_root):
    root, written = cifar10_root
    row = written["train_images"][0].reshape(3072)        # what the pickle stores for image 0
    img = load_dataset("cifar10", root=root).images[0]
    assert img[0, 0, :].tolist() == row[:32].tolist()            # red plane, first row
    assert img[1, 0, 0].item() == row[1024] and img[2, 31, 31].item() == row[3071]


def test_cifar_root_may_be_the_batches_folder_itself(cifar10_root):
    root, written = cifar10_root
    data = load_dataset("cifar10", root=root / "cifar-10-batches-py", train=False)
    assert np.array_equal(data.labels.numpy(), written["test_labels"])


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_round_trips_exactly(tmp_path, compress):
    written = write_fashion_mnist(tmp_path, train_size=9, test_size=4, seed=2, compress=compress)
    suffix = ".gz" if compress else ""
    assert (tmp_path / f"train-images-idx3-ubyte{suffix}").is_file()
    for train, key in ((True, "train"), (False, "test")):
        data = load_dataset("fashion_mnist", root=tmp_path, train=train)
        assert data.images.shape == (len(written[f"{key}_labels"]), 1, 28, 28)
        assert np.array_equal(data.images[:, 0].numpy(), written[f"{key}_images"])
        assert np.array_equal(data.labels.numpy(), written[f"{key}_labels"])
        image, label = data[0]
        assert image.shape == (1, 28, 28) and isinstance(label, int)
        torch.testing.assert_close(image.double(), normalised(written[f"{key}_images"][:1, None],
                                                              FASHION_MNIST_MEAN, FASHION_MNIST_STD)[0],
                                   rtol=0, atol=1e-5)


def test_fashion_mnist_found_in_torchvision_raw_layout(tmp_path):
    written = write_fashion_mnist(tmp_path / "FashionMNIST" / "raw", train_size=5, test_size=3)
    data = load_dataset("fashion_mnist", root=tmp_path, train=False)
    assert np.array_equal(data.labels.numpy(), written["test_labels"])


def test_idx_header_is_the_documented_one(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((2, 28, 28), np.uint8), compress=False)
    head = path.read_bytes()[:16]
    assert [int.from_bytes(head[i:i + 4], "big") for i in range(0, 16, 4)] == [2051, 2, 28, 28]
    path = write_idx(tmp_path / "y.gz", np.zeros(5, np.uint8))
    assert int.from_bytes(gzip.decompress(path.read_bytes())[:4], "big") == 2049


# -- indexing and batching -----------------------------------------------------------------------

def test_batch_indexing_forms_agree(cifar10_root):
    data = load_dataset("cifar10", root=cifar10_root[0])
    idx = [5, 0, 22, 5]
    x, y = data[torch.tensor(idx)]
    for other in (data[idx], data[np.array(idx)], data.get_batch(idx)):
        assert torch.equal(other[0], x) and torch.equal(other[1], y)
    assert torch.equal(data[2:5][0], data[[2, 3, 4]][0])
    assert torch.equal(data[-1][0], data[22][0])
    pairs = data.__getitems__(idx)
    assert all(torch.equal(img, x[i]) and lab == int(y[i]) for i, (img, lab) in enumerate(pairs))


def test_dataloader_default_collate_gets_the_same_batch(cifar10_root):
    data = load_dataset("cifar10", root=cifar10_root[0], augment=True, seed=3)
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=False)
    x, y = next(iter(loader))
    ex, ey = data[torch.arange(8)]
    assert torch.equal(x, ex) and torch.equal(y, ey)


def test_negative_indices_wrap_and_the_caller_index_is_left_as_it_was(cifar10_root):
    data = load_dataset("cifar10", root=cifar10_root[0])
    idx = torch.tensor([-1, 0, 5, -23])
    x, y = data.get_batch(idx)
    ex, ey = data.get_batch(torch.tensor([22, 0, 5, 0]))
    assert torch.equal(x, ex) and torch.equal(y, ey)
    assert idx.tolist() == [-1, 0, 5, -23]
    plain = torch.tensor([3, 1, 4])                      # no negative index: gathered as given
    assert torch.equal(data.get_batch(plain)[0], data[[3, 1, 4]][0]) and plain.tolist() == [3, 1, 4]


def test_bad_indices_name_the_rule(cifar10_root):
    data = load_dataset("cifar10", root=cifar10_root[0])
    with pytest.raises(ParameterError, match=r"'index' parameter of ImageDataset.get_batch must be in \[-23, 23\)"):
        data[torch.tensor([0, 23])]
    with pytest.raises(ParameterError, match=r"Got index=\(-24, 3\) instead"):   # the smallest and largest given
        data[torch.tensor([3, -24, 0])]
    with pytest.raises(ParameterError, match=r"'index' .* must be a 1-D integer tensor"):
        data[torch.tensor([0.5])]


# -- augmentation --------------------------------------------------------------------------------

def test_augmentation_only_on_the_augmented_view(cifar10_root):
    root, written = cifar10_root
    train = load_dataset("cifar10", root=root, augment=True, seed=7)
    plain = train.without_augmentation()
    assert plain.images.data_ptr() == train.images.data_ptr()   # same storage, no copy
    idx = torch.arange(len(train))
    x_plain, _ = plain[idx]
    torch.testing.assert_close(x_plain.double(), normalised(written["train_images"], CIFAR10_MEAN, CIFAR10_STD),
                               rtol=0, atol=1e-5)
    x_aug, y_aug = train[idx]
    assert torch.equal(y_aug, plain.labels)
    changed = (x_aug != x_plain).flatten(1).any(1)
    assert changed.float().mean() > 0.7          # P(identity crop, no flip) = 1/162 per image
    with pytest.raises(ParameterError, match=r"'augment' parameter of load_dataset must be False for the test split"):
        load_dataset("cifar10", root=root, train=False, augment=True)


def test_augmented_images_are_crops_and_flips_of_the_padded_original(cifar10_root):
    train = load_dataset("cifar10", root=cifar10_root[0], augment=True, seed=11)
    train.set_epoch(3)
    idx = torch.arange(len(train))
    dy, dx, flip = augmentation_params(11, 3, idx, 4)
    expected = reference_crop_flip(train.images, dy, dx, flip, 4)
    assert torch.equal(train[idx][0], train.to_float(expected))


def test_augmentation_is_a_function_of_seed_epoch_and_index(cifar10_root):
    root = cifar10_root[0]
    a = load_dataset("cifar10", root=root, augment=True, seed=1)
    b = load_dataset("cifar10", root=root, augment=True, seed=1)
    idx = torch.tensor([3, 9, 14])
    assert torch.equal(a[idx][0], b[idx][0])
    # independent of the batch a sample lands in (and of batch size, fetch order)
    assert torch.equal(a[torch.tensor([20, 9, 1, 2])][0][1], a[idx][0][1])
    assert torch.equal(a[9][0], a[idx][0][1])
    b.set_epoch(1)
    assert not torch.equal(a[idx][0], b[idx][0])
    c = load_dataset("cifar10", root=root, augment=True, seed=2)
    assert not torch.equal(a[idx][0], c[idx][0])


def test_augmentation_parameters_cover_the_range_uniformly():
    dy, dx, flip = augmentation_params(0, 0, torch.arange(18_000), 4)
    for offsets in (dy, dx):
        counts = torch.bincount(offsets, minlength=9)
        assert counts.numel() == 9 and int(counts.min()) > 1800 and int(counts.max()) < 2200  # 2000 ± 4.5σ
    assert 0.48 < flip.float().mean().item() < 0.52
    assert abs(float(torch.corrcoef(torch.stack([dy.float(), dx.float()]))[0, 1])) < 0.03


def test_crop_flip_matches_the_loop_reference_with_a_generator():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 8, 10), dtype=torch.uint8, generator=gen)
    for p in (0, 2, 4):
        dy, dx, flip = random_params(16, p, torch.Generator().manual_seed(p))
        assert torch.equal(crop_flip(images, dy, dx, flip, p), reference_crop_flip(images, dy, dx, flip, p))
    again = random_params(16, 4, torch.Generator().manual_seed(4))
    assert all(torch.equal(u, v) for u, v in zip(again, random_params(16, 4, torch.Generator().manual_seed(4))))


def test_explicit_generator_is_deterministic(cifar10_root):
    train = load_dataset("cifar10", root=cifar10_root[0], augment=True)
    idx = torch.arange(10)
    first = train.get_batch(idx, generator=torch.Generator().manual_seed(5))[0]
    second = train.get_batch(idx, generator=torch.Generator().manual_seed(5))[0]
    assert torch.equal(first, second)


def test_fashion_mnist_augmentation_keeps_the_shape(fmnist_root):
    train = load_dataset("fashion_mnist", root=fmnist_root[0], augment=True)
    x, _ = train[torch.arange(6)]
    assert x.shape == (6, 1, 28, 28)


# -- subsets ---------------------------------------------------------------------------------------

def test_subsets_first_and_seeded_random(fmnist_root):
    root, written = fmnist_root
    first = load_dataset("fashion_mnist", root=root, subset=10)
    assert np.array_equal(first.labels.numpy(), written["train_labels"][:10])
    r1 = load_dataset("fashion_mnist", root=root, subset=10, subset_mode="random", seed=3)
    r2 = load_dataset("fashion_mnist", root=root, subset=10, subset_mode="random", seed=3, augment=True)
    chosen = select_subset(30, 10, "random", seed=3)
    assert torch.equal(r1.images, r2.images)              # the augmented view sees the same subset
    assert np.array_equal(r1.labels.numpy(), written["train_labels"][chosen.numpy()])
    assert torch.all(chosen[1:] > chosen[:-1])
    assert not torch.equal(chosen, select_subset(30, 10, "random", seed=4))
    with pytest.raises(ParameterError, match=r"'subset' parameter of load_dataset must be <= the number of "
                                             r"training samples \(30\)\. Got subset=31"):
        load_dataset("fashion_mnist", root=root, subset=31)


# -- missing and malformed data: one message with the path and the layout ------------------------

def test_missing_cifar_folder_says_where_and_what(tmp_path):
    where = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", root=where)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(where / "cifar-10-batches-py") in msg and "does not exist" in msg
    for f in ("data_batch_1", "data_batch_5", "test_batch", "batches.meta", "b'labels'", "torchvision"):
        assert f in msg
    assert "\n" not in msg


def test_missing_cifar100_file_is_named(tmp_path):
    write_cifar(tmp_path, "cifar100", train_size=4, test_size=2)
    os.remove(tmp_path / "cifar-100-python" / "test")
    with pytest.raises(DatasetNotFoundError, match=r"missing: test\)") as info:
        load_dataset("cifar100", root=tmp_path, train=False)
    assert str(tmp_path / "cifar-100-python") in str(info.value) and "fine_labels" in str(info.value)


def test_cifar_without_root_explains_that_nothing_is_downloaded():
    with pytest.raises(DatasetNotFoundError, match=r"never downloaded.*Got root=None"):
        load_dataset("cifar100")


def test_malformed_cifar_batch_is_named(tmp_path):
    written = write_cifar(tmp_path, "cifar10", train_size=10, test_size=2)
    bad = written["folder"] / "data_batch_3"
    with open(bad, "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, fh, protocol=2)
    with pytest.raises(MalformedDatasetError, match=r"data_batch_3 is malformed: b'data' is a uint8 array of "
                                                    r"shape \(2, 3000\), expected uint8 N×3072"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_pickle_cannot_run_code(tmp_path):
    written = write_cifar(tmp_path, "cifar10", train_size=5, test_size=2)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    with open(written["folder"] / "test_batch", "wb") as fh:
        pickle.dump({b"data": Evil()}, fh, protocol=2)
    with pytest.raises(MalformedDatasetError, match=r"test_batch is malformed: .*not allowed"):
        load_dataset("cifar10", root=tmp_path, train=False)
    assert not marker.exists()


def test_missing_fashion_mnist_says_where_and_what(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion_mnist", root=tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and "missing: train-images-idx3-ubyte, train-labels-idx1-ubyte" in msg
    assert "t10k-images-idx3-ubyte" in msg and DEBIAN_FASHION_MNIST in msg


@pytest.mark.parametrize("damage, problem", [
    ("truncate", r"truncated: header says shape \(30, 28, 28\)"),
    ("trailing", r"has trailing bytes"),
    ("magic", r"magic number 2049, expected 2051"),
    ("gzip", r"broken gzip stream"),
])
def test_malformed_idx_file_is_named(tmp_path, damage, problem):
    write_fashion_mnist(tmp_path, train_size=30, test_size=2)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(gzip.compress(raw[:-100]))
    elif damage == "trailing":
        path.write_bytes(gzip.compress(raw + b"\0"))
    elif damage == "magic":
        path.write_bytes(gzip.compress((2049).to_bytes(4, "big") + raw[4:]))
    else:
        path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(MalformedDatasetError, match=rf"file {path} is malformed: {problem}"):
        load_dataset("fashion_mnist", root=tmp_path)


def test_image_and_label_counts_must_agree(tmp_path):
    write_fashion_mnist(tmp_path, train_size=6, test_size=2)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(MalformedDatasetError, match=r"holds 6 images but .* holds 5 labels"):
        load_dataset("fashion_mnist", root=tmp_path)


def test_image_dataset_validates_its_inputs():
    images = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(ParameterError, match=r"'labels' parameter of ImageDataset must be in \{0, \.\.\., 1\}"):
        ImageDataset(images, torch.tensor([0, 1, 2]), num_classes=2, mean=(0.5,), std=(0.5,))
    with pytest.raises(ParameterError, match=r"'images' parameter of ImageDataset must be a uint8 tensor"):
        ImageDataset(images.float(), torch.tensor([0, 1, 1]), num_classes=2, mean=(0.5,), std=(0.5,))
    with pytest.raises(ParameterError, match=r"'std' parameter of ImageDataset must be > 0"):
        ImageDataset(images, torch.tensor([0, 1, 1]), num_classes=2, mean=(0.5,), std=(0.0,))


# -- the real Fashion-MNIST (Debian's dataset-fashion-mnist) ---------------------------------------

real_fmnist = pytest.mark.skipif(not Path(DEBIAN_FASHION_MNIST, "train-images-idx3-ubyte.gz").is_file(),
                                 reason=f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_FASHION_MNIST})")


@real_fmnist
def test_real_fashion_mnist_sizes_classes_and_normalisation():
    train = load_dataset("fashion_mnist")
    test = load_dataset("fashion_mnist", train=False)
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.image_shape == (1, 28, 28) and train.num_classes == 10 and len(train.classes) == 10
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 1000))
    hist = torch.bincount(train.images.flatten(), minlength=256).double()   # exact pixel statistics
    values = torch.arange(256, dtype=torch.float64) / 255
    mean = (hist * values).sum() / hist.sum()
    std = ((hist * (values - mean) ** 2).sum() / hist.sum()).sqrt()
    assert abs(mean.item() - FASHION_MNIST_MEAN[0]) < 1e-4 and abs(std.item() - FASHION_MNIST_STD[0]) < 1e-4
    x, _ = train[torch.arange(0, 60_000, 6)]   # 10 000 normalised images: mean ≈ 0, std ≈ 1
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1) < 0.02


@real_fmnist
def test_real_fashion_mnist_cpu_subset():
    sub = load_dataset("fashion_mnist", subset=10_000, subset_mode="random", seed=0, augment=True)
    assert len(sub) == 10_000 and sub.augment
    counts = torch.bincount(sub.labels, minlength=10)
    assert int(counts.min()) > 850 and int(counts.max()) < 1150


def test_moving_to_a_device_keeps_the_batches(cifar10_root):
    train = load_dataset("cifar10", root=cifar10_root[0], augment=True, seed=2)
    moved = train.to("cpu")
    idx = torch.tensor([1, 7, 4])
    assert moved.images.device.type == "cpu"
    assert torch.equal(moved[idx][0], train[idx][0])


def test_resizable_loader_fetches_whole_batches(cifar10_root):
    sampler = pytest.importorskip("sfotorch.sampler")
    train = load_dataset("cifar10", root=cifar10_root[0], augment=True, seed=2)
    loader = sampler.ResizableLoader(train, batch_size=4, seed=0, shuffle=False)
    batches = iter(loader)
    x, y = next(batches)
    assert torch.equal(x, train[torch.arange(4)][0]) and torch.equal(y, train.labels[:4])
    loader.batch_size = 6
    x, _ = next(batches)
    assert torch.equal(x, train[torch.arange(4, 10)][0])


def python2_pickle(data: np.ndarray, labels) -> bytes:
    """The bytes Python 2's cPickle (protocol 2) writes for {'data': uint8 array, 'labels': [...]}.

    The real CIFAR files were written this way: keys and the array buffer are py2 ``str``
    (BINSTRING opcodes), the array is rebuilt by ``numpy.core.multiarray._reconstruct``.
    """
    def binstring(b: bytes) -> bytes:
        return b"T" + len(b).to_bytes(4, "little") + b

    def binint(v: int) -> bytes:
        return b"J" + int(v).to_bytes(4, "little", signed=True)

    n, m = data.shape
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + binint(0) + b"\x85"
             + binstring(b"b") + b"\x87R"
             + b"(" + binint(1) + binint(n) + binint(m) + b"\x86"
             + b"cnumpy\ndtype\n" + binstring(b"u1") + binint(0) + binint(1) + b"\x87R"
             + b"(" + binint(3) + binstring(b"|") + b"NNN" + binint(-1) + binint(-1) + binint(0) + b"tb"
             + b"\x89" + binstring(np.ascontiguousarray(data).tobytes()) + b"tb")
    label_list = b"](" + b"".join(binint(v) for v in labels) + b"e"
    return b"\x80\x02}(" + binstring(b"data") + array + binstring(b"labels") + label_list + b"u."


def test_python2_pickles_like_the_real_cifar_files_load(tmp_path):
    written = write_cifar(tmp_path, "cifar10", train_size=5, test_size=6, seed=8)
    flat = written["test_images"].reshape(6, 3072)
    (written["folder"] / "test_batch").write_bytes(python2_pickle(flat, written["test_labels"]))
    data = load_dataset("cifar10", root=tmp_path, train=False)
    assert np.array_equal(data.images.numpy(), written["test_images"])
    assert np.array_equal(data.labels.numpy(), written["test_labels"])
