"""The language-model workload: the fortunes loader, the tiny transformer, the sequence loss, per-sample
gradient norms over sequences (Embedding, Linear over (b, T, d), LayerNorm, tied embeddings) against
torch.func, and `sfo train` on a tiny text configuration (CPU, seconds)."""

from __future__ import annotations

import math
import os

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.func import functional_call, grad, vmap  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from sfotheory.validation import ParameterError  # noqa: E402
from sfotorch import datasets as ds  # noqa: E402
from sfotorch.components import build_components  # noqa: E402
from sfotorch.config import load_config_text  # noqa: E402
from sfotorch.datasets import (DEBIAN_FORTUNES, DatasetNotFoundError, MalformedDatasetError, TextDataset,  # noqa: E402
                               load_dataset, load_fortunes, read_fortunes, split_fortunes)
from sfotorch.evaluation import evaluate  # noqa: E402
from sfotorch.losses import SequenceCrossEntropy  # noqa: E402
from sfotorch.models import TinyGPT, build_model, count_parameters  # noqa: E402
from sfotorch.monitors import DebiasedMonitor, ExactMonitor  # noqa: E402
from sfotorch.monitors.per_sample_norms import PerSampleNorms, graph_parameter_uses  # noqa: E402
from sfotorch.device import resolve_device  # noqa: E402
from sfotorch.sfolog import read_log  # noqa: E402
from sfotorch.train import train  # noqa: E402

# vmap over scaled_dot_product_attention falls back to a loop (a performance warning, not an error)
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")

HAVE_FORTUNES = os.path.isdir(DEBIAN_FORTUNES)


# -- helpers -------------------------------------------------------------------------------------------

def brute_per_parameter(model, x, y, loss_fn):
    """{name: ‖∇_p f_i‖², (b,)} by torch.func: vmap over grad of the one-sample loss, the model's
    parameters as functional_call sees them (a tied weight once, with both uses' gradients added)."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    frozen.update(dict(model.named_buffers()))

    def one(theta, xi, yi):
        return loss_fn(functional_call(model, {**frozen, **theta}, (xi[None],)), yi[None])

    grads = vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)
    return {n: g.reshape(x.shape[0], -1).double().pow(2).sum(1) for n, g in grads.items()}


def brute_per_sample_sq_norms(model, x, y, loss_fn):
    """‖∇_θ f_i‖² by torch.func (float64 sums over the parameters)."""
    return sum(brute_per_parameter(model, x, y, loss_fn).values())


def hook_sq_norms(model, x, y, reduction="mean", tied=None):
    """s_i from the hooks inside one ordinary backward (c = 1/b undone); ``tied`` overrides the set of
    parameters whose uses are added before the norm (to show what ignoring the tie gives)."""
    loss_fn = SequenceCrossEntropy(reduction)
    norms = PerSampleNorms(model, [p for p in model.parameters() if p.requires_grad], where="test")
    if tied is not None:
        norms.tied = tied
    with norms.recording():
        loss_fn(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    c = 1.0 / x.shape[0] if reduction == "mean" else 1.0
    return norms.sq_norms.double() / c ** 2


def tiny_gpt(vocab=11, context=8, tie=True, seed=0, **kw):
    torch.manual_seed(seed)
    model = TinyGPT(vocab_size=vocab, context=context, d_model=16, n_layers=2, n_heads=2, tie_weights=tie, **kw)
    with torch.no_grad():                 # LayerNorm affine away from (1, 0), so its formula is exercised
        for mod in model.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.normal_(1.0, 0.3)
                mod.bias.normal_(0.0, 0.3)
    return model


def tokens(b, t, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, t), generator=g), torch.randint(0, vocab, (b, t), generator=g)


def write_fortunes(root, files: dict[str, list[str]]):
    """Fortune files in strfile's text format: the fortunes of each file separated by lines holding '%'."""
    os.makedirs(root, exist_ok=True)
    for name, fortunes in files.items():
        with open(os.path.join(root, name), "w", encoding="utf-8") as fh:
            fh.write("%\n".join(f.rstrip("\n") + "\n" for f in fortunes))


def generated_fortunes(k: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "today", "--", "Anon"]
    out = []
    for i in range(k):
        n = int(torch.randint(4, 14, (1,), generator=g))
        out.append(f"{i}: " + " ".join(words[int(j)] for j in torch.randint(0, len(words), (n,), generator=g)))
    return out


