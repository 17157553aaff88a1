r"""Any policy of :mod:`sfotheory.policies` driving a torch training loop.

:class:`PolicyScheduler` is :class:`~sfotorch.scheduler.StageScheduler`'s contract for every
policy (Algorithm 2 and its baselines through :class:`~sfotheory.policies.StageRule`, the norm
and inner-product tests, the gradient noise scale, AdaScale, Smith et al.'s batch increase):
the policy logic lives in :func:`sfotheory.policies.step` only; this shell measures what the
policy reads, calls it once per step, writes η into every param group and b into the
:class:`~sfotorch.sampler.ResizableLoader` (used from the very next batch)::

    for xb, yb in loader:
        optimizer.zero_grad()
        sched.backward(xb, yb)           # replaces loss_fn(model(xb), yb).backward()
        sched.before_update()            # only when needs(policy).order == "before_update" (AdaScale)
        optimizer.step()
        sched.step()

A loop that runs its own forward and backward (another model signature, mixed precision,
Lightning) brackets them instead: ``sched.begin_batch(xb, yb)`` before the forward,
``sched.end_batch(loss)`` after ``loss.backward()``; :meth:`~PolicyScheduler.backward` is exactly
that around ``loss_fn(model(xb), yb)``.

Statistics of the training batch B (b samples, mean-reduced loss, legend of
:mod:`sfotheory.policies.base`), measured between :meth:`~PolicyScheduler.begin_batch` and
:meth:`~PolicyScheduler.end_batch` on check steps only:

.. math::

    \|g_B\|^2 = \Bigl\|\tfrac1b \textstyle\sum_{i\in B}\nabla f_i\Bigr\|^2, \qquad
    \widehat{\operatorname{tr}\Sigma} = \frac{\sum_i s_i - b\|g_B\|^2}{b-1}, \qquad
    \widehat V_{\rm ip} = \frac{1}{b-1}\sum_i \bigl(p_i - \bar p\bigr)^2,
    \quad p_i = \nabla f_i^\top g_B = \frac{d}{d\epsilon} f_i(\theta + \epsilon g_B)\Big|_{\epsilon=0},

Legend: θ the parameters, f_i the loss of sample i, g_B the batch-mean gradient (the fresh
``.grad``), s_i = ‖∇f_i‖², p_i the per-sample inner product and p̄ = (1/b) Σ p_i = ‖g_B‖² (the
centre of V̂_ip's definition; the sample mean is the stabler one in floating point). Costs:

* ‖g_B‖²: one fused norm of the fresh ``.grad`` (O(d) wall time); 0 SFO.
* tr Σ̂: s_i from the per-sample-norm hooks inside the one ordinary backward
  (:mod:`sfotorch.monitors.per_sample_norms`: per layer about one more weight-gradient-sized
  contraction); ``.grad`` is the plain backward's bit for bit; 0 SFO.
* V̂_ip (only when the policy reads it): one forward-mode pass, ``torch.func.jvp`` of the b
  per-sample losses through ``torch.func.functional_call`` with tangent g_B: a forward with its
  tangent, about three forwards of wall time, no graph kept; 0 SFO. The model runs on the whole
  batch as in training; the loss is ``torch.func.vmap``-ed over single (output, target) pairs, so
  f_i is ``loss_fn`` on a batch of one and any mean-reduced loss works unchanged. The global RNG
  is replayed from :meth:`~PolicyScheduler.begin_batch` for this pass and restored after it:
  dropout draws the training forward's masks, and training draws the same numbers with or without
  the measurement. The mean of these f_i must be the back-propagated loss (to 1 %), else the
  ``loss_fn`` is refused: V̂_ip would be that of another function than the one trained.
* ‖∇f(θ)‖ (StageRule): the ``monitor``'s ``measure()`` (``measure(eps_m=ε_m)`` when it
  ``uses_eps_m``), called exactly as by StageScheduler; its ``cost`` is charged as ``check_cost``.

``population`` is the loader's n (batches are drawn without replacement within an epoch), ∞
without a loader. Per-sample statistics are exact for the layers that the hooks support
(Linear, Embedding, Conv1d/2d, LayerNorm, GroupNorm, BatchNorm in eval mode); other models are
refused. A custom loop passes ``step(stats=Statistics(...))`` instead and nothing is measured.

A non-finite loss (every step) or ‖g_B‖² (check steps) gives ``Statistics(finite=False)``: the
policy moves nothing (``PolicyEvent.NONFINITE``) and the call that ran it raises
:class:`~sfotorch.scheduler.NonFiniteError` after counting the step (``on_nonfinite="warn"``: a
warning). A check step on a batch of one sample (the short end of an epoch) has no per-sample
variance: NONFINITE with a warning, never an error.

>>> import torch
>>> from sfotheory.policies import NormTest, Statistics
>>> model = torch.nn.Linear(2, 1)
>>> opt = torch.optim.SGD(model.parameters(), lr=1.0)
>>> sched = PolicyScheduler(opt, NormTest(b0=4, eta0=0.1, theta=0.5, b_max=64))
>>> opt.param_groups[0]["lr"], sched.batch_size
(0.1, 4)
>>> sched.step(stats=Statistics(samples=4, grad_sq=1.0, trace_var=2.0)).name   # 2/4 > 0.25·1
'ADVANCED'
>>> sched.batch_size, sched.get_last_lr(), sched.stage
(8, [0.1], 1)
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch

from sfotheory.policies import AdaScale, Policy, PolicyEvent, StageRule, Statistics, check_due, initial_state, \
    needs, state_from_dict, step
from sfotheory.policies.base import state_to_dict
from sfotheory.validation import ParameterTypeError, check_choice, check_integer, fail

from .monitors.base import trainable_parameters
from .monitors.per_sample_norms import PerSampleNorms, unsupported_modules
from .scheduler import NONFINITE_ACTIONS, NonFiniteError
from .sfolog import SFOLogWriter
from .shell import apply_decision, check_loader, check_optimizer, open_log, report_nonfinite, write_record

__all__ = ["PolicyScheduler"]

_BATCH = ("grad_sq", "trace_var", "inner_var")
_DEFAULT_B_MAX = 2**62


def _fit_to_dataset(policy: Policy, n: int, where: str) -> Policy:
    """The policy with b_max capped at the loader's n (silently from the default, with a warning otherwise)."""
    if policy.b0 > n:
        fail("policy", where, f"a policy with b0 <= the dataset size n = {n}", policy.b0,
             reason="a batch is drawn without replacement from one epoch")
    if isinstance(policy, AdaScale) or policy.batch_bound() <= n:
        return policy
    if policy.b_max != _DEFAULT_B_MAX:
        warnings.warn(f"PolicyScheduler: b_max={policy.b_max} exceeds the dataset size n={n}; b_max is capped at {n}",
                      stacklevel=3)
    if isinstance(policy, StageRule):
        return StageRule(policy.schedule.replace(b_max=n), policy.check_order)
    return policy.replace(b_max=n)


