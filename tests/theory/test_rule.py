"""The stage rule of Algorithm 2: closed-form tables, the authors' loop, hypothesis invariants, bad input."""

import json
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sfotheory import rule
from sfotheory.paper import PAPER_ADAPTIVE, paper_schedule
from sfotheory.rule import Event, advance, check_due, initial_state, stage_values
from sfotheory.validation import ParameterError
from tests.golden import PAPER_STAGES
from tests.oracle import AuthorsRule


# -- closed-form tables -----------------------------------------------------------------------------

def test_paper_defaults_stage_table():
    s = paper_schedule()
    b, eta, eps = stage_values(s, np.arange(len(PAPER_STAGES)))
    for m, b_m, eta_m, eps_m in PAPER_STAGES:
        assert b[m] == b_m
        assert eta[m] == pytest.approx(eta_m, rel=1e-12)
        assert eps[m] == pytest.approx(eps_m, rel=1e-12)
    assert stage_values(s, 10)[0] == 4096  # capped at b_max


def test_paper_run_through_all_stages_on_checks():
    s = paper_schedule()
    st_ = initial_state(s)
    seen = [(st_.stage, st_.batch_size)]
    for _ in range(12):  # each stage: tau steps, then a norm just below eps_m
        for k in range(s.tau):
            due = check_due(s, st_)
            assert due == (k == s.tau - 1)
            st_, ev = advance(s, st_, st_.batch_size, norm=0.999 * st_.eps_m if due else None)
        seen.append((st_.stage, st_.batch_size))
        assert ev in (Event.ADVANCED, Event.AT_MAX)
    assert [b for _, b in seen][:10] == [row[1] for row in PAPER_STAGES]
    assert st_.stage == 9 and st_.batch_size == 4096 and ev == Event.AT_MAX
    assert st_.samples == sum(8 * 2**m * 1000 for m in range(9)) + 3 * 4096 * 1000


def test_linear_growth_and_ceiling():
    s = rule.adaptive_linear(b0=8, eta0=0.1, eps0=0.5, increment=2.5, tau=1)
    b, eta, eps = stage_values(s, np.arange(5))
    assert b.tolist() == [8, 11, 13, 16, 18]  # ceil(8 + 2.5 m)
    assert np.all(eta == 0.1)
    np.testing.assert_allclose(eps, 0.5 * np.sqrt(8 / b))


def test_ceiling_is_exact_for_float_products():
    # 8 * 1.5**3 = 27.000000000000004 in floating point; the rule's b_3 is 27
    s = rule.adaptive_exponential(b0=8, eta0=0.1, eps0=0.5, delta=1.5, gamma=1.2, tau=1)
    assert stage_values(s, 3)[0] == 27


def test_periodic_moves_every_period_and_resets_its_counter():
    s = rule.periodic(b0=8, eta0=0.1, delta=2, gamma=1.4, period=3, b_max=32)
    st_ = initial_state(s)
    events = []
    for _ in range(12):
        st_, ev = advance(s, st_, st_.batch_size)
        events.append(ev)
    assert [i + 1 for i, e in enumerate(events) if e == Event.PERIOD] == [3, 6]
    assert st_.batch_size == 32 and st_.stage == 2 and st_.stage_step == 6
    assert st_.lr == pytest.approx(0.196)


def test_cosine_lr_closed_form():
    s = rule.cosine(b0=128, eta0=0.1, horizon=10, eta_min=0.01)
    st_ = initial_state(s)
    lrs = [st_.lr]
    for _ in range(12):
        st_, _ = advance(s, st_, 128)
        lrs.append(st_.lr)
    expect = [0.01 + 0.5 * 0.09 * (1 + math.cos(math.pi * min(t, 10) / 10)) for t in range(13)]
    np.testing.assert_allclose(lrs, expect, rtol=1e-12)
    assert st_.batch_size == 128 and st_.stage == 0


def test_constant_schedule_never_moves_but_reports_checks():
    s = rule.constant(b0=128, eta0=0.1, eps0=1.0, tau=2)
    st_ = initial_state(s)
    st_, ev1 = advance(s, st_, 128, norm=0.01)
    st_, ev2 = advance(s, st_, 128, norm=0.01)
    assert (ev1, ev2) == (Event.NONE, Event.CHECKED)
    assert (st_.stage, st_.batch_size, st_.lr) == (0, 128, 0.1)


