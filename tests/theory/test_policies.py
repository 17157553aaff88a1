"""The policy interface and the peer policies: hand-computed decisions, the invariant kit on every policy and on
broken ones, unbiased batch statistics, and the simulator that runs them all."""

import json
import math
from dataclasses import dataclass
from itertools import combinations, product

import numpy as np
import pytest
from hypothesis import strategies as st

from sfotheory import rule
from sfotheory.batch_statistics import minibatch_statistics, statistics_from_indices, statistics_from_per_sample
from sfotheory.constants import WithoutReplacement
from sfotheory.policies import (
    AdaScale,
    GradientNoiseScale,
    IncreaseBatch,
    InnerProductTest,
    NormTest,
    PolicyEvent,
    StageRule,
    Statistics,
    initial_state,
    needs,
    policy_from_dict,
    state_from_dict,
    step,
)
from sfotheory.problems import StepRandom, make_problem
from sfotheory.simulate import simulate
from sfotheory.simulate_policies import PolicyResult, simulate_policies
from sfotheory.testing import assert_policy_invariants, check_policy_invariants, schedules
from sfotheory.validation import ParameterError
from tests.golden import ADASCALE, INCREASE_BATCH, INNER_PRODUCT_TEST, NOISE_SCALE, NORM_TEST, \
    NORM_TEST_WITHOUT_REPLACEMENT

# -- decisions against hand-computed tables (tests/golden.py) --------------------------------------------------

TABLES = [(NormTest, NORM_TEST), (InnerProductTest, INNER_PRODUCT_TEST), (GradientNoiseScale, NOISE_SCALE),
          (AdaScale, ADASCALE), (IncreaseBatch, INCREASE_BATCH)]


def run_table(cls, table):
    policy = cls(**table["policy"])
    state = initial_state(policy)
    states = []
    for values, event, b, eta in table["steps"]:
        state, ev = step(policy, state, Statistics(samples=state.batch_size, **values))
        states.append(state)
        assert (ev.name, state.batch_size) == (event, b)
        assert state.lr == pytest.approx(eta, rel=1e-12)
    return policy, states


@pytest.mark.parametrize("cls, table", TABLES, ids=[c.__name__ for c, _ in TABLES])
def test_each_policy_takes_the_hand_computed_decisions(cls, table):
    run_table(cls, table)


def test_the_noise_scale_and_adascale_progress_follow_their_tables():
    _, states = run_table(GradientNoiseScale, NOISE_SCALE)
    assert [s.noise_scale for s in states] == NOISE_SCALE["noise_scales"]
    _, states = run_table(AdaScale, ADASCALE)
    assert [s.progress for s in states] == pytest.approx(ADASCALE["progress"], rel=1e-12)
    assert states[-1].stopped and states[-1].step == ADASCALE["steps_counted"]
    assert [s.stage for s in states] == [0, 1, 1, 1, 1, 1, 1]


def test_the_norm_test_carries_the_finite_population_factor_without_replacement():
    policy = NormTest(**NORM_TEST["policy"])
    st_, ev = step(policy, initial_state(policy),
                   Statistics(samples=4, grad_sq=1.0, trace_var=2.0, population=NORM_TEST_WITHOUT_REPLACEMENT["n"]))
    assert ev == PolicyEvent.ADVANCED and st_.batch_size == NORM_TEST_WITHOUT_REPLACEMENT["b_next"]


def test_the_stage_rule_policy_is_the_rule_itself():
    s = rule.adaptive_exponential(b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.4, tau=2, b_max=64)
    policy = StageRule(s)
    ours, theirs = initial_state(policy), rule.initial_state(s)
    for norm in (0.9, 0.4, 0.3, math.nan, 0.2, 0.1, 0.05, 0.01):
        ours, ev = step(policy, ours, Statistics(samples=ours.batch_size, full_norm=norm, check_cost=7))
        theirs, want = rule.advance(s, theirs, theirs.batch_size, norm=norm, check_cost=7)
        assert ours == theirs and int(ev) == int(want)
    assert needs(StageRule(rule.constant(b0=4, eta0=0.1))).statistics == ()
    assert needs(StageRule(s, check_order="before_update")).order == "before_update"