def _rng_state(device: torch.device):
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


@contextlib.contextmanager
def _replayed_rng(state, device: torch.device):
    """Inside: the global RNG as it was in ``state``; on exit, as it was on entry."""
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.set_rng_state(state[0])
        if cuda:
            torch.cuda.set_rng_state(state[1], device)
        yield


def _json_number(x):
    return float(x) if math.isfinite(float(x)) else None       # JSON has no NaN


class PolicyScheduler:
    r"""Batch size and learning rate of a torch training loop from a :class:`~sfotheory.policies.Policy`.

    Parameters
    ----------
    optimizer : a torch optimizer whose param groups hold ``'lr'``; η is written into every group.
    policy : a :class:`~sfotheory.policies.Policy`; with a loader, b0 ≤ n is enforced and b_max is
        capped at n (silently from its default, with a warning when given larger).
    loader : the :class:`~sfotorch.sampler.ResizableLoader` whose ``batch_size`` follows b.
    model : the model whose batch statistics are measured (needed when the policy reads them, and for
        :meth:`backward`).
    loss_fn : its mean-reduced loss ``loss_fn(outputs, targets)``, for :meth:`backward` and V̂_ip
        (required with a model when the policy reads ``inner_var``).
    monitor : measures ‖∇f(θ)‖ for a policy that reads ``full_norm`` (required then): ``.measure()``
        returning ``.norm`` and ``.cost`` (the StageScheduler protocol, ``uses_eps_m`` and
        ``undecided`` included).
    on_nonfinite : ``"raise"`` (:class:`~sfotorch.scheduler.NonFiniteError`) or ``"warn"``.
    log : a path (JSON lines, appended), a list or an object with ``write(dict)``; one record per
        check step and per move.
    """

    def __init__(self, optimizer, policy, *, loader=None, model=None, loss_fn=None, monitor=None,
                 on_nonfinite: str = "raise", log=None):
        where = "PolicyScheduler"
        check_optimizer(optimizer, where)
        if not isinstance(policy, Policy):
            fail("policy", where, "a Policy of sfotheory.policies (e.g. NormTest(b0=..., eta0=...))", policy,
                 cls=ParameterTypeError)
        self.on_nonfinite = check_choice(on_nonfinite, NONFINITE_ACTIONS, "on_nonfinite", where)
        n = None
        if loader is not None:
            n = check_loader(loader, where)
            policy = policy if n is None else _fit_to_dataset(policy, n, where)
        self.optimizer, self.policy, self.loader, self.needs = optimizer, policy, loader, needs(policy)
        self.population = math.inf if n is None else float(n)    # batches drawn without replacement from n
        if "full_norm" in self.needs.statistics and not callable(getattr(monitor, "measure", None)):
            fail("monitor", where, "an object with a measure() method returning .norm and .cost", monitor,
                 reason=f"policy {policy.name!r} reads the full-gradient norm")
        self.monitor = monitor
        self._init_model(model, loss_fn, where)
        self._log = open_log(log, where)
        self.transitions: list[dict] = []
        self.last_event: PolicyEvent | None = None
        self.last_stats: Statistics | None = None
        self._measured: dict | None = None
        self._batch: dict | None = None          # the batch between begin_batch() and end_batch()
        self._pre_done = False
        self._state = initial_state(policy)
        self._apply()

    def _init_model(self, model, loss_fn, where):
        self.model, self.loss_fn, self._norms = model, loss_fn, None
        if model is None:
            return
        self.params = trainable_parameters(model, where)
        ids = {id(p) for p in self.params}
        self._names = [n for n, p in model.named_parameters() if id(p) in ids]
        if loss_fn is None and "inner_var" in self.needs.statistics:
            fail("loss_fn", where, "a callable loss_fn(outputs, targets) when model is given", loss_fn,
                 reason=f"policy {self.policy.name!r} reads inner_var, the variance of the per-sample losses' "
                        "directional derivatives")
        if loss_fn is not None and not callable(loss_fn):
            fail("loss_fn", where, "a callable loss_fn(outputs, targets) when model is given", loss_fn)
        if getattr(loss_fn, "reduction", "mean") != "mean":
            fail("loss_fn", where, "mean-reduced (reduction='mean')", loss_fn.reduction,
                 reason="the policies' statistics and eta are those of the batch-mean gradient")
        if set(_BATCH) & set(self.needs.statistics):
            self._check_model(where)
            self._norms = PerSampleNorms(model, self.params, where=where)

    def _check_model(self, where):
        reasons = unsupported_modules(self.model, self.params)
        if reasons:
            fail("model", where, "a model whose per-sample gradients the hooks compute exactly "
                 "(Linear, Embedding, Conv1d/2d, LayerNorm, GroupNorm, BatchNorm in eval mode)",
                 type(self.model).__name__, reason="; ".join(reasons))

    # -- read-only views -----------------------------------------------------------------------

    state = property(lambda self: self._state, doc="The policy's state record (what the next step uses).")
    batch_size = property(lambda self: int(self._state.batch_size), doc="b: the batch size of the next step.")
    lr = property(lambda self: float(self._state.lr), doc="η: the learning rate in the param groups.")
    stage = property(lambda self: int(self._state.stage), doc="The moves the policy has made so far.")
    stopped = property(lambda self: bool(self._state.stopped), doc="True once the policy stopped the run.")

    @property
    def check_due(self) -> bool:
        """Whether the step now being taken reads the policy's statistics."""
        return bool(self.needs.statistics) and bool(check_due(self.policy, self._state))

    def get_last_lr(self) -> list[float]:
        """η written into each param group by the last step (torch's contract)."""
        return [self.lr] * len(self.optimizer.param_groups)

    # -- the batch's own statistics ----------------------------------------------------------------

    def backward(self, inputs, targets) -> torch.Tensor:
        """Replace ``loss_fn(model(inputs), targets).backward()``; return that loss (detached).

        On a check step, also measures the batch statistics the policy reads (module docstring)
        for the coming :meth:`step` / :meth:`before_update`: :meth:`begin_batch`, the backward,
        :meth:`end_batch`.
        """
        where = "PolicyScheduler.backward"
        if self.model is None or self.loss_fn is None:
            fail("model" if self.model is None else "loss_fn", "PolicyScheduler",
                 "given (model with loss_fn) to call backward()", None)
        if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
            fail("inputs", where, "a tensor (and targets a tensor)", type(inputs).__name__)
        self.begin_batch(inputs, targets)
        try:
            with torch.enable_grad():
                loss = self.loss_fn(self.model(inputs), targets)
                loss.backward()
        except BaseException:
            self.cancel_batch()
            raise
        loss = loss.detach()
        self.end_batch(loss)
        return loss

    def begin_batch(self, inputs=None, targets=None) -> None:
        """Before the forward of a batch whose forward and backward the caller runs: start its measurement.

        On a check step of a policy that reads batch statistics: registers the per-sample-norm hooks
        (tr Σ̂), keeps the global RNG state (V̂_ip) and the ``.grad`` that the backward adds to. Then the
        caller runs the forward and ``loss.backward()`` of the batch-mean loss and calls
        :meth:`end_batch`. ``inputs`` (the model's input, the batch on its first dimension) is needed on
        those check steps, and ``targets`` too when the policy reads V̂_ip (the module's forward is then
        ``model(inputs)`` and its loss ``loss_fn(outputs, targets)``); other steps only count.
        """
        where = "PolicyScheduler.begin_batch"
        if self._batch is not None:
            raise RuntimeError("PolicyScheduler.begin_batch() was called twice without end_batch() in between")
        if self._measured is not None:
            raise RuntimeError("PolicyScheduler: a batch was measured twice without step() in between "
                               "(backward() or begin_batch()/end_batch())")
        wanted = [s for s in _BATCH if s in self.needs.statistics] if self.check_due else []
        if wanted:
            self._check_batch(inputs, targets, wanted, where)
        b = int(inputs.shape[0]) if isinstance(inputs, torch.Tensor) and inputs.dim() > 0 else None
        measure = bool(wanted) and b >= 2                       # one sample has no per-sample variance
        batch = {"inputs": inputs, "targets": targets, "samples": b, "wanted": wanted, "measure": measure,
                 "rng": None, "before": None, "hooks": contextlib.ExitStack()}
        if measure:
            if "inner_var" in wanted:
                batch["rng"] = _rng_state(inputs.device)
            batch["before"] = self._grads_now()
            if "trace_var" in wanted:
                batch["hooks"].enter_context(self._norms.recording())
        self._batch = batch

    def before_backward(self) -> None:
        """Optional, between the forward and the backward of a begun batch: the ``.grad`` held now is what
        the backward adds to (:meth:`begin_batch` read it otherwise). For a loop that zeroes the gradients
        after the forward, as Lightning's optimizer closure does."""
        if self._batch is None:
            raise RuntimeError("PolicyScheduler.before_backward() was called outside begin_batch() ... end_batch()")
        if self._batch["measure"]:
            self._batch["before"] = self._grads_now()

    def end_batch(self, loss) -> None:
        """After ``loss.backward()`` of the batch given to :meth:`begin_batch`: remove the hooks and compute
        the batch statistics (on check steps) for the coming :meth:`step` / :meth:`before_update`.

        ``loss``: the batch-mean loss that was back-propagated (a one-element tensor or a number); a
        non-finite one makes the step NONFINITE.
        """
        where = "PolicyScheduler.end_batch"
        if self._batch is None:
            raise RuntimeError("PolicyScheduler.end_batch() was called without begin_batch()")
        if isinstance(loss, torch.Tensor) and loss.numel() != 1:
            self.cancel_batch()
            fail("loss", where, "the batch-mean loss: a one-element tensor or a number",
                 f"a tensor of shape {tuple(loss.shape)}")
        batch, self._batch = self._batch, None
        batch["hooks"].close()
        value = float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        measured = {"samples": batch["samples"], "loss": value, "finite": math.isfinite(value),
                    "one_sample": bool(batch["wanted"]) and not batch["measure"]}
        if batch["measure"] and math.isfinite(value):
            measured.update(self._batch_statistics(batch, value, where))
        self._measured = measured

    def cancel_batch(self) -> None:
        """Drop a begun batch (hooks removed, nothing measured): its step made no update, or failed."""
        batch, self._batch = self._batch, None
        if batch is not None:
            batch["hooks"].close()

    def _check_batch(self, inputs, targets, wanted, where) -> None:
        reads = f"policy {self.policy.name!r} reads {wanted} on this check step"
        if self.model is None:
            fail("model", "PolicyScheduler", "given to measure the batch statistics", None, reason=reads)
        if not isinstance(inputs, torch.Tensor) or inputs.dim() == 0:
            fail("inputs", where, "the model's input: a tensor with the batch on its first dimension",
                 type(inputs).__name__, reason=reads)
        if "inner_var" in wanted and (not isinstance(targets, torch.Tensor) or targets.dim() == 0
                                      or targets.shape[0] != inputs.shape[0]):
            fail("targets", where, f"a tensor of {inputs.shape[0]} targets on its first dimension, as inputs",
                 tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__,
                 reason="V-hat_ip applies loss_fn to each (output, target) pair")
        self._check_model(where)

    def _grads_now(self) -> list:
        return [None if p.grad is None else p.grad.detach().clone() for p in self.params]

    def _batch_statistics(self, batch, loss, where) -> dict:
        """‖g_B‖², tr Σ̂ (hooks) and V̂_ip (jvp) of the batch just back-propagated (mean loss: .grad = g_B)."""
        inputs, wanted, b = batch["inputs"], batch["wanted"], batch["samples"]
        with torch.no_grad():
            grads = [torch.zeros_like(p) if p.grad is None else p.grad if old is None else p.grad - old
                     for p, old in zip(self.params, batch["before"])]
            grad_sq = float(sum(g.double().pow(2).sum() for g in grads))
            out = {"grad_sq": grad_sq, "finite": math.isfinite(grad_sq)}
            if not out["finite"]:
                return out
            if "trace_var" in wanted:
                sq = self._norms.sq_norms                     # c² s_i with c = 1/b
                total = float(sq.sum(dtype=torch.float64)) * b * b
                out["trace_var"] = max(total - b * grad_sq, 0.0) / (b - 1)
        if "inner_var" in wanted:
            losses, ip = self._inner_products(inputs, batch["targets"], grads, batch["rng"])
            mean = float(losses.double().mean())
            if not math.isclose(mean, loss, rel_tol=1e-2, abs_tol=1e-12):
                fail("loss_fn", where, "the loss that was back-propagated: the mean of loss_fn(model(inputs)[i], "
                     "targets[i]) over the batch", f"one whose batch mean is {mean:.6g}, the loss {loss:.6g}",
                     reason="V-hat_ip would be measured on another function than the one trained")
            out["inner_var"] = float(ip.double().var(correction=1))
        return out

    def _inner_products(self, inputs, targets, grads, rng) -> tuple[torch.Tensor, torch.Tensor]:
        """(f_i, p_i = ∇f_iᵀ g_B) for every sample: one jvp of the per-sample losses with tangent g_B."""
        from torch.func import functional_call, jvp, vmap

        loss_fn = self.loss_fn
        primals = {n: p.detach() for n, p in zip(self._names, self.params)}
        tangents = {n: g.detach() for n, g in zip(self._names, grads)}

        def per_sample_losses(theta):
            outputs = functional_call(self.model, theta, (inputs,))
            return vmap(lambda o, y: loss_fn(o.unsqueeze(0), y.unsqueeze(0)))(outputs, targets)

        with _replayed_rng(rng, inputs.device), torch.no_grad():
            losses, ip = jvp(per_sample_losses, (primals,), (tangents,))
        return losses, ip

    # -- the step ------------------------------------------------------------------------------

    def step(self, stats: Statistics | None = None, *, samples: int | None = None) -> PolicyEvent:
        """Count the step just taken and apply the policy (after ``optimizer.step()``); return its event.

        ``stats``: the step's :class:`~sfotheory.policies.Statistics` from the caller (nothing is measured
        then), else those of :meth:`backward` and the monitor. ``samples``: default the batch of
        :meth:`backward`, else the loader's last batch, else b. A ``"before_update"`` policy: no arguments.
        """
        if self.needs.order == "before_update":
            if not self._pre_done:
                raise RuntimeError(f"PolicyScheduler({self.policy.name!r}) runs its policy before the update: call "
                                   "before_update() after backward() and before optimizer.step(), then step()")
            if stats is not None or samples is not None:
                fail("step", "PolicyScheduler", "called without arguments for a 'before_update' policy (pass "
                     "stats and samples to before_update())", {"stats": stats, "samples": samples})
            self._pre_done = False
            return self.last_event
        return self._advance(stats, samples, "PolicyScheduler.step")

    def before_update(self, stats: Statistics | None = None, *, samples: int | None = None) -> PolicyEvent:
        """``"before_update"`` policies only: apply the policy between backward and ``optimizer.step()``.

        Same arguments as :meth:`step`; the η written here is the one the coming update uses.
        """
        if self.needs.order != "before_update":
            fail("policy", "PolicyScheduler.before_update", "a policy whose needs().order is 'before_update'",
                 self.policy.name, reason="this policy runs after the update: call step() only")
        if self._pre_done:
            raise RuntimeError("PolicyScheduler.before_update() was called twice without step() in between")
        try:
            event = self._advance(stats, samples, "PolicyScheduler.before_update")
        except NonFiniteError:
            self._pre_done = True       # the policy counted the step before the error was raised
            raise
        self._pre_done = True
        return event

    def _advance(self, stats, samples, where) -> PolicyEvent:
        if self._batch is not None:
            raise RuntimeError(f"{where}() was called between begin_batch() and end_batch(): finish the batch "
                               "with end_batch(loss) after its backward (or cancel_batch())")
        st, due = self._state, self.check_due
        measured, self._measured = self._measured or {}, None
        monitor_name = None
        if stats is not None:
            if not isinstance(stats, Statistics):
                fail("stats", where, "a sfotheory.policies.Statistics record", stats, cls=ParameterTypeError)
            if samples is not None:
                fail("samples", where, "None when stats is given (stats.samples counts the step)", samples)
            measured = {}
        else:
            stats, monitor_name = self._statistics(measured, samples, due, where)
        new, event = step(self.policy, st, stats)
        self._state, self.last_event, self.last_stats = new, event, stats
        moved = int(new.stage) != int(st.stage)
        if moved:
            self.transitions.append({"step": int(new.step), "event": event.name, "stage": int(new.stage),
                                     "b": int(new.batch_size), "eta": float(new.lr), "samples": int(new.samples),
                                     "check_samples": int(new.check_samples)})
        self._apply()
        if self._log is not None and (due or moved):
            write_record(self._log, self._record(st, new, event, stats, monitor_name, due))
        if event == PolicyEvent.STALL_WARNED:
            warnings.warn(f"PolicyScheduler: stage {int(st.stage)} reached the stall limit without ‖∇f‖ <= eps_m",
                          RuntimeWarning, stacklevel=3)
        if event == PolicyEvent.NONFINITE:
            self._nonfinite(stats, measured, int(new.step), where)
        return event

    def _statistics(self, measured, samples, due, where):
        """The step's Statistics from backward()'s measurements and, when due, the monitor."""
        if samples is not None:
            samples = check_integer(samples, "samples", where, minimum=1)
        else:
            samples = measured.get("samples") or (getattr(self.loader, "last_batch_len", 0) if self.loader else 0) \
                or int(self._state.batch_size)
        finite = measured.get("finite", True)
        reads = self.needs.statistics
        if due and finite and set(_BATCH) & set(reads) and not measured:
            fail("stats", where, "measured on check steps: call backward(inputs, targets) or pass "
                 "step(stats=Statistics(...))", None, reason=f"step {int(self._state.step) + 1} is a check step "
                 f"(tau={self.needs.tau}) of policy {self.policy.name!r}, which reads {list(reads)}")
        values = {k: measured.get(k, math.nan) for k in _BATCH}
        full_norm, cost, name = math.nan, 0, None
        if due and finite and "full_norm" in reads:
            eps_m = getattr(self._state, "eps_m", None)
            uses_eps = getattr(self.monitor, "uses_eps_m", False) and eps_m is not None
            m = self.monitor.measure(eps_m=float(eps_m)) if uses_eps else self.monitor.measure()
            name = str(getattr(self.monitor, "name", type(self.monitor).__name__))
            full_norm = float(m.norm)
            cost = check_integer(m.cost, "cost", f"{name}.measure()", minimum=0)
            if getattr(m, "undecided", False) and math.isfinite(full_norm) and eps_m is not None:
                full_norm = max(full_norm, math.nextafter(float(eps_m), math.inf))   # no information: no move
        return Statistics(samples=int(samples), full_norm=full_norm, check_cost=cost, population=self.population,
                          finite=finite, **values), name

    def _nonfinite(self, stats, measured, step_no, where) -> None:
        if stats.finite and measured.get("one_sample"):
            warnings.warn(f"{where} (step {step_no}): a check step on a batch of one sample has no per-sample "
                          "variance; nothing moved (event NONFINITE)", RuntimeWarning, stacklevel=4)
            return
        if not stats.finite:       # the loss, else the gradient, else the caller's flag
            name = next((k for k in ("loss", "grad_sq") if not math.isfinite(measured.get(k, 0.0))), "stats.finite")
            value = measured.get(name, False)
        else:
            name = next((s for s in self.needs.statistics if not math.isfinite(float(getattr(stats, s)))), "stats")
            value = getattr(stats, name, stats)
        report_nonfinite(name, f"{where} (step {step_no})", value, action=self.on_nonfinite, error_cls=NonFiniteError,
                         reason="a non-finite value never moves b or eta; the state was kept; on_nonfinite='warn' "
                                "continues")

    def _apply(self) -> None:
        apply_decision(self.optimizer, self.loader, self._state.lr, self._state.batch_size)

    # -- log -----------------------------------------------------------------------------------

    def _record(self, old, new, event, stats, monitor_name, due) -> dict:
        return {"step": int(new.step), "samples": int(new.samples), "check_samples": int(new.check_samples),
                "sfo_total": int(new.samples) + int(new.check_samples), "policy": self.policy.name,
                "stage": int(old.stage), "b": int(old.batch_size), "eta": float(old.lr), "event": event.name,
                "check": bool(due), **{k: _json_number(getattr(stats, k)) for k in (*_BATCH, "full_norm")},
                "monitor": monitor_name, "stage_next": int(new.stage), "b_next": int(new.batch_size),
                "eta_next": float(new.lr)}

    def close(self) -> None:
        """Close the log file if the scheduler opened it."""
        if isinstance(self._log, SFOLogWriter):
            self._log.close()

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The policy's configuration and state, the transitions and the two-call protocol's flag (no optimizer)."""
        return {"policy": self.policy.to_dict(), "state": state_to_dict(self._state),
                "transitions": [dict(t) for t in self.transitions],
                "last_event": None if self.last_event is None else int(self.last_event), "pre_done": self._pre_done}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a :meth:`state_dict`; refuses one written for a different policy configuration.

        Derived fields are rebuilt: η is written into the param groups and b into the loader.
        """
        where = "PolicyScheduler.load_state_dict"
        if not isinstance(state_dict, dict) or not {"policy", "state"} <= set(state_dict):
            fail("state_dict", where, "a dict written by PolicyScheduler.state_dict()", type(state_dict).__name__)
        saved, here = state_dict["policy"], self.policy.to_dict()
        if saved != here:
            diffs = {k: {"saved": saved.get(k), "here": here.get(k)} for k in sorted(set(saved) | set(here))
                     if saved.get(k) != here.get(k)}
            fail("state_dict", where, "written for the same policy configuration as this scheduler", diffs,
                 reason="build the scheduler with the saved policy to resume this run")
        template = initial_state(self.policy)              # the Python type of each field
        state = state_from_dict(self.policy, state_dict["state"])
        self._state = type(template)(*(type(t)(v) for t, v in zip(template, state)))
        self.transitions = [dict(t) for t in state_dict.get("transitions", [])]
        ev = state_dict.get("last_event")
        self.last_event = None if ev is None else PolicyEvent(ev)
        self._pre_done = bool(state_dict.get("pre_done", False))
        self._measured = None
        self.cancel_batch()
        self._apply()
