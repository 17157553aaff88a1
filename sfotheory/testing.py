r"""Property tests for batch-size and learning-rate policies: hypothesis strategies and one call.

:func:`check_policy_invariants` runs a policy of :mod:`sfotheory.policies`, or one of your
own (a subclass of :class:`~sfotheory.policies.Policy`), along drawn statistic sequences,
NaN and ±∞ included, and asserts the invariants every policy must keep:

1. b never decreases, unless the class sets ``may_shrink_batch``;
2. b ≤ b_max, and b ≤ n (the kit draws n ≥ the largest b the policy can reach, as a simulator
   refuses anything else on an n-sample data set);
3. 0 ≤ η ≤ η_max (a NaN η fails it too);
4. a statistic the policy reads that is not finite, or a step whose gradient was not
   (``finite=False``), moves nothing: the event is NONFINITE and b and the stage stay;
5. the step is counted (``step`` + 1, ``samples`` + b, nothing once stopped) and measurement
   SFO is charged only on the steps that read statistics;
6. the state round-trips through ``to_dict`` and JSON, and so does the configuration;
7. rows of numpy arrays give what each row gives alone (vectorised equals scalar);
8. the same inputs give the same outputs (determinism).

Hypothesis is a test extra of this package; this module imports it only when a strategy or
the check is called, and says how to install it if it is missing.

>>> from sfotheory.policies import NormTest
>>> check_policy_invariants(NormTest, max_examples=5)          # passes silently
"""

from __future__ import annotations

import inspect
import json
import math

import numpy as np

from .policies import (
    Policy,
    PolicyEvent,
    Statistics,
    check_due,
    initial_state,
    needs,
    policy_from_dict,
    state_from_dict,
    step,
)
from .validation import fail

__all__ = [
    "assert_policy_invariants",
    "check_intervals",
    "check_policy_invariants",
    "policies_from",
    "policy_arguments",
    "populations",
    "schedules",
    "statistic_sequences",
    "statistic_values",
]

#: the keys of one drawn step: the statistics, and whether the step's gradient was finite
STEP_KEYS = ("grad_sq", "trace_var", "inner_var", "full_norm", "finite")


def _hypothesis():
    """(hypothesis, hypothesis.strategies), or an ImportError that says how to install them."""
    try:
        import hypothesis
        from hypothesis import strategies
    except ImportError as err:  # pragma: no cover - the test extras install hypothesis
        raise ImportError("sfotheory.testing needs hypothesis, a test extra: pip install 'sfo-schedulers[test]' "
                          "(or pip install hypothesis)") from err
    return hypothesis, strategies


# -- strategies ----------------------------------------------------------------------------------------------

def check_intervals(max_tau: int = 8):
    """Check intervals τ (steps between checks): integers 1..max_tau."""
    _, st = _hypothesis()
    return st.integers(1, max_tau)


def policy_arguments(*, max_b0: int = 64, max_b_max: int = 4096, max_tau: int = 4):
    """Consistent common arguments: dicts with b0 ∈ [2, max_b0], b_max ∈ [b0, max_b_max],
    η₀ ∈ [10⁻³, 1], η_max ∈ {∞} ∪ [η₀, 4η₀] and τ from :func:`check_intervals`."""
    _, st = _hypothesis()

    @st.composite
    def draw_arguments(draw):
        b0 = draw(st.integers(2, max_b0))
        eta0 = draw(st.floats(1e-3, 1.0))
        return {"b0": b0, "b_max": draw(st.integers(b0, max(b0, max_b_max))), "eta0": eta0,
                "eta_max": draw(st.one_of(st.just(math.inf), st.floats(eta0, 4 * eta0))),
                "tau": draw(check_intervals(max_tau))}

    return draw_arguments()


def statistic_values(low: float = 1e-4, high: float = 10.0, *, nonfinite: bool = True):
    """0.0, or floats spread over [low, high] on a log scale (so that every regime of a ratio of two
    statistics comes up), and, unless ``nonfinite`` is False, NaN, +∞ or −∞ about once in ten draws."""
    _, st = _hypothesis()
    if not 0 < low < high:
        fail("low", "statistic_values", f"> 0 and < high = {high!r}", low)
    finite = st.one_of(st.just(0.0), st.floats(math.log10(low), math.log10(high)).map(_power_of_ten))
    if not nonfinite:
        return finite
    special = st.sampled_from([math.nan, math.inf, -math.inf])

    # A composite, not .map onto shared objects (nan, inf, True): hypothesis would keep one printer per draw for
    # each of them and print a failing example in quadratic time.
    @st.composite
    def value(draw):
        return draw(special) if draw(st.integers(0, 9)) == 0 else draw(finite)

    return value()


def _power_of_ten(e: float) -> float:
    return 10.0**e


