"""ε₀ from the theory (``schedule.eps0 = "auto"``, :mod:`sfotorch.calibrate`): L and σ² against their closed
forms on least squares, the refusal at Lη₀ ≥ 2, no trace left, the configuration, and a resume that does
not measure again.

Least squares, f(θ) = (1/2n)‖Xθ − y‖², fᵢ(θ) = ½(xᵢᵀθ − yᵢ)²: ∇fᵢ = xᵢrᵢ with rᵢ = xᵢᵀθ − yᵢ, and the
Hessian is XᵀX/n everywhere, so L = λ_max(XᵀX/n) and tr S² = (1/(n − 1)) Σᵢ‖xᵢrᵢ − ḡ‖² are known exactly
at θ₀ (computed here from X, y and θ₀ in float64, independently of the code under test).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sfotheory.validation import ParameterError
from sfotorch import calibrate
from sfotorch.calibrate import calibrate_eps0, estimate_constants, gradient_noise_trace, largest_hessian_eigenvalue
from sfotorch.config import apply_overrides, config_to_toml, load_config_text
from sfotorch.datasets import write_fashion_mnist
from sfotorch.sfolog import read_log
from sfotorch.train import train

# per-axis scales of the features: XᵀX/n has eigenvalues near 9, 2.25, 1, 1, 0.25, 0.25, so the power
# iteration contracts the error by about (2.25/9)² per product
SCALES = torch.tensor([3.0, 1.5, 1.0, 1.0, 0.5, 0.5], dtype=torch.float64)


def half_mse(out, target):
    """fᵢ = ½(xᵢᵀθ − yᵢ)², averaged over the batch (reduction "mean")."""
    return 0.5 * (out.squeeze(1) - target).pow(2).mean()


def least_squares(n: int, seed: int = 0):
    """X (n × 6), y, and the linear model at θ₀ (float64, no bias)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, len(SCALES), generator=g, dtype=torch.float64) * SCALES
    theta_star = torch.randn(len(SCALES), generator=g, dtype=torch.float64)
    y = x @ theta_star + 0.7 * torch.randn(n, generator=g, dtype=torch.float64)
    model = nn.Linear(len(SCALES), 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, len(SCALES), generator=g, dtype=torch.float64))
    return x, y, model


def closed_form(x, y, model):
    """(L, tr S², tr Σ) of f at the model's θ: λ_max(XᵀX/n) and the per-sample gradient covariance trace
    with denominators n − 1 and n."""
    n = x.shape[0]
    theta = model.weight.detach().reshape(-1)
    per_sample = x * (x @ theta - y)[:, None]                         # ∇fᵢ = xᵢ rᵢ
    spread = (per_sample - per_sample.mean(0)).pow(2).sum().item()
    return torch.linalg.eigvalsh(x.T @ x / n)[-1].item(), spread / (n - 1), spread / n


# -- the estimates against their closed forms ----------------------------------------------------------

def test_sigma2_on_the_whole_set_is_the_unbiased_covariance_trace_to_rounding():
    x, y, model = least_squares(200)
    _, tr_s2, tr_sigma = closed_form(x, y, model)
    est, source = gradient_noise_trace(model, (x, y), half_mse, samples=200, batch_size=64, reduction="mean")
    assert source == "per_sample_norms"
    # the same sum in another order, in float64: rounding only
    assert est == pytest.approx(tr_s2, rel=1e-10)
    # the s/(s − 1) correction is there: 200/199 = 1 + 5e-3 is far outside that tolerance
    assert est != pytest.approx(tr_sigma, rel=1e-4)


def test_L_is_the_top_eigenvalue_of_the_hessian_from_below():
    x, y, model = least_squares(200)
    top, _, _ = closed_form(x, y, model)
    est, used, converged = largest_hessian_eigenvalue(model, (x, y), half_mse, samples=200, iterations=200, tol=1e-12,
                                                      batch_size=64, reduction="mean")
    assert converged and 2 <= used < 200
    # power iteration: ‖Hv‖ ≤ λ_max for a unit v (one-sided), and after convergence equal to rounding
    assert est <= top * (1 + 1e-12)
    assert est == pytest.approx(top, rel=1e-9)