# -- the authors' loop, transcribed independently (tests/oracle.py), as an oracle ----------------------

# Decimals, which the oracle takes as exact rationals: 50 * 1.1 = 55.00000000000001 in floating point,
# so the rule's ceiling must not turn b_1 = 55 into 56.
DELTAS = [1.1, 1.2, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0]


@st.composite
def oracle_cases(draw):
    """Keyword arguments shared by a rule constructor and :class:`AuthorsRule`: either growth, any cap."""
    b0 = draw(st.integers(1, 64))
    eta0 = draw(st.floats(1e-3, 1.0))
    common = dict(b0=b0, eta0=eta0, eps0=draw(st.floats(0.05, 1.0)), tau=draw(st.integers(1, 4)),
                  b_max=draw(st.integers(b0, 5000)), stall_limit=draw(st.integers(0, 6)))
    common["stall_action"] = draw(st.sampled_from(["advance", "stop", "warn"])) if common["stall_limit"] else "none"
    if draw(st.booleans()):
        delta = draw(st.sampled_from(DELTAS))
        extra = dict(delta=delta, gamma=draw(st.floats(1.0, math.sqrt(delta) * 0.999)),
                     eta_max=draw(st.one_of(st.just(math.inf), st.floats(eta0, 3 * eta0))))
        return rule.adaptive_exponential, {**common, **extra}
    return rule.adaptive_linear, {**common, "increment": draw(st.sampled_from([0.5, 1.5, 2.5, 3.0, 8.0, 12.25]))}


@settings(max_examples=150, deadline=None)
@given(case=oracle_cases(), steps=st.lists(st.tuples(
    st.one_of(st.floats(0.0, 1.0), st.just(float("nan")), st.just(float("inf"))),
    st.integers(0, 19).map(lambda k: k == 0)), min_size=1, max_size=80))
@example(case=(rule.adaptive_exponential, dict(b0=8, eta0=0.1, eps0=0.5, tau=1, b_max=4096, stall_limit=0,
                                               stall_action="none", delta=2.0, gamma=1.4, eta_max=math.inf)),
         steps=[(0.4, False)] * 10)
@example(case=(rule.adaptive_exponential, dict(b0=8, eta0=0.1, eps0=0.1, tau=1, b_max=4096, stall_limit=3,
                                               stall_action="stop", delta=1.5, gamma=1.2, eta_max=0.13)),
         steps=[(0.05, False)] * 3 + [(1.0, False), (1.0, False), (float("nan"), False), (1.0, False)])
@example(case=(rule.adaptive_exponential, dict(b0=50, eta0=0.1, eps0=0.5, tau=2, b_max=100, stall_limit=4,
                                               stall_action="warn", delta=1.1, gamma=1.0, eta_max=math.inf)),
         steps=[(0.4, False), (0.4, True), (0.4, False), (0.4, False)] + [(1.0, False)] * 8)
@example(case=(rule.adaptive_linear, dict(b0=3, eta0=0.1, eps0=0.5, tau=1, b_max=9, stall_limit=2,
                                          stall_action="advance", increment=2.5)),
         steps=[(1.0, False)] * 12)
def test_rule_equals_the_authors_loop(case, steps):
    """steps[t] = (the norm measured for step t + 1, whether that step diverged: about 1 in 20)."""
    ctor, kwargs = case
    s = ctor(**kwargs)
    state = initial_state(s)
    oracle = AuthorsRule(**kwargs)
    for norm, diverged in steps:
        state, ev = advance(s, state, state.batch_size, norm=norm, finite=not diverged)
        want = oracle.step(norm, diverged=diverged)
        m, b, eta, eps, stopped = oracle.values
        assert (state.stage, state.batch_size, state.stopped) == (m, b, stopped)
        assert (state.lr, state.eps_m) == (pytest.approx(eta, rel=1e-12), pytest.approx(eps, rel=1e-12))
        assert ev == want if want is not None else ev in (Event.NONE, Event.CHECKED, Event.AT_MAX)