def test_event_codes_are_the_rules_and_needs_declare_statistics_and_cost():
    assert all(PolicyEvent(int(e)).name == e.name for e in rule.Event)
    assert needs(NormTest(b0=4, eta0=0.1)).statistics == ("grad_sq", "trace_var")
    assert needs(InnerProductTest(b0=4, eta0=0.1)).statistics == ("grad_sq", "trace_var", "inner_var")
    assert needs(AdaScale(base_batch=4, scale=2, eta0=0.1)).order == "before_update"
    assert needs(IncreaseBatch(b0=4, eta0=0.1, milestones=(10,))).statistics == ()
    adaptive = StageRule(rule.adaptive_exponential(b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.4, tau=5))
    assert needs(adaptive).check_cost(1000) == 1000 and needs(NormTest(b0=4, eta0=0.1)).check_cost(1000) == 0


# -- the invariant kit on every policy, and on broken ones --------------------------------------------------

milestone_samples = st.lists(st.integers(1, 3000), unique=True, max_size=5).map(sorted).map(tuple)
KIT_CASES = {
    "norm_test": (NormTest, dict(theta=st.floats(0.1, 2.0))),
    "inner_product_test": (InnerProductTest, dict(theta=st.floats(0.1, 2.0), nu=st.floats(0.1, 8.0))),
    "gradient_noise_scale": (GradientNoiseScale, dict(smoothing=st.floats(0.0, 0.99),
                                                      lr_mode=st.sampled_from(["fixed", "optimal"]))),
    "adascale": (AdaScale, dict(base_batch=st.integers(2, 32), scale=st.integers(1, 16), decay=st.floats(0.1, 1.0),
                                milestones=st.lists(st.floats(0.5, 60.0), unique=True, max_size=4).map(sorted).map(
                                    tuple), horizon=st.floats(0.0, 80.0))),
    "increase_batch": (IncreaseBatch, dict(milestones=milestone_samples, factor=st.floats(1.1, 8.0))),
    "stage_rule": (schedules().map(StageRule), {}),
    "stage_rule_before_update": (schedules().map(lambda s: StageRule(s, check_order="before_update")), {}),
}


@pytest.mark.parametrize("name", list(KIT_CASES))
def test_every_policy_keeps_the_invariants(name):
    factory, strategies = KIT_CASES[name]
    check_policy_invariants(factory, max_examples=40, **strategies)


@dataclass(frozen=True)
class GrowsOnNaN(NormTest):
    """Broken: doubles b whenever ‖g_B‖² is not finite."""

    kind = "test_grows_on_nan"

    def advance(self, ops, st_, stats):
        new, event = super().advance(ops, st_, stats)
        bad = ops.not_(ops.isfinite(ops.to_float(stats.grad_sq)))
        return new._replace(batch_size=ops.where(bad, ops.minimum(self.b_max, 2 * st_.batch_size),
                                                 new.batch_size)), event


@dataclass(frozen=True)
class PassesTheCap(NormTest):
    """Broken: one sample more than b_max once it gets there."""

    kind = "test_passes_the_cap"

    def advance(self, ops, st_, stats):
        new, event = super().advance(ops, st_, stats)
        return new._replace(batch_size=ops.where(new.batch_size >= self.b_max, self.b_max + 1, new.batch_size)), event