def test_defaults_on_the_first_samples_are_within_ten_percent_of_the_whole_set():
    # population n = 4000; σ² from the first 1000 samples, L from the first 256, default 20 products at
    # tol 1e-3. The sampling error of both is a few % here (σ²: the per-sample ‖∇fᵢ − ḡ‖² have a relative
    # standard deviation of about 1.7, so ~5% standard error at 1000 samples; L: the top eigenvalue of a
    # 256-sample XᵀX/n moves by O(√(d/256)) relative), hence the 10%, not a rounding tolerance.
    x, y, model = least_squares(4000, seed=1)
    top, tr_s2, _ = closed_form(x, y, model)
    cal = estimate_constants(model, (x, y), half_mse, eta=0.1, b0=8, samples=1000, hessian_samples=256,
                             reduction="mean")
    assert (cal.n_samples, cal.hessian_samples) == (1000, 256)
    assert cal.sigma2 == pytest.approx(tr_s2, rel=0.10)
    assert cal.L == pytest.approx(top, rel=0.10)


def test_eps0_is_sqrt_of_2_C2_over_b0_with_C2_of_proposition_1():
    x, y, model = least_squares(300)
    eta, b0 = 0.05, 16
    cal = calibrate_eps0(model, (x, y), half_mse, eta=eta, b0=b0, samples=300, hessian_samples=300, reduction="mean")
    c2 = cal.L * cal.sigma2 * eta / (2 - cal.L * eta)                # C₂ = Lσ²η/(2 − Lη), by hand
    assert cal.stable and cal.C2 == pytest.approx(c2, rel=1e-12)
    assert cal.eps0 == pytest.approx(math.sqrt(2 * c2 / b0), rel=1e-12)
    assert cal.to_dict()["l_eta"] == pytest.approx(cal.L * eta, rel=1e-15)
    assert "eps0 = sqrt(2 C2/b0)" in cal.summary()


def test_the_variance_from_torch_func_agrees_with_the_hooks_on_a_layer_they_do_not_cover():
    class OwnLinear(nn.Module):          # a parameter PerSampleNorms has no formula for: vmap(grad) is used
        def __init__(self, weight):
            super().__init__()
            self.weight = nn.Parameter(weight.detach().clone())

        def forward(self, inputs):
            return inputs @ self.weight.T

    x, y, model = least_squares(150)
    own = OwnLinear(model.weight)
    a, src_a = gradient_noise_trace(model, (x, y), half_mse, samples=150, batch_size=40, reduction="mean")
    b, src_b = gradient_noise_trace(own, (x, y), half_mse, samples=150, batch_size=40, reduction="mean")
    assert (src_a, src_b) == ("per_sample_norms", "vmap")
    assert b == pytest.approx(a, rel=1e-10)


# -- refusal ---------------------------------------------------------------------------------------

def test_L_eta_at_least_two_is_reported_and_refused_with_the_measured_value():
    x, y, model = least_squares(200)
    top, _, _ = closed_form(x, y, model)
    eta = 2.5 / top                                                    # Lη₀ = 2.5
    cal = estimate_constants(model, (x, y), half_mse, eta=eta, b0=8, samples=200, hessian_samples=200,
                             reduction="mean")
    assert not cal.stable and math.isnan(cal.C2) and math.isnan(cal.eps0)
    with pytest.raises(ParameterError) as err:
        calibrate_eps0(model, (x, y), half_mse, eta=eta, b0=8, samples=200, hessian_samples=200, reduction="mean")
    msg = str(err.value)
    assert "eps0='auto'" in msg and "L·eta0 = 2.5 >= 2" in msg and "undefined" in msg
    # just below the limit it is accepted
    assert calibrate_eps0(model, (x, y), half_mse, eta=1.9 / top, b0=8, samples=200, hessian_samples=200,
                          reduction="mean").stable


# -- no trace --------------------------------------------------------------------------------------

def test_leaves_the_global_rng_the_parameters_their_grad_and_the_modes_untouched():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 3))
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    model.train()
    model(x)                                                           # running statistics away from their init
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)
    grads = [p.grad for p in model.parameters()]
    params = [p.detach().clone() for p in model.parameters()]
    buffers = [b.detach().clone() for b in model.buffers()]
    rng = torch.get_rng_state()
    cal = estimate_constants(model, (x, y), nn.CrossEntropyLoss(), eta=0.1, b0=4, samples=64, hessian_samples=32,
                             seed=3)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    assert all(p.grad is g and torch.equal(g, torch.full_like(g, 0.25)) for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(b, c) for b, c in zip(model.buffers(), buffers))
    assert all(m.training for m in model.modules())
    again = estimate_constants(model, (x, y), nn.CrossEntropyLoss(), eta=0.1, b0=4, samples=64, hessian_samples=32,
                               seed=3)
    assert (again.L, again.sigma2, again.iterations) == (cal.L, cal.sigma2, cal.iterations)   # seeded: the same