# -- hypothesis invariants --------------------------------------------------------------------------

norm_values = st.one_of(st.floats(0.0, 2.0), st.just(float("nan")), st.just(float("inf")))


@st.composite
def schedules(draw):
    kind = draw(st.sampled_from(["adaptive_exponential", "adaptive_linear", "periodic", "constant", "cosine"]))
    b0 = draw(st.integers(1, 64))
    eta0 = draw(st.floats(1e-3, 1.0))
    b_max = draw(st.integers(b0, 5000))
    tau = draw(st.integers(1, 4))
    if kind == "adaptive_exponential":
        delta = draw(st.floats(1.01, 4.0))
        gamma = draw(st.floats(1.0, math.sqrt(delta) * 0.999))
        eta_max = draw(st.one_of(st.just(math.inf), st.floats(eta0, 10.0)))
        stall = draw(st.integers(0, 6))
        action = draw(st.sampled_from(["advance", "stop", "warn"])) if stall else "none"
        return rule.adaptive_exponential(b0=b0, eta0=eta0, eps0=draw(st.floats(0.01, 2.0)), delta=delta,
                                         gamma=gamma, tau=tau, b_max=b_max, eta_max=eta_max,
                                         stall_limit=stall, stall_action=action)
    if kind == "adaptive_linear":
        return rule.adaptive_linear(b0=b0, eta0=eta0, eps0=draw(st.floats(0.01, 2.0)),
                                    increment=draw(st.floats(0.5, 64.0)), tau=tau, b_max=b_max)
    if kind == "periodic":
        delta = draw(st.floats(1.01, 4.0))
        return rule.periodic(b0=b0, eta0=eta0, delta=delta, gamma=draw(st.floats(1.0, math.sqrt(delta) * 0.999)),
                             period=draw(st.integers(1, 6)), b_max=b_max, tau=tau)
    if kind == "constant":
        return rule.constant(b0=b0, eta0=eta0, tau=tau)
    return rule.cosine(b0=b0, eta0=eta0, horizon=draw(st.integers(1, 50)), tau=tau)


@settings(max_examples=80, deadline=None)
@given(s=schedules(), norms=st.lists(norm_values, min_size=1, max_size=60))
def test_invariants_along_any_norm_sequence(s, norms):
    st_ = initial_state(s)
    for g in norms:
        prev = st_
        st_, ev = advance(s, st_, st_.batch_size, norm=g)
        assert st_.eps_m <= prev.eps_m * (1 + 1e-12)       # eps_m never increases
        assert prev.batch_size <= st_.batch_size <= s.b_max       # b_m grows, capped
        assert st_.lr <= s.eta_max                                # eta_m capped
        assert st_.stage >= prev.stage
        if ev == Event.NONFINITE:
            assert st_.stage == prev.stage                        # a NaN/inf norm never advances
        if st_.stage > prev.stage:
            assert ev in (Event.ADVANCED, Event.PERIOD, Event.STALL_ADVANCED)
            assert (st_.stage_step, st_.stage_samples) == (0, 0)
        assert st_.samples == prev.samples + (0 if prev.stopped else prev.batch_size)
        # state round-trips through JSON
        assert rule.state_from_dict(json.loads(json.dumps(st_.to_dict()))) == st_
    assert rule.schedule_from_dict(json.loads(json.dumps(s.to_dict()))) == s


