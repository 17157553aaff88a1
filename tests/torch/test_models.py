"""Models: forward/backward shapes, parameter counts against closed-form sums, channels_last, autocast."""

import pytest

torch = pytest.importorskip("torch")

from sfotheory.validation import ParameterError  # noqa: E402
from sfotorch.models import (MODELS, TEXT_MODELS, DenseNet, SmallCNN, build_model, count_parameters,  # noqa: E402
                             densenet_cifar, resnet18)

#: the image classifiers (tiny_gpt reads token ids: tests/torch/test_lm.py)
IMAGE_MODELS = sorted(set(MODELS) - set(TEXT_MODELS))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny batches run faster on one thread: measured on 2 busy cores, DenseNet forward+backward on
    2×3×32×32 took 0.12 s with 1 thread and 0.65–8 s with 2 (OpenMP overhead dominates)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

# -- closed-form parameter counts, derived from the architectures -----------------------------


def conv(c_in, c_out, k, bias=False):
    return c_in * c_out * k * k + (c_out if bias else 0)


def bn(c):
    return 2 * c  # weight and bias (running statistics are buffers)


def linear(c_in, c_out):
    return c_in * c_out + c_out


def resnet18_formula(num_classes, in_channels=3):
    total = conv(in_channels, 64, 3) + bn(64)
    c = 64
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for j in range(2):
            s = stride if j == 0 else 1
            total += conv(c, width, 3) + bn(width) + conv(width, width, 3) + bn(width)
            if s != 1 or c != width:
                total += conv(c, width, 1) + bn(width)
            c = width
    return total + linear(512, num_classes)


def densenet_formula(num_classes, in_channels=3, blocks=(6, 12, 24, 16), k=12, reduction=1.0):
    c = 2 * k
    total = conv(in_channels, c, 3)
    for i, n in enumerate(blocks):
        for _ in range(n):  # Bottleneck: BN-ReLU-conv1x1 (c -> 4k), BN-ReLU-conv3x3 (4k -> k)
            total += bn(c) + conv(c, 4 * k, 1) + bn(4 * k) + conv(4 * k, k, 3)
            c += k
        if i < len(blocks) - 1:  # Transition: BN-ReLU-conv1x1 (c -> floor(theta c)), avg-pool
            out = int(c * reduction)
            total += bn(c) + conv(c, out, 1)
            c = out
    return total + bn(c) + linear(c, num_classes)


def small_cnn_formula(num_classes, in_channels, batch_norm):
    total, c = 0, in_channels
    for w in (32, 64, 128):
        total += conv(c, w, 3, bias=not batch_norm) + (bn(w) if batch_norm else 0)
        c = w
    return total + linear(128, num_classes)


@pytest.mark.parametrize("num_classes, known", [(10, 11_173_962), (100, 11_220_132)])
def test_resnet18_parameter_count_matches_formula_and_known_value(num_classes, known):
    assert resnet18_formula(num_classes) == known
    assert count_parameters(resnet18(num_classes)) == known


@pytest.mark.parametrize("num_classes, known", [(10, 1_724_266), (100, 1_789_156)])
def test_densenet_parameter_count_matches_formula(num_classes, known):
    assert densenet_formula(num_classes) == known
    model = densenet_cifar(num_classes)
    assert count_parameters(model) == known
    assert model.num_features == 2 * 12 + 12 * (6 + 12 + 24 + 16) == 720  # no compression: nothing lost


def test_densenet_transitions_keep_channels_and_halve_the_map():
    model = densenet_cifar(10)
    transitions = [m for m in model.modules() if type(m).__name__ == "Transition"]
    assert [t.conv.in_channels for t in transitions] == [96, 240, 528]
    assert all(t.conv.out_channels == t.conv.in_channels for t in transitions)
    bottlenecks = [m for m in model.modules() if type(m).__name__ == "Bottleneck"]
    assert len(bottlenecks) == 6 + 12 + 24 + 16
    assert {(b.conv1.out_channels, b.conv2.out_channels) for b in bottlenecks} == {(48, 12)}


def test_densenet_with_compression_matches_formula():
    model = DenseNet((2, 3), growth_rate=6, reduction=0.5, num_classes=7, in_channels=1)
    assert count_parameters(model) == densenet_formula(7, 1, (2, 3), 6, 0.5)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_small_cnn_parameter_count_is_about_100k(in_channels, batch_norm):
    n = count_parameters(SmallCNN(10, in_channels, batch_norm))
    assert n == small_cnn_formula(10, in_channels, batch_norm)
    assert 90_000 <= n <= 110_000


@pytest.mark.parametrize("name, num_classes, shape", [
    ("resnet18", 10, (3, 32, 32)),
    ("densenet", 100, (3, 32, 32)),
    ("small_cnn", 10, (1, 28, 28)),
    ("small_cnn", 100, (3, 32, 32)),
])
def test_forward_backward_on_a_tiny_batch(name, num_classes, shape):
    torch.manual_seed(0)
    model = build_model(name, num_classes, in_channels=shape[0])
    x = torch.randn(2, *shape)
    y = torch.tensor([0, num_classes - 1])
    out = model(x)
    assert out.shape == (2, num_classes) and out.dtype == torch.float32
    torch.nn.functional.cross_entropy(out, y).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_one_channel_models_accept_fashion_mnist_size(name):
    model = build_model(name, 10, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_channels_last_gives_the_same_output(name):
    torch.manual_seed(1)
    model = build_model(name, 10).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        got = model_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_bf16_autocast_runs_without_model_changes(name):
    torch.manual_seed(2)
    model = build_model(name, 10)
    x = torch.randn(2, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(ParameterError, match=r"'name' parameter of build_model must be one of "
                                             r"'densenet', 'resnet18', 'small_cnn', 'tiny_gpt'\. Got name='vgg' instead"):
        build_model("vgg", 10)


def test_unknown_keyword_and_bad_class_count_are_named():
    with pytest.raises(ParameterError, match=r"'depth' parameter of build_model .*batch_norm.*Got depth=3"):
        build_model("small_cnn", 10, depth=3)
    with pytest.raises(ParameterError, match=r"'num_classes' parameter of build_model must be >= 1\. Got num_classes=0"):
        build_model("resnet18", 0)
    with pytest.raises(ParameterError, match=r"'reduction' parameter of DenseNet .*Got reduction=1.5"):
        DenseNet(reduction=1.5)


def test_small_cnn_batch_norm_flag_removes_conv_biases():
    with_bn = SmallCNN(10, 1, batch_norm=True)
    convs = [m for m in with_bn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in with_bn.modules()) == 3
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in SmallCNN(10, 1).modules())