# -- configuration and sfo train ----------------------------------------------------------------------

def config_text(root, eps0='"auto"') -> str:
    return f"""
[run]
name = "tiny"
progress_every = 0.0
[data]
dataset = "fashion_mnist"
root = "{root}"
augment = false
[model]
name = "small_cnn"
[schedule]
policy = "adaptive_exponential"
b0 = 4
eta0 = 0.05
eps0 = {eps0}
delta = 2.0
gamma = 1.4
tau = 2
b_max = 16
[monitor]
batch_size = 32
[train]
max_steps = 11
[eval]
every = "end"
"""


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    write_fashion_mnist(root, train_size=48, test_size=16, seed=3)
    return root


def test_the_config_accepts_auto_and_refuses_other_strings_naming_the_key(fashion):
    cfg = load_config_text(config_text(fashion))
    assert cfg["schedule"]["eps0"] == "auto"
    assert load_config_text(config_to_toml(cfg)) == cfg                # written and read back as "auto"
    assert apply_overrides(load_config_text(config_text(fashion, "0.5")), ["schedule.eps0=auto"]) == cfg
    with pytest.raises(ParameterError) as err:
        load_config_text(config_text(fashion, '"automatic"'))
    assert str(err.value) == ("The 'schedule.eps0' parameter of the config <text> must be a number or 'auto'. "
                              "Got schedule.eps0='automatic' instead.")
    with pytest.raises(ParameterError, match="schedule.eps0"):
        apply_overrides(cfg, ["schedule.eps0=Auto"])


DETERMINISTIC = ("kind", "step", "samples", "check_samples", "stage", "b", "eta", "eps_m", "norm", "event",
                 "test_loss", "train_loss")


def _deterministic(log):
    return [tuple(r.get(k) for k in DETERMINISTIC) for r in log if r["kind"] not in ("start", "resume", "calibration")]


ESTIMATES = ("L", "sigma2", "C2", "eps0", "iterations", "n_samples", "hessian_samples")


class Crash(RuntimeError):
    pass


def test_sfo_train_measures_once_logs_it_and_a_resumed_run_does_not_measure_again(tmp_path, fashion, monkeypatch):
    cfg = apply_overrides(load_config_text(config_text(fashion), "tiny.toml"), ["run.checkpoint_every=4"])
    train(cfg, out_dir=str(tmp_path / "whole"))
    whole = read_log(tmp_path / "whole" / "seed0" / "log.jsonl")
    assert [r["kind"] for r in whole[:2]] == ["start", "calibration"]
    cal = whole[1]
    assert cal["stable"] and cal["eps0"] > 0 and cal["n_samples"] == 48
    assert cal["eps0"] == pytest.approx(math.sqrt(2 * cal["C2"] / 4), rel=1e-12)
    checks = [r for r in whole if r["kind"] == "check"]
    assert checks[0]["eps_m"] == cal["eps0"] and whole[0]["schedule"]["eps0"] == cal["eps0"]

    # the measurement leaves the run as it would be with that number given by hand
    fixed = apply_overrides(cfg, [f"schedule.eps0={cal['eps0']!r}"])
    train(fixed, out_dir=str(tmp_path / "fixed"))
    assert _deterministic(read_log(tmp_path / "fixed" / "seed0" / "log.jsonl")) == _deterministic(whole)

    def crash_at_7(info):
        if info["step"] == 7:
            raise Crash("simulated crash after step 7")

    with pytest.raises(Crash):
        train(cfg, out_dir=str(tmp_path / "cut"), on_step=crash_at_7)

    def measure_again(*args, **kwargs):
        raise AssertionError("eps0 was measured again on --resume")

    monkeypatch.setattr(calibrate, "calibrate_eps0", measure_again)
    train(cfg, out_dir=str(tmp_path / "cut"), resume=True)
    resumed = read_log(tmp_path / "cut" / "seed0" / "log.jsonl")
    kept = [r for r in resumed if r["kind"] == "calibration"]
    assert len(kept) == 1                                              # the first attempt's record, kept
    assert [kept[0][k] for k in ESTIMATES] == [cal[k] for k in ESTIMATES]
    assert _deterministic(resumed) == _deterministic(whole)
    # the patch is what sfo train calls: a new run (no checkpoint to resume from) does measure
    with pytest.raises(AssertionError, match="measured again"):
        train(cfg, out_dir=str(tmp_path / "new"))