def statistic_sequences(*, min_size: int = 1, max_size: int = 40, rows: int = 1):
    """Lists of steps; each step is a list of ``rows`` dicts with the keys of :data:`STEP_KEYS`:
    ‖g_B‖² in [10⁻⁴, 10], tr Σ̂ in [10⁻², 10³], V̂_ip in [10⁻⁴, 10³], ‖∇f‖ in [10⁻³, 2] (each sometimes
    0, NaN or ±∞), and ``finite`` False about once in twenty steps."""
    _, st = _hypothesis()
    one = st.fixed_dictionaries({
        "grad_sq": statistic_values(1e-4, 10.0), "trace_var": statistic_values(1e-2, 1e3),
        "inner_var": statistic_values(1e-4, 1e3), "full_norm": statistic_values(1e-3, 2.0),
        "finite": st.sampled_from((False,) + (True,) * 19)})
    return st.lists(st.lists(one, min_size=rows, max_size=rows), min_size=min_size, max_size=max_size)


def populations(minimum: int):
    """The n of sampling without replacement: ∞ (with replacement) or an integer in [minimum, 4·minimum]."""
    _, st = _hypothesis()
    minimum = max(int(minimum), 2)
    return st.one_of(st.just(math.inf), st.integers(minimum, 4 * minimum).map(float))


def schedules():
    """Schedules of :mod:`sfotheory.rule` (Algorithm 2, exponential and linear, and the baselines periodic,
    constant, cosine) with drawn arguments; ``schedules().map(StageRule)`` gives them as policies."""
    _, st = _hypothesis()
    from . import rule

    @st.composite
    def draw_schedule(draw):
        kind = draw(st.sampled_from(["adaptive_exponential", "adaptive_linear", "periodic", "constant", "cosine"]))
        args = draw(policy_arguments())
        b0, eta0, b_max, tau = args["b0"], args["eta0"], args["b_max"], args["tau"]
        if kind == "adaptive_exponential":
            delta = draw(st.floats(1.01, 4.0))
            stall = draw(st.integers(0, 6))
            return rule.adaptive_exponential(
                b0=b0, eta0=eta0, eps0=draw(st.floats(0.01, 2.0)), delta=delta,
                gamma=draw(st.floats(1.0, math.sqrt(delta) * 0.999)), tau=tau, b_max=b_max,
                eta_max=args["eta_max"], stall_limit=stall,
                stall_action=draw(st.sampled_from(["advance", "stop", "warn"])) if stall else "none")
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

    return draw_schedule()


def policies_from(policy_factory, **strategies):
    """Policies built by ``policy_factory`` (a class or function) from :func:`policy_arguments` and ``strategies``.

    The common arguments are passed only where the factory's signature takes them; a
    keyword strategy adds or replaces one. A hypothesis strategy of policies is returned as it is.
    """
    _, st = _hypothesis()
    if isinstance(policy_factory, st.SearchStrategy):
        return policy_factory
    if not callable(policy_factory):
        fail("policy_factory", "policies_from", "a Policy class, a function returning a Policy, or a hypothesis "
             "strategy of policies", policy_factory, cls=TypeError)
    params = inspect.signature(policy_factory).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    @st.composite
    def draw_policy(draw):
        common = draw(policy_arguments())
        kwargs = {k: v for k, v in common.items() if takes_all or k in params}
        kwargs.update({k: draw(s) for k, s in strategies.items()})
        return policy_factory(**kwargs)

    return draw_policy()


# -- the invariants ----------------------------------------------------------------------------------------