@dataclass(frozen=True)
class ShrinksAfterGrowing(NormTest):
    """Broken: halves b on every check that passes."""

    kind = "test_shrinks"

    def advance(self, ops, st_, stats):
        new, event = super().advance(ops, st_, stats)
        halve = event == int(PolicyEvent.CHECKED)
        return new._replace(batch_size=ops.where(halve, ops.maximum(1, new.batch_size // 2), new.batch_size)), event


@dataclass(frozen=True)
class ScalarOnlyCeiling(NormTest):
    """Broken: rounds differently for one run than for rows (vectorised ≠ scalar)."""

    kind = "test_scalar_only"

    def advance(self, ops, st_, stats):
        new, event = super().advance(ops, st_, stats)
        if isinstance(new.batch_size, int):
            return new._replace(lr=new.lr * (1 - 1e-6)), event
        return new, event


@pytest.mark.parametrize("broken, invariant", [
    (GrowsOnNaN, "a non-finite statistic never advances"),
    (PassesTheCap, "b <= b_max"),
    (ShrinksAfterGrowing, "b never decreases"),
    (ScalarOnlyCeiling, "vectorised equals scalar"),
])
def test_the_kit_catches_a_broken_policy(broken, invariant):
    with pytest.raises(AssertionError, match=invariant):
        check_policy_invariants(broken, max_examples=40, shrink=False)


def test_the_kit_checks_one_pinned_sequence_too():
    policy = NormTest(b0=4, eta0=0.1, b_max=64)
    seq = [[dict(grad_sq=v, trace_var=2.0, inner_var=0.0, full_norm=1.0, finite=True)] for v in (1.0, math.nan, 0.1)]
    assert_policy_invariants(policy, seq, population=100.0)
    with pytest.raises(AssertionError, match="non-finite"):
        assert_policy_invariants(GrowsOnNaN(b0=4, eta0=0.1, b_max=64), seq)


# -- configuration and state: JSON, validation ----------------------------------------------------------------

ALL_POLICIES = [
    NormTest(b0=4, eta0=0.1, b_max=64), InnerProductTest(b0=4, eta0=0.1, b_max=64),
    GradientNoiseScale(b0=4, eta0=0.1, b_max=64, lr_mode="optimal"),
    AdaScale(base_batch=4, scale=8, eta0=0.1, milestones=(5.0, 9.0), horizon=40.0),
    IncreaseBatch(b0=4, eta0=0.1, milestones=(100, 400), b_max=64),
    StageRule(rule.adaptive_exponential(b0=4, eta0=0.1, eps0=0.5, delta=2, gamma=1.2, tau=3, b_max=64)),
]


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=[p.kind for p in ALL_POLICIES])
def test_configuration_and_a_state_with_nan_round_trip_through_json(policy):
    assert policy_from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    state = initial_state(policy)
    back = state_from_dict(policy, json.loads(json.dumps(state.to_dict())))
    assert all((a == b) or (a != a and b != b) for a, b in zip(back, state)) and type(back) is type(state)


@pytest.mark.parametrize("make, name, got", [
    (lambda: NormTest(b0=1, eta0=0.1), "b0", "b0=1"),
    (lambda: NormTest(b0=8, eta0=0.1, b_max=4), "b_max", "b_max=4"),
    (lambda: NormTest(b0=8, eta0=0.1, theta=0.0), "theta", "theta=0.0"),
    (lambda: InnerProductTest(b0=8, eta0=0.1, nu=-1.0), "nu", "nu=-1.0"),
    (lambda: GradientNoiseScale(b0=8, eta0=0.1, smoothing=1.0), "smoothing", "smoothing=1.0"),
    (lambda: GradientNoiseScale(b0=8, eta0=0.1, lr_mode="sqrt"), "lr_mode", "lr_mode='sqrt'"),
    (lambda: AdaScale(base_batch=1, scale=1, eta0=0.1), "base_batch", "base_batch=1"),
    (lambda: AdaScale(base_batch=4, scale=2, eta0=0.1, milestones=(5.0, 2.0)), "milestones", "milestones=(5.0, 2.0)"),
    (lambda: IncreaseBatch(b0=8, eta0=0.1, milestones=(10,), factor=1.0), "factor", "factor=1.0"),
    (lambda: IncreaseBatch(b0=8, eta0=0.1, milestones=(10, 10)), "milestones", "milestones=(10, 10)"),
    (lambda: NormTest(b0=8, eta0=0.1, eta_max=0.05), "eta_max", "eta_max=0.05"),
    (lambda: policy_from_dict({"kind": "sgd_with_vibes"}), "kind", "kind='sgd_with_vibes'"),
])
def test_bad_policy_arguments_name_the_parameter_and_the_value(make, name, got):
    with pytest.raises(ParameterError) as err:
        make()
    assert f"'{name}' parameter" in str(err.value) and f"Got {got} instead" in str(err.value)


# -- the statistics are the definitions, and unbiased -------------------------------------------------------

def _least_squares():
    return make_problem("least_squares", n=6, dim=3, kappa=4.0, ridge=0.1, seed=3)


def test_batch_statistics_equal_the_definitions_and_the_gradient_equals_the_oracles():
    p = make_problem("logistic", n=50, dim=4, seed=2)
    theta = np.random.default_rng(0).standard_normal((3, 4))
    b = np.array([2, 5, 9])
    g, s = minibatch_statistics(p, theta, b, StepRandom(4, 7))
    np.testing.assert_array_equal(g, p.minibatch_grad(theta, b, StepRandom(4, 7)))   # the same draws, bit for bit
    idx = StepRandom(4, 7).integers(0, p.n, size=int(b.sum()))
    for r, seg in enumerate(np.split(idx, np.cumsum(b)[:-1])):
        g_r, want = statistics_from_per_sample(p.per_sample_grads(theta[r])[seg])
        np.testing.assert_allclose(g[r], g_r, rtol=1e-12)
        for k in range(3):
            assert s[k][r] == pytest.approx(want[k][0], rel=1e-10)


@pytest.mark.parametrize("without", [False, True], ids=["with_replacement", "without_replacement"])
def test_statistics_are_unbiased_over_every_batch_of_a_finite_sum(without):
    # Every batch of b = 3 out of n = 6, equally likely: the exact expectation, no sampling error.
    p = _least_squares()
    theta = np.array([0.3, -0.2, 0.5])
    n, b = p.n, 3
    batches = list(combinations(range(n), b)) if without else list(product(range(n), repeat=b))
    idx = np.array(batches).ravel()
    k = len(batches)
    g, s = statistics_from_indices(p, np.tile(theta, (k, 1)), np.full(k, b), idx)
    c_b, trace = (1 - b / n, n * p.sigma2_at(theta) / (n - 1)) if without else (1.0, p.sigma2_at(theta))
    np.testing.assert_allclose(g.mean(axis=0), p.grad(theta), rtol=1e-12)
    assert s.trace_var.mean() == pytest.approx(trace, rel=1e-12)
    assert np.mean(s.grad_sq - c_b * s.trace_var / b) == pytest.approx(float(p.grad_norm(theta)) ** 2, rel=1e-12)
    # the inner-product statistic at a direction fixed before drawing the batch: unbiased for v^T Sigma v
    v = np.array([1.0, -2.0, 0.5])
    per = p.per_sample_grads(theta)
    cov = np.cov(per.T, bias=not without)             # denominator n with replacement, n - 1 without
    dev = per[np.array(batches)] - per[np.array(batches)].mean(axis=1, keepdims=True)
    assert np.mean(np.sum((dev @ v) ** 2, axis=1) / (b - 1)) == pytest.approx(v @ cov @ v, rel=1e-12)


@pytest.mark.parametrize("noise", ["isotropic", "hessian"])
def test_quadratic_statistics_are_unbiased(noise):
    # Monte Carlo over 20000 rows; each mean is compared with its expectation within 5 standard errors.
    q = make_problem("quadratic", dim=6, kappa=3.0, sigma2=2.0, noise=noise, seed=1)
    rows, b = 20_000, 5
    theta = np.tile(q.theta0, (rows, 1))
    g, s = minibatch_statistics(q, theta, np.full(rows, b), StepRandom(11, 0))
    mean_grad = q.grad(q.theta0)
    sigma = q.noise_var                                  # the diagonal of Sigma
    expect = {
        "trace_var": (s.trace_var, sigma.sum()),
        "norm_sq": (s.grad_sq - s.trace_var / b, mean_grad @ mean_grad),
        # E[g^T Sigma g] = (A theta)^T Sigma (A theta) + tr(Sigma^2)/b, the scatter matrix being independent of g
        "inner_var": (s.inner_var, mean_grad @ (sigma * mean_grad) + np.sum(sigma**2) / b),
    }
    for name, (x, want) in expect.items():
        assert abs(x.mean() - want) < 5 * x.std() / math.sqrt(rows), name
    np.testing.assert_allclose(g.mean(axis=0), mean_grad, atol=5 * math.sqrt(sigma.max() / b / rows))


def test_statistics_refuse_a_batch_of_one_sample_and_the_quadratic_without_replacement():
    p = _least_squares()
    _, s = minibatch_statistics(p, np.zeros((1, 3)), np.array([1]), np.random.default_rng(0))
    assert np.isnan(s.trace_var[0]) and np.isnan(s.inner_var[0])
    q = make_problem("quadratic", dim=4, seed=0)
    with pytest.raises(ParameterError, match="'policies'|'variance'"):
        simulate_policies(q, NormTest(b0=4, eta0=0.1, b_max=20), eps=0.1, variance=WithoutReplacement(20))


# -- the simulator runs every policy ----------------------------------------------------------------------

@pytest.mark.parametrize("order", ["after_update", "before_update"])
def test_the_simulator_runs_algorithm_2_exactly_as_simulate_does(order):
    p = make_problem("logistic", n=300, dim=5, seed=0)
    s = rule.adaptive_exponential(b0=2, eta0=0.5, eps0=0.8, delta=2, gamma=1.2, tau=3, b_max=256, eta_max=1.0)
    a = simulate(p, s, eps=1e-4, replicates=3, seed=5, max_steps=90, check_order=order)
    b = simulate_policies(p, StageRule(s, check_order=order), eps=1e-4, replicates=3, seed=5, max_steps=90)
    for f in ("hit_step", "sfo", "check_sfo", "checks", "final_stage", "final_batch_size", "final_lr",
              "transition_step", "transition_sfo", "trace_norm", "stop_reason"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert b.final_stage.min() >= 1


def test_stage_rules_advanced_together_give_the_run_one_step_per_policy_gives(monkeypatch):
    # The simulator advances the stage-rule policies of one check order in one call of the rule, on their schedules
    # stacked row by row; forcing one `step` per policy (the interface itself) must give the same run, bit for bit.
    import importlib

    p = make_problem("least_squares", n=300, dim=5, seed=0)

    def adaptive(eps0, tau, **kw):
        return rule.adaptive_exponential(b0=4, eta0=0.3 / p.L, eps0=eps0, delta=2, gamma=1.4, tau=tau, b_max=256,
                                         eta_max=1 / p.L, **kw)

    policies = [StageRule(adaptive(0.5, 3), check_order="before_update"), NormTest(b0=4, eta0=0.2 / p.L, b_max=256),
                StageRule(adaptive(0.3, 5)), StageRule(adaptive(0.2, 2), check_order="before_update"),
                StageRule(rule.periodic(b0=4, eta0=0.3 / p.L, delta=2, gamma=1.4, period=7, b_max=256,
                                        eta_max=1 / p.L)),
                StageRule(rule.cosine(b0=16, eta0=1 / p.L, horizon=60), check_order="before_update"),
                StageRule(adaptive(0.4, 4, stall_limit=20, stall_action="advance")),
                StageRule(rule.constant(b0=8, eta0=0.5 / p.L))]
    kw = dict(eps=0.02, replicates=3, seed=11, max_steps=150, observe_every=2, stop_at_hit=False)
    together = simulate_policies(p, policies, **kw)
    module = importlib.import_module("sfotheory.simulate_policies")
    monkeypatch.setattr(module, "_units", lambda ps: [((c,), False) for c in range(len(ps))])
    alone = simulate_policies(p, policies, **kw)
    for f in ("hit_step", "steps", "sfo", "check_sfo", "checks", "final_stage", "final_batch_size", "final_lr",
              "final_norm", "transition_step", "transition_sfo", "trace_norm", "trace_loss", "trace_sfo",
              "stop_reason", "min_norm", "sigma2_max"):
        np.testing.assert_array_equal(getattr(together, f), getattr(alone, f), err_msg=f)
    assert together.final_stage.max() >= 4 and (together.checks[:, 0] > 0).all()    # the rules did move and check


def test_every_policy_runs_in_one_array_computation_with_its_own_accounting():
    p = make_problem("least_squares", n=400, dim=5, seed=0)
    adaptive = rule.adaptive_exponential(b0=8, eta0=0.2, eps0=0.5, delta=2, gamma=1.2, tau=10, b_max=400,
                                         eta_max=0.4)
    policies = [StageRule(adaptive), NormTest(b0=8, eta0=0.2, b_max=400), InnerProductTest(b0=8, eta0=0.2, b_max=400),
                GradientNoiseScale(b0=8, eta0=0.2, b_max=400), AdaScale(base_batch=8, scale=4, eta0=0.1, eta_max=0.4),
                IncreaseBatch(b0=8, eta0=0.2, milestones=(800, 2400), factor=4.0, b_max=400),
                rule.constant(b0=8, eta0=0.2)]
    res = simulate_policies(p, policies, eps=1e-9, replicates=4, seed=3, max_steps=300)
    assert isinstance(res, PolicyResult) and res.hit.shape == (4, 7)
    assert (res.steps == 300).all() and (res.reasons() == "max_steps").all()
    assert (res.check_sfo[:, 1:] == 0).all()                              # batch statistics cost no SFO
    assert (res.check_sfo[:, 0] == 30 * 400).all() and (res.checks[:, 0] == 30).all()  # 30 exact checks of n = 400
    assert (res.final_batch_size[:, 4] == 32).all() and (res.sfo[:, 4] == 300 * 32).all()   # AdaScale: b fixed
    assert (res.final_batch_size[:, 1] > 8).all() and (res.final_batch_size[:, 3] > 8).all()
    # Smith et al.: 100 steps at b = 8 reach 800 samples, 50 at b = 32 reach 2400, then 150 at b = 128
    assert res.transition_step[:, 5, :2].tolist() == [[100, 150]] * 4 and (res.transition_step[:, 5, 2:] == -1).all()
    assert (res.sfo[:, 5] == 100 * 8 + 50 * 32 + 150 * 128).all()
    assert (res.final_batch_size[:, 6] == 8).all() and (res.final_lr[:, 4] <= 0.4).all()
    # the trace's SFO is what produced each observed iterate
    np.testing.assert_array_equal(res.trace_sfo[:, 0, 6], 8 * res.trace_step)


def test_policies_reach_the_target_and_the_result_saves_and_loads(tmp_path):
    q = make_problem("quadratic", dim=10, sigma2=1.0, seed=2)
    policies = [NormTest(b0=4, eta0=0.5, b_max=4096), GradientNoiseScale(b0=4, eta0=0.5, b_max=4096),
                rule.constant(b0=4, eta0=0.5)]
    res = simulate_policies(q, policies, eps=0.05, replicates=6, seed=1, max_steps=3000)
    assert res.hit[:, :2].all() and not res.hit[:, 2].any()   # b = 4 at eta = 0.5 has a floor above eps
    res.save(tmp_path / "run")
    back = PolicyResult.load(tmp_path / "run.json")
    assert back.policies == [policies[0], policies[1], StageRule(policies[2])]
    assert back.schedules[:2] == [None, None] and back.schedules[2] == policies[2]
    np.testing.assert_array_equal(back.hit_sfo, res.hit_sfo)
    assert [row["policy"] for row in back.summary()] == ["norm_test", "gradient_noise_scale", "constant"]


def test_the_simulator_refuses_what_a_policy_cannot_do_here():
    p = make_problem("least_squares", n=50, dim=3, seed=0)
    with pytest.raises(ParameterError, match=r"'b_max'.*<= n = 50.*Got b_max=4096"):
        simulate_policies(p, NormTest(b0=4, eta0=0.1, b_max=4096), eps=0.1)
    with pytest.raises(ParameterError, match=r"'eta_max'.*< 2/L"):
        simulate_policies(p, AdaScale(base_batch=2, scale=8, eta0=1.0 / p.L), eps=0.1)
    with pytest.raises(TypeError, match="'policies'"):
        simulate_policies(p, ["norm_test"], eps=0.1)
