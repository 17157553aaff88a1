"""An ordinary LightningModule switched to the adaptive schedule (lines marked  # <- sfo).

The module keeps its training_step and configure_optimizers; train_dataloader returns a
ResizableLoader, and the Trainer gets the SFOSchedule callback, which sets b and eta stage by stage
(Algorithm 2), logs them and keeps them in checkpoints. Needs `pip install 'sfo-schedulers[lightning]'`.
"""
import lightning as L
import torch
from torch import nn

from sfotorch import ExactMonitor, ResizableLoader                                                   # <- sfo
from sfotorch.lightning import SFOSchedule                                                           # <- sfo

torch.manual_seed(0)
X = torch.randn(4096, 20)
y = X @ torch.randn(20, 1) + 0.1 * torch.randn(4096, 1)
data = torch.utils.data.TensorDataset(X, y)


class Regression(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net, self.loss_fn = nn.Linear(20, 1), nn.MSELoss()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        xb, yb = batch
        loss = self.loss_fn(self(xb), yb)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self):
        return ResizableLoader(data, batch_size=8, seed=0)  # was: DataLoader(data, 8, shuffle=True)  # <- sfo


def gradient_norm(module):     # ‖∇f(θ)‖ over the training set, eval mode, float64, built at fit start  # <- sfo
    return ExactMonitor(module, data, module.loss_fn)                                                  # <- sfo


schedule = SFOSchedule("adaptive_exponential", monitor=gradient_norm,                                  # <- sfo
                       b0=8, eta0=0.05, eps0=0.5, delta=2, gamma=1.4, tau=50, b_max=1024)             # <- sfo
trainer = L.Trainer(max_epochs=4, callbacks=[schedule], log_every_n_steps=50,                          # <- sfo
                    enable_progress_bar=False, enable_model_summary=False)
trainer.fit(Regression())

for t in schedule.transitions:
    print(f"step {t['step']}: stage {t['stage']}, b={t['b']}, lr={t['eta']:.4g}, eps_m={t['eps_m']:.4g}")
totals = schedule.scheduler.account.totals()
print(f"epochs {trainer.current_epoch}: loss {trainer.callback_metrics['train_loss'].item():.4f}, "
      f"SFO train {totals['train']}, measure {totals['measure']}")
