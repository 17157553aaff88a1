"""The ‖∇f‖ monitors in the README's plain loop, side by side (docs/results/monitors_side_by_side.txt).

Each monitor drives its own run of the same loop (same data, initialisation and batch order); at every
check the exact ‖∇f(θ)‖ is computed beside it at the same θ, neither charged nor fed to the rule, so
that each decision can be compared with the one the exact norm would have taken. Printed per monitor:
the steps of its stage changes, its measurement SFO, and its decisions against the exact norm's.
"""
import torch
from torch import nn

from sfotorch import (DebiasedMonitor, ExactMonitor, ResizableLoader, ScreenedMonitor, SequentialMonitor, StageScheduler,
                      SubsampledMonitor)

N, TAU, EPOCHS = 4096, 50, 6
torch.manual_seed(0)
X = torch.randn(N, 20)
y = X @ torch.randn(20, 1) + 0.3 * torch.randn(N, 1)
data = torch.utils.data.TensorDataset(X, y)
loss_fn = nn.MSELoss()
init = nn.Linear(20, 1).state_dict()


def make_monitor(kind, model):
    if kind == "exact":             # the authors' pass over all n samples
        return ExactMonitor(model, data, loss_fn)
    if kind == "subsampled":        # a fresh subset of s samples at every check, a fixed cost s
        return SubsampledMonitor(model, data, loss_fn, sample_size=512, seed=0)
    if kind == "sequential":        # s_0 = 256 samples, doubled until ‖∇f‖ ≤ ε_m or > ε_m is decided
        return SequentialMonitor(model, data, loss_fn, initial_size=256, seed=0)
    if kind == "zoned":             # the same, also stopping once its interval's half-width is ≤ 0.3 ε_m
        return SequentialMonitor(model, data, loss_fn, initial_size=256, tolerance=0.3, seed=0, name="zoned")
    # the training batches themselves (per-sample-norm hooks); the loop calls .backward of the debiased one
    debiased = DebiasedMonitor(model, loss_fn, variance_source="per_sample_norms", population=N)
    if kind == "debiased":
        return debiased
    # screened: the window rules a check out for free, the sequential test decides the others
    return ScreenedMonitor(debiased, SequentialMonitor(model, data, loss_fn, initial_size=256, seed=0))


class Beside:
    """The run's monitor, and the exact norm at the same θ (not charged, not given to the rule)."""

    def __init__(self, monitor, exact):
        self.monitor, self.exact, self.name = monitor, exact, monitor.name
        self.uses_eps_m = True
        self.decisions = []         # (monitor says ‖∇f‖ ≤ ε_m, the exact norm says so)

    def measure(self, eps_m):
        uses = getattr(self.monitor, "uses_eps_m", False)
        m = self.monitor.measure(eps_m=eps_m) if uses else self.monitor.measure()
        self.decisions.append((m.decides_below(eps_m), self.exact.measure().norm <= eps_m))
        return m


def run(kind):
    torch.manual_seed(1)
    model = nn.Linear(20, 1)
    model.load_state_dict(init)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = ResizableLoader(data, batch_size=8, seed=0)
    monitor = make_monitor(kind, model)
    beside = Beside(monitor, ExactMonitor(model, data, loss_fn))
    scheduler = StageScheduler(optimizer, "adaptive_exponential", loader=loader, monitor=beside,
                               b0=8, eta0=0.05, eps0=0.3, delta=2, gamma=1.4, tau=TAU, b_max=1024)
    for _ in range(EPOCHS):
        for xb, yb in loader:
            optimizer.zero_grad()
            if kind in ("debiased", "screened"):
                debiased = monitor if kind == "debiased" else monitor.screen
                loss = debiased.backward(xb, yb)    # the one backward of the step, with the statistics
            else:
                loss = loss_fn(model(xb), yb)
                loss.backward()
            optimizer.step()
            scheduler.step(loss=loss)
    changes = [t["step"] for t in scheduler.transitions]
    return changes, scheduler.account.totals(), beside.decisions


if __name__ == "__main__":
    print(f"n = {N}, tau = {TAU}, b0 = 8, eps0 = 0.3, delta = 2, gamma = 1.4, {EPOCHS} epochs")
    print(f"{'monitor':<11} {'stage changes at steps':<34} {'train SFO':>9} {'measure SFO':>11} "
          f"{'agree':>7} {'early':>5} {'late':>4}")
    for kind in ("exact", "subsampled", "sequential", "zoned", "debiased", "screened"):
        changes, sfo, decisions = run(kind)
        agree = sum(a == b for a, b in decisions)
        early = sum(a and not b for a, b in decisions)          # advanced while the exact norm was above ε_m
        late = sum(b and not a for a, b in decisions)
        print(f"{kind:<11} {str(changes):<34} {sfo['train']:>9} {sfo['measure']:>11} "
              f"{agree:>3}/{len(decisions):<3} {early:>5} {late:>4}")