# -- per-sample gradient norms over sequences ------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_hook_norms_on_the_tiny_transformer_equal_torch_func_per_sample_gradients(tie, reduction):
    # float32 on both sides; rtol 1e-5 (float32 sums of a few thousand products)
    model = tiny_gpt(tie=tie)
    x, y = tokens(5, 8, 11, seed=1)
    expected = brute_per_sample_sq_norms(model, x, y, SequenceCrossEntropy())
    torch.testing.assert_close(hook_sq_norms(model, x, y, reduction), expected, rtol=1e-5, atol=1e-9)


def test_the_tied_embedding_needs_its_two_uses_added_before_the_norm():
    # what the hooks would give if the two uses of E were normed apart: Σ_u ‖G^(u)‖² ≠ ‖Σ_u G^(u)‖²;
    # the comparison above would fail by far more than its tolerance (this is what it guards)
    model = tiny_gpt(tie=True)
    x, y = tokens(5, 8, 11, seed=1)
    expected = brute_per_sample_sq_norms(model, x, y, SequenceCrossEntropy())
    apart = hook_sq_norms(model, x, y, tied=set())
    assert (apart / expected - 1).abs().max() > 1e-3
    torch.testing.assert_close(hook_sq_norms(model, x, y), expected, rtol=1e-5, atol=1e-9)


def test_tied_weight_is_one_parameter_counted_once_and_the_graph_sees_both_uses():
    model = tiny_gpt(tie=True)
    assert model.head.weight is model.tok_emb.weight
    assert count_parameters(model) == count_parameters(tiny_gpt(tie=False)) - 11 * 16
    out = model(tokens(2, 8, 11, seed=0)[0])
    assert graph_parameter_uses(out, [model.tok_emb.weight])[id(model.tok_emb.weight)] == 2


class TokenBag(nn.Module):
    """Embedding over (b, T) ids → mean over T → Linear; per-sample loss is cross-entropy on one label."""

    def __init__(self, vocab, d, padding_idx=None):
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=padding_idx)
        self.lin = nn.Linear(d, 3)

    def forward(self, ids):
        return self.lin(torch.tanh(self.emb(ids)).mean(1))


@pytest.mark.parametrize("case", ["gram", "materialised", "padding_idx"])
def test_embedding_norms_by_gram_and_by_scatter_add_equal_torch_func(case):
    # V > T² takes the Gram form Σ_{t,s}[x_t = x_s] g_t·g_s, V ≤ T² the scatter-added V × d matrix;
    # repeated ids within a sequence make the cross terms non-zero
    vocab, t = {"gram": (50, 4), "materialised": (5, 6), "padding_idx": (5, 6)}[case]
    torch.manual_seed(0)
    model = TokenBag(vocab, 4, padding_idx=0 if case == "padding_idx" else None)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, min(vocab, 6), (7, t), generator=g)          # few distinct ids: repeats
    y = torch.randint(0, 3, (7,), generator=g)
    loss_fn = nn.CrossEntropyLoss()
    expected = brute_per_sample_sq_norms(model, ids, y, loss_fn)
    norms = PerSampleNorms(model, list(model.parameters()), where="test")
    with norms.recording():
        loss_fn(model(ids), y).backward()
    torch.testing.assert_close(norms.sq_norms.double() * 7 ** 2, expected, rtol=1e-5, atol=1e-9)
    # the per-token sum Σ_t ‖g_t‖² (g_t = ∂f_i/∂ emb output t) misses the cross terms of repeated ids
    model.zero_grad()
    out = model.emb(ids)
    out.retain_grad()
    loss_fn(model.lin(torch.tanh(out).mean(1)), y).backward()
    naive = (out.grad * 7).double().pow(2).sum((1, 2))
    assert (naive / brute_per_parameter(model, ids, y, loss_fn)["emb.weight"] - 1).abs().max() > 1e-2


def test_a_module_called_twice_is_exact_its_two_uses_added():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.ln = nn.LayerNorm(3)

        def forward(self, x):                   # (b, T, 3): the same Linear and LayerNorm twice
            return self.lin(torch.tanh(self.lin(self.ln(self.ln(x))))).mean(1)

    torch.manual_seed(0)
    model = Twice()
    with torch.no_grad():
        model.ln.weight.normal_(1.0, 0.3)
        model.ln.bias.normal_(0.0, 0.3)
    x = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(1))
    y = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    loss_fn = nn.MSELoss(reduction="sum")
    expected = brute_per_sample_sq_norms(model, x, y, loss_fn)
    norms = PerSampleNorms(model, list(model.parameters()), where="test")
    with norms.recording():
        loss_fn(model(x), y).backward()
    torch.testing.assert_close(norms.sq_norms.double(), expected, rtol=1e-5, atol=1e-9)