@settings(max_examples=30, deadline=None)
@given(data=st.data(), count=st.integers(1, 6), steps=st.integers(1, 40))
def test_vectorised_rule_equals_the_scalar_rule(data, count, steps):
    scheds = [data.draw(schedules()) for _ in range(count)]
    batch = rule.stack_schedules(scheds)
    norms = np.array([[data.draw(norm_values) for _ in range(count)] for _ in range(steps)])
    vec = initial_state(batch, shape=(2, count))  # 2 replicates x count configurations
    scalar = [initial_state(s) for s in scheds]
    for t in range(steps):
        vec, ev = advance(batch, vec, vec.batch_size, norm=np.broadcast_to(norms[t], (2, count)),
                          check_cost=np.array([7] * count))
        for j, s in enumerate(scheds):
            scalar[j], e = advance(s, scalar[j], scalar[j].batch_size, norm=norms[t, j], check_cost=7)
            for r in range(2):
                assert ev[r, j] == e
                exact = [f for f in rule.StageState._fields if f not in ("lr", "eps_m")]
                assert [getattr(vec, f)[r, j] for f in exact] == [getattr(scalar[j], f) for f in exact]
                # eta_m and eps_m: numpy's array and scalar power may differ in the last bit
                assert vec.lr[r, j] == pytest.approx(scalar[j].lr, rel=1e-13)
                assert vec.eps_m[r, j] == pytest.approx(scalar[j].eps_m, rel=1e-13)


def test_stall_actions():
    base = dict(b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.4, tau=1, stall_limit=3)
    results = {}
    for action in ("advance", "stop", "warn"):
        s = rule.adaptive_exponential(**base, stall_action=action)
        st_ = initial_state(s)
        evs = []
        for _ in range(4):
            st_, ev = advance(s, st_, st_.batch_size, norm=1.0)
            evs.append(ev)
        results[action] = (evs, st_)
    evs, st_ = results["advance"]
    assert evs[2] == Event.STALL_ADVANCED and st_.stage == 1 and st_.batch_size == 16
    evs, st_ = results["stop"]
    assert evs[2] == Event.STALL_STOPPED and evs[3] == Event.NONE and st_.stopped and st_.step == 3
    evs, st_ = results["warn"]
    assert evs[2] == Event.STALL_WARNED and evs[3] == Event.CHECKED and st_.stage == 0 and not st_.stopped


@pytest.mark.parametrize("action, fired", [("stop", Event.STALL_STOPPED), ("advance", Event.STALL_ADVANCED),
                                            ("warn", Event.STALL_WARNED)])
@pytest.mark.parametrize("blocked_by", ["nan norm", "diverged step"])
def test_a_blocked_step_at_the_stall_limit_delays_the_action_to_the_next_step(action, fired, blocked_by):
    # tau = 1: every step is a check; norm 1.0 > eps_0 = 0.5 never ends a stage by the norm.
    # Step 3 (stage_step = stall_limit = 3) is blocked; the action fires on step 4 (stage_step 4 > 3).
    s = rule.adaptive_exponential(b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.4, tau=1, stall_limit=3,
                                  stall_action=action)
    st_ = initial_state(s)
    evs = []
    for t in range(1, 9):
        blocked = t == 3
        norm = math.nan if blocked and blocked_by == "nan norm" else 1.0
        st_, ev = advance(s, st_, st_.batch_size, norm=norm, finite=not (blocked and blocked_by == "diverged step"))
        evs.append(ev)
    assert evs[2] == Event.NONFINITE and evs[3] == fired
    assert evs.count(fired) == (2 if action == "advance" else 1)   # once per stage: stage 1 stalls at its step 3
    if action == "stop":
        assert st_.stopped and st_.step == 4 and evs[4:] == [Event.NONE] * 4
    if action == "advance":
        assert evs[6] == Event.STALL_ADVANCED and st_.stage == 2   # steps 5, 6, 7 of stage 1
    if action == "warn":
        assert st_.stage == 0 and not st_.stopped and st_.stalled and evs[4:] == [Event.CHECKED] * 4


def test_the_stall_flag_resets_with_the_stage_and_old_states_without_it_load():
    s = rule.adaptive_exponential(b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.4, tau=1, stall_limit=2,
                                  stall_action="warn")
    st_ = initial_state(s)
    for _ in range(3):
        st_, _ = advance(s, st_, 8, norm=1.0)
    assert st_.stalled
    st_, ev = advance(s, st_, 8, norm=0.1)
    assert ev == Event.ADVANCED and not st_.stalled
    st_, _ = advance(s, st_, 16, norm=1.0)
    st_, ev = advance(s, st_, 16, norm=1.0)
    assert ev == Event.STALL_WARNED                                 # the new stage warns again, once
    old = {k: v for k, v in initial_state(s).to_dict().items() if k != "stalled"}
    assert rule.state_from_dict(old) == initial_state(s)


