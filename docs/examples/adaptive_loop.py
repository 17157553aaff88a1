"""An ordinary torch training loop switched to the adaptive schedule (lines marked  # <- sfo)."""
import torch
from torch import nn

from sfotorch import ExactMonitor, ResizableLoader, StageScheduler      # <- sfo

torch.manual_seed(0)
X = torch.randn(4096, 20)
y = X @ torch.randn(20, 1) + 0.1 * torch.randn(4096, 1)
data = torch.utils.data.TensorDataset(X, y)
model, loss_fn = nn.Linear(20, 1), nn.MSELoss()

optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
loader = ResizableLoader(data, batch_size=8, seed=0)   # was: DataLoader(data, batch_size=8, shuffle=True)  # <- sfo
monitor = ExactMonitor(model, data, loss_fn)   # ‖∇f(θ)‖ over the whole training set, eval mode, float64  # <- sfo
scheduler = StageScheduler(optimizer, "adaptive_exponential", loader=loader, monitor=monitor,          # <- sfo
                           b0=8, eta0=0.05, eps0=0.5, delta=2, gamma=1.4, tau=50, b_max=1024)          # <- sfo

for epoch in range(4):
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        scheduler.step(loss=loss)                                                                       # <- sfo
        if scheduler.stage_changed:                                                                     # <- sfo
            print(f"step {scheduler.state.step}: stage {scheduler.stage}, b={scheduler.batch_size}, "
                  f"lr={scheduler.get_last_lr()[0]:.4g}, eps_m={scheduler.eps_m:.4g}")
    print(f"epoch {epoch}: loss {loss.item():.4f}, SFO train {scheduler.account.totals()['train']}, "
          f"measure {scheduler.account.totals()['measure']}")