def test_a_shared_convolution_weight_is_exact():
    class SharedConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv1d(2, 2, 3, padding=1, groups=2)
            self.b = nn.Conv1d(2, 2, 3, padding=1, groups=2)
            self.b.weight = self.a.weight                      # two modules, one weight, separate biases

        def forward(self, x):
            return self.b(torch.tanh(self.a(x))).flatten(1)

    torch.manual_seed(0)
    model = SharedConv()
    x = torch.randn(5, 2, 6, generator=torch.Generator().manual_seed(1))
    y = torch.randn(5, 12, generator=torch.Generator().manual_seed(2))
    expected = brute_per_sample_sq_norms(model, x, y, nn.MSELoss(reduction="sum"))
    norms = PerSampleNorms(model, list(model.parameters()), where="test")
    with norms.recording():
        nn.MSELoss(reduction="sum")(model(x), y).backward()
    torch.testing.assert_close(norms.sq_norms.double(), expected, rtol=1e-5, atol=1e-9)


def test_a_weight_tied_through_f_linear_is_refused_by_name():
    class FunctionalTie(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(7, 4)
            self.ln = nn.LayerNorm(4)

        def forward(self, ids):                  # the head's use of emb.weight is invisible to module hooks
            return F.linear(self.ln(self.emb(ids)), self.emb.weight)

    model = FunctionalTie()
    mon = DebiasedMonitor(model, SequenceCrossEntropy(), variance_source="per_sample_norms")
    x, y = tokens(3, 5, 7, seed=0)
    with pytest.raises(ParameterError, match=r"'model' parameter of DebiasedMonitor .*used only through the modules"
                                             r".*graph uses it 2 times, the hooked modules 1 .*Got model='emb.weight'"):
        mon.backward(x, y)


def test_embedding_with_scale_grad_by_freq_is_refused():
    model = nn.Sequential(nn.Embedding(5, 3, scale_grad_by_freq=True), nn.Flatten(), nn.Linear(6, 2))
    with pytest.raises(ParameterError, match=r"0 \(Embedding\): scale_grad_by_freq .* couples the samples"):
        DebiasedMonitor(model, nn.CrossEntropyLoss(), variance_source="per_sample_norms")


def test_debiased_trace_on_the_transformer_equals_the_torch_func_trace():
    model = tiny_gpt(tie=True)
    x, y = tokens(6, 8, 11, seed=3)
    hooks = DebiasedMonitor(model, SequenceCrossEntropy(), variance_source="per_sample_norms")
    func = DebiasedMonitor(model, SequenceCrossEntropy(), variance_source="per_sample")
    hooks.backward(x, y)
    model.zero_grad(set_to_none=True)
    func.backward(x, y)
    model.zero_grad(set_to_none=True)
    a, b = hooks.measure(), func.measure()
    assert a.trace_cov == pytest.approx(b.trace_cov, rel=1e-5)


# -- the loss and the evaluation ------------------------------------------------------------------------

def test_sequence_loss_is_the_mean_token_loss_per_sequence_summed_or_averaged_over_sequences():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(3, 5, 7, generator=g), torch.randint(0, 7, (3, 5), generator=g)
    f = torch.stack([F.cross_entropy(z[i], y[i]) for i in range(3)])          # f_i: mean over the 5 tokens
    torch.testing.assert_close(SequenceCrossEntropy()(z, y), f.mean())
    torch.testing.assert_close(SequenceCrossEntropy("sum")(z, y), f.sum())
    assert not torch.allclose(nn.CrossEntropyLoss(reduction="sum")(z.transpose(1, 2), y), f.sum())  # T Σ f_i
    with pytest.raises(ParameterError, match="'logits' parameter of SequenceCrossEntropy"):
        SequenceCrossEntropy()(z[0], y[0])


def test_exact_monitor_gives_the_same_gradient_with_either_reduction():
    model = tiny_gpt()
    data = TextDataset(torch.randint(0, 11, (200,), generator=torch.Generator().manual_seed(0)), context=8,
                       vocab_size=11)
    a = ExactMonitor(model, data, SequenceCrossEntropy("mean"), batch_size=7).measure().norm
    b = ExactMonitor(model, data, SequenceCrossEntropy("sum"), batch_size=5).measure().norm
    x, y = data.get_batch(slice(None))
    model.zero_grad()
    SequenceCrossEntropy()(model(x), y).backward()
    full = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters()))
    assert a == pytest.approx(full, rel=1e-5) and b == pytest.approx(full, rel=1e-5)