def test_a_state_saved_with_the_old_name_of_eps_m_reads_back():
    """ε_m has one name, ``eps_m``; a checkpoint written when it was ``threshold`` still loads."""
    s = rule.adaptive_exponential(b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.4, tau=2, b_max=64)
    st_, _ = advance(s, initial_state(s), 8)
    st_, _ = advance(s, st_, 8, norm=0.1)
    old = {("threshold" if k == "eps_m" else k): v for k, v in st_.to_dict().items()}
    assert "eps_m" not in old and rule.state_from_dict(old) == st_


def test_eta_max_caps_growth():
    s = paper_schedule(eta_max=0.5)
    _, eta, _ = stage_values(s, np.arange(10))
    assert eta.max() == 0.5 and eta[4] == pytest.approx(0.38416)


def test_gamma_equal_one_is_allowed():
    s = rule.adaptive_exponential(b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.0, tau=1)
    assert np.all(stage_values(s, np.arange(5))[1] == 0.1)


# -- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, name, got", [
    (dict(gamma=1.5), "gamma", "gamma=1.5"),
    (dict(gamma=0.9), "gamma", "gamma=0.9"),
    (dict(delta=1.0), "delta", "delta=1.0"),
    (dict(delta=0.5), "delta", "delta=0.5"),
    (dict(b0=0), "b0", "b0=0"),
    (dict(b0=8192), "b_max", "b_max=4096"),
    (dict(eps0=0.0), "eps0", "eps0=0.0"),
    (dict(eta0=float("nan")), "eta0", "eta0=nan"),
    (dict(tau=0), "tau", "tau=0"),
    (dict(eta_max=0.01), "eta_max", "eta_max=0.01"),
    (dict(stall_limit=5), "stall_action", "stall_action='none'"),
])
def test_bad_schedule_arguments(changes, name, got):
    with pytest.raises(ParameterError) as err:
        rule.adaptive_exponential(**{**PAPER_ADAPTIVE, **changes})
    assert f"'{name}' parameter" in str(err.value) and f"Got {got} instead" in str(err.value)


def test_gamma_at_or_above_sqrt_delta_explains_and_can_be_allowed():
    with pytest.raises(ParameterError, match=r"gamma\^2 < delta"):
        rule.adaptive_exponential(**{**PAPER_ADAPTIVE, "gamma": math.sqrt(2)})
    s = rule.adaptive_exponential(**{**PAPER_ADAPTIVE, "gamma": 1.5, "allow_unstable": True})
    assert s.gamma == 1.5


def test_wrong_types():
    with pytest.raises(TypeError, match="'b0' parameter .* must be an integer. Got b0=8.0"):
        rule.adaptive_exponential(**{**PAPER_ADAPTIVE, "b0": 8.0})
    with pytest.raises(TypeError, match="'eta0' parameter .* must be a real number. Got eta0='0.1'"):
        rule.constant(b0=8, eta0="0.1")


def test_state_and_schedule_dicts_refuse_foreign_keys():
    with pytest.raises(ParameterError, match="'d' parameter of state_from_dict"):
        rule.state_from_dict({"stage": 0})
    with pytest.raises(ParameterError, match="'d' parameter of schedule_from_dict"):
        rule.schedule_from_dict({**paper_schedule().to_dict(), "colour": "red"})


def test_a_diverged_step_blocks_every_move_but_is_counted():
    s = rule.periodic(b0=8, eta0=0.1, delta=2, gamma=1.4, period=2)
    st_ = initial_state(s)
    st_, _ = advance(s, st_, 8)
    st_, ev = advance(s, st_, 8, finite=False)          # would be the periodic move
    assert ev == Event.NONFINITE and st_.stage == 0 and st_.step == 2 and st_.samples == 16
    st_, ev = advance(s, st_, 8)                        # the move happens on the next healthy step
    assert ev == Event.PERIOD and st_.stage == 1
    a = rule.adaptive_exponential(b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.4, tau=1)
    st_, ev = advance(a, initial_state(a), 8, norm=0.1, finite=False)
    assert ev == Event.NONFINITE and st_.stage == 0