def _same(a, b, rel: float = 0.0) -> bool:
    """Equal, NaN equal to NaN, floats within ``rel``."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        a, b = a.astype(float), b.astype(float)
        both_nan = np.isnan(a) & np.isnan(b)
        close = (a == b) | (np.abs(a - b) <= rel * np.maximum(np.abs(a), np.abs(b)))
        return bool(np.all(both_nan | close))
    return bool(np.all(a == b))


def _states_equal(x, y, rel: float = 0.0) -> bool:
    return type(x) is type(y) and all(_same(a, b, rel) for a, b in zip(x, y))


def _check(condition: bool, policy: Policy, what: str, detail: str) -> None:
    if not condition:
        raise AssertionError(f"{type(policy).__name__} ({policy.kind!r}) breaks '{what}': {detail}")


def _stats(policy, state, values: dict, population: float, monitor_cost: int) -> Statistics:
    return Statistics(samples=state.batch_size, grad_sq=values["grad_sq"], trace_var=values["trace_var"],
                      inner_var=values["inner_var"], full_norm=values["full_norm"],
                      check_cost=needs(policy).check_cost(monitor_cost), population=population,
                      finite=values["finite"])


def _one_step(policy: Policy, state, values: dict, population: float, monitor_cost: int, t: int):
    """Step one scalar run and assert invariants 1–6 and 8 on it; returns (new state, event)."""
    reads = needs(policy).statistics
    due = bool(check_due(policy, state))
    stats = _stats(policy, state, values, population, monitor_cost)
    new, event = step(policy, state, stats)
    where = f"step {t + 1}, statistics {values}, population {population}: {state} -> {new}, {event!r}"
    again = step(policy, state, stats)
    _check(_states_equal(again[0], new) and again[1] == event, policy, "same inputs, same outputs", where)
    if not policy.may_shrink_batch:
        _check(new.batch_size >= state.batch_size, policy, "b never decreases", where)
    _check(new.batch_size <= policy.b_max, policy, f"b <= b_max = {policy.b_max}", where)
    _check(new.batch_size <= population, policy, f"b <= n = {population:g}", where)
    _check(0.0 <= new.lr <= policy.eta_max * (1 + 1e-12), policy, f"0 <= eta <= eta_max = {policy.eta_max:g}",
           where)
    blocked = (not values["finite"]) or (due and not all(math.isfinite(values[k]) for k in reads))
    if blocked and not state.stopped:
        _check(event == PolicyEvent.NONFINITE and new.batch_size == state.batch_size and new.stage == state.stage,
               policy, "a non-finite statistic never advances", where)
    running = not state.stopped
    _check(new.step == state.step + running and new.samples == state.samples + (state.batch_size if running else 0),
           policy, "every step is counted (step + 1, samples + b; nothing once stopped)", where)
    charged = stats.check_cost if due else 0
    _check(new.check_samples == state.check_samples + charged, policy,
           "measurement SFO is charged on check steps only", where)
    text = json.dumps(new.to_dict())
    _check(_states_equal(state_from_dict(policy, json.loads(text)), new), policy,
           "the state round-trips through to_dict and JSON", f"{where}; JSON {text}")
    return new, event


def assert_policy_invariants(policy: Policy, sequence, population: float = math.inf, monitor_cost: int = 0) -> None:
    """Assert the invariants of the module docstring for ``policy`` along one drawn ``sequence``.

    ``sequence[t][r]`` is the dict of statistics of step t for row r (:func:`statistic_sequences`);
    every row runs alone (scalar) and all rows together (numpy arrays), and both must agree.
    Raises AssertionError naming the invariant, the step and the values.
    """
    if not isinstance(policy, Policy):
        fail("policy", "assert_policy_invariants", "a Policy (see sfotheory.policies)", policy, cls=TypeError)
    text = json.dumps(policy.to_dict())
    _check(policy_from_dict(json.loads(text)) == policy, policy, "the configuration round-trips through to_dict",
           text)
    rows = len(sequence[0]) if sequence else 1
    first = initial_state(policy)
    _check(first.batch_size <= min(policy.b_max, population) and first.lr <= policy.eta_max, policy,
           "the initial state keeps the caps", str(first))
    scalar = [first] * rows
    batch = initial_state(policy, shape=(rows,))
    for t, values in enumerate(sequence):
        events = []
        for r in range(rows):
            scalar[r], event = _one_step(policy, scalar[r], values[r], population, monitor_cost, t)
            events.append(int(event))
        columns = {k: np.array([values[r][k] for r in range(rows)]) for k in STEP_KEYS}
        batch, batch_events = step(policy, batch, _stats(policy, batch, columns, population, monitor_cost))
        for r in range(rows):
            row = type(batch)(*(v[r] for v in batch))
            _check(_states_equal(row, scalar[r], rel=1e-12) and int(batch_events[r]) == events[r], policy,
                   "vectorised equals scalar", f"step {t + 1}, row {r}: rows give {row}, {batch_events[r]}; "
                   f"alone {scalar[r]}, {events[r]}")


def check_policy_invariants(policy_factory, *, max_examples: int = 60, steps: int = 40, rows: int = 3,
                            shrink: bool = True, **strategies) -> None:
    """Property-test the invariants of the module docstring on policies from ``policy_factory``.

    ``policy_factory`` is a Policy class, a function returning a policy, or a hypothesis
    strategy of policies (:func:`policies_from` says how a class or function is called;
    ``strategies`` are keyword strategies for its other arguments). Each example draws a
    policy, n (:func:`populations`), a monitor cost and ``rows`` statistic sequences of
    ``steps``/2 to ``steps`` steps. Hypothesis's settings profile is respected (the suite's
    derandomizes); a failure raises AssertionError with the example, shrunk to a small one
    unless ``shrink`` is False (faster when only the failure matters).
    """
    hypothesis, st = _hypothesis()
    policies = policies_from(policy_factory, **strategies)

    phases = [p for p in hypothesis.Phase if shrink or p not in (hypothesis.Phase.shrink, hypothesis.Phase.explain)]

    @hypothesis.settings(parent=hypothesis.settings.default, max_examples=max_examples, deadline=None,
                         phases=phases, suppress_health_check=[hypothesis.HealthCheck.too_slow])
    @hypothesis.given(data=st.data())
    def invariants(data):
        policy = data.draw(policies, label="policy")
        population = data.draw(populations(policy.batch_bound() if policy.batch_bound() < 2**40 else 2**40),
                               label="population")
        if population < policy.batch_bound():
            population = math.inf
        cost = data.draw(st.integers(0, 1000), label="monitor_cost")
        sequence = data.draw(statistic_sequences(min_size=max(1, steps // 2), max_size=steps, rows=rows),
                             label="statistics")
        assert_policy_invariants(policy, sequence, population, cost)

    invariants()