def test_evaluation_reports_the_mean_sequence_loss_token_accuracy_and_perplexity():
    model = tiny_gpt()
    data = TextDataset(torch.randint(0, 11, (100,), generator=torch.Generator().manual_seed(1)), context=8,
                       vocab_size=11)
    res = evaluate(model, data, batch_size=5, device="cpu")
    x, y = data.get_batch(slice(None))
    with torch.no_grad():
        logits = model(x)
    assert res["test_loss"] == pytest.approx(float(SequenceCrossEntropy()(logits, y)), rel=1e-6)
    assert res["test_acc"] == pytest.approx(float((logits.argmax(2) == y).double().mean()))
    assert res["test_ppl"] == pytest.approx(math.exp(res["test_loss"]))


# -- the model --------------------------------------------------------------------------------------------

def test_parameter_count_follows_the_formula_and_the_default_is_about_one_million():
    for v, t, d, layers in [(256, 128, 128, 5), (11, 8, 16, 2), (113, 64, 32, 3)]:
        model = TinyGPT(vocab_size=v, context=t, d_model=d, n_layers=layers, n_heads=4)
        assert count_parameters(model) == v * d + t * d + layers * (12 * d * d + 13 * d) + 2 * d
    assert count_parameters(build_model("tiny_gpt", 256, in_channels=1)) == 1_040_768


def test_attention_is_causal_and_samples_do_not_see_each_other():
    model = tiny_gpt().eval()
    x, _ = tokens(2, 8, 11, seed=4)
    x2 = x.clone()
    x2[0, 5:] = (x2[0, 5:] + 1) % 11                         # change sample 0's future tokens
    x2[1] = (x2[1] + 3) % 11                                 # and all of sample 1
    with torch.no_grad():
        a, b = model(x), model(x2)
    torch.testing.assert_close(a[0, :5], b[0, :5])
    assert not torch.allclose(a[0, 5:], b[0, 5:])


def test_model_refusals_name_the_parameter():
    with pytest.raises(ParameterError, match="'in_channels' parameter of tiny_gpt must be 1"):
        build_model("tiny_gpt", 256, in_channels=3)
    with pytest.raises(ParameterError, match="'d_model' parameter of TinyGPT must be a multiple of n_heads = 3"):
        TinyGPT(d_model=16, n_heads=3)
    with pytest.raises(ParameterError, match=r"'idx' parameter of TinyGPT.forward .*T <= context = 8.*\(2, 9\)"):
        tiny_gpt()(torch.zeros(2, 9, dtype=torch.long))


# -- the loader -------------------------------------------------------------------------------------------

def test_windows_shift_by_one_and_every_token_but_the_first_is_a_target_once():
    stream = torch.arange(23) % 7
    data = TextDataset(stream, context=5, vocab_size=7)
    assert len(data) == (23 - 1) // 5 == 4
    x, y = data.get_batch(torch.arange(4))
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(x.flatten(), stream[:20])
    assert torch.equal(y.flatten(), stream[1:21])
    xs, ys = zip(*data.__getitems__([3, 1]))
    assert torch.equal(torch.stack(xs), x[[3, 1]]) and torch.equal(data[2][1], y[2])
    loader = torch.utils.data.DataLoader(data, batch_size=3)
    assert torch.equal(next(iter(loader))[0], x[:3])
    with pytest.raises(ParameterError, match=r"'tokens' parameter of TextDataset must be ids in \{0, ..., 6\}"):
        TextDataset(torch.tensor([0, 7, 1]), context=1, vocab_size=7)


def test_fortune_files_are_split_on_percent_lines_and_index_files_are_skipped(tmp_path):
    write_fortunes(tmp_path, {"b": ["Second file.", "Shared quote."], "a": ["First.\n  -- someone", "Shared quote.",
                                                                           "Not % a separator."]})
    (tmp_path / "a.dat").write_bytes(b"\x00\x00\x00\x02binary index")
    os.symlink(tmp_path / "a", tmp_path / "a.u8")
    (tmp_path / "off").mkdir()
    (tmp_path / "off" / "rot13").write_text("Frperg.\n")
    (tmp_path / "c").write_text("%\n\n%\nLast one, no final newline")
    assert read_fortunes(tmp_path) == [b"First.\n  -- someone\n", b"Shared quote.\n", b"Not % a separator.\n",
                                       b"Second file.\n", b"Last one, no final newline\n"]


def test_split_is_deterministic_disjoint_complete_and_stable_when_files_are_added(tmp_path):
    fortunes = generated_fortunes(400)
    write_fortunes(tmp_path / "one", {"x": fortunes[:250], "y": fortunes[250:]})
    train1, val1 = split_fortunes(read_fortunes(tmp_path / "one"), 0.2)
    assert (train1, val1) == split_fortunes(read_fortunes(tmp_path / "one"), 0.2)
    assert sorted(train1 + val1) == sorted(f.encode() + b"\n" for f in fortunes) and not set(train1) & set(val1)
    assert 0.1 < len(val1) / 400 < 0.3
    # another file, and the files listed in another order: no fortune moves across the split
    write_fortunes(tmp_path / "two", {"w": generated_fortunes(100, seed=9), "y": fortunes[:250],
                                      "z": fortunes[250:]})
    train2, val2 = split_fortunes(read_fortunes(tmp_path / "two"), 0.2)
    assert set(train1) <= set(train2) and set(val1) <= set(val2)
    # the held-out split of the loader is exactly these fortunes, each followed by the separator line
    val = load_fortunes(tmp_path / "one", train=False, context=4, val_fraction=0.2)
    assert val.decode(val.sequences[:, :-1].flatten()) == b"".join(f + b"%\n" for f in val1).decode()[:val.tokens]


def test_char_level_vocabulary_is_the_sorted_alphabet_and_decodes_back(tmp_path):
    write_fortunes(tmp_path, {"f": ["Olé — ça va?", "plain ascii", "naïve"]})
    train, val = (load_fortunes(tmp_path, train=s, context=3, level="char", val_fraction=0.4) for s in (True, False))
    assert train.vocab == val.vocab == sorted(set("Olé — ça va?plain asciinaïve%\n"))
    assert train.num_classes == len(train.vocab) and train.level == "char"
    x, y = train[0]
    assert train.decode(torch.cat([x, y[-1:]])) in "".join(f.decode() + "%\n" for f in
                                                          split_fortunes(read_fortunes(tmp_path), 0.4)[0])
    byte = load_fortunes(tmp_path, context=3)
    assert byte.num_classes == 256 and byte.tokens > train.tokens           # é, —, ç, ï: several bytes each


def test_missing_fortunes_name_the_path_and_the_package(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    monkeypatch.setattr(ds.fortunes, "DEBIAN_FORTUNES", str(missing))
    with pytest.raises(DatasetNotFoundError, match=rf"'root' parameter of load_dataset\('fortunes'\).*apt-get install "
                                                   rf"fortunes.*{missing} does not exist"):
        load_dataset("fortunes")
    (tmp_path / "only_index").mkdir()
    (tmp_path / "only_index" / "x.dat").write_bytes(b"\x00")
    with pytest.raises(DatasetNotFoundError, match="holds no fortune file"):
        load_fortunes(tmp_path / "only_index")
    assert isinstance(DatasetNotFoundError("x"), FileNotFoundError)
    (tmp_path / "latin1").mkdir()
    (tmp_path / "latin1" / "old").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(MalformedDatasetError, match="not UTF-8"):
        load_fortunes(tmp_path / "latin1")


def test_loader_options_and_refusals(tmp_path):
    write_fortunes(tmp_path, {"f": generated_fortunes(60)})
    data = load_dataset("fortunes", root=str(tmp_path), subset=5, subset_mode="random", seed=1, context=6)
    assert len(data) == 5 and data.context == 6
    with pytest.raises(ParameterError, match="'augment' parameter of load_dataset must be False for the text"):
        load_dataset("fortunes", root=str(tmp_path), augment=True)
    with pytest.raises(ParameterError, match=r"'ctx' parameter .* accepts \(context, level, val_fraction\)"):
        load_dataset("fortunes", root=str(tmp_path), ctx=6)
    with pytest.raises(ParameterError, match="'level' parameter"):
        load_fortunes(tmp_path, level="word")
    with pytest.raises(ParameterError, match="'val_fraction' parameter of split_fortunes must be >= 0 and < 1"):
        load_fortunes(tmp_path, val_fraction=1.0)


@pytest.mark.skipif(not HAVE_FORTUNES, reason=f"{DEBIAN_FORTUNES} absent (apt-get install fortunes)")
def test_the_installed_fortunes_split_about_one_in_ten():
    fortunes = read_fortunes()
    train, val = split_fortunes(fortunes)
    assert len(fortunes) > 10_000 and 0.08 < len(val) / len(fortunes) < 0.12
    data = load_fortunes(context=64)
    assert data.num_classes == 256 and len(data) > 30_000


# -- sfo train ------------------------------------------------------------------------------------------

def lm_config(root, kind: str) -> str:
    return f"""
[run]
name = "tiny_lm"
progress_every = 0.0
[data]
dataset = "fortunes"
root = "{root}"
augment = false
subset = 48
options = {{ context = 12 }}
[model]
name = "tiny_gpt"
options = {{ d_model = 16, n_layers = 1, n_heads = 2 }}
[schedule]
policy = "adaptive_exponential"
b0 = 4
eta0 = 0.1
eps0 = 100.0
delta = 2.0
gamma = 1.4
tau = 3
b_max = 16
[monitor]
kind = "{kind}"
batch_size = 16
{"stats_every = 1" if kind == "debiased" else ""}
[train]
max_steps = 9
[eval]
every = "check"
test_subset = 8
"""


@pytest.mark.parametrize("kind", ["exact", "debiased"])
def test_sfo_train_runs_the_language_model_and_logs_validation_loss(tmp_path, kind):
    root = tmp_path / "fortunes"
    write_fortunes(root, {"f": generated_fortunes(150)})
    cfg = load_config_text(lm_config(root, kind), "tiny_lm.toml")
    if kind == "debiased":          # variance_source "auto" picks the hooks: every layer of tiny_gpt has them
        built = build_components(cfg, 0, resolve_device(cfg))
        assert built.monitor.screen.variance_source == "per_sample_norms"   # screened by default
    res = train(cfg, out_dir=str(tmp_path / "run"))
    log = read_log(tmp_path / "run" / "seed0" / "log.jsonl")
    assert log[0]["kind"] == "start" and log[-1]["kind"] == "end" and log[-1]["status"] == "finished"
    assert log[0]["dataset"] == "fortunes" and log[0]["model"] == "tiny_gpt" and log[0]["n"] == 48
    checks = [r for r in log if r["kind"] == "check"]
    evals = [r for r in log if r["kind"] == "eval"]
    assert [r["step"] for r in checks] == [3, 6, 9] and all(math.isfinite(r["norm"]) for r in checks)
    assert checks[0]["b_next"] == 8                          # ε₀ = 100: every check advances the stage
    assert all(r["test_ppl"] == pytest.approx(math.exp(r["test_loss"])) and r["n_test"] == 8 for r in evals)
    assert res["runs"][0]["test_loss"] == evals[-1]["test_loss"] < math.log(256)


def test_config_refusals_for_text(tmp_path):
    text = lm_config(tmp_path, "exact")
    with pytest.raises(ParameterError, match="'data.augment' parameter .* false for the text data set 'fortunes'"):
        load_config_text(text.replace("augment = false", "augment = true"))
    with pytest.raises(ParameterError, match="'run.channels_last' parameter"):
        load_config_text(text.replace("progress_every = 0.0", "progress_every = 0.0\nchannels_last = \"on\""))
    with pytest.raises(ParameterError, match="'data.options.context' parameter .* left out for the image data set"):
        load_config_text(text.replace('"fortunes"', '"fashion_mnist"').replace('"tiny_gpt"', '"small_cnn"'))


@pytest.mark.parametrize("path", ["configs/fortunes_lm_adaptive_cpu.toml", "configs/fortunes_lm_constant_cpu.toml",
                                  "configs/fortunes_lm_periodic_cpu.toml", "configs/fortunes_lm_cosine_cpu.toml"])
def test_the_fortunes_configs_are_valid(path):
    from sfotorch.config import load_config

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = load_config(os.path.join(root, path))
    assert cfg["data"]["dataset"] == "fortunes" and cfg["model"]["name"] == "tiny_gpt"
