r"""The loss of a language-model workload, where a sample is a sequence.

For logits z_i ∈ ℝ^{T×V} of sequence i and its targets y_i ∈ {0, …, V−1}^T, the per-sample loss
is the mean token cross-entropy

.. math::

    f_i = \frac{1}{T}\sum_{t=1}^{T} \Bigl(\log\sum_{v} e^{z_{i,t,v}} - z_{i,t,y_{i,t}}\Bigr),

and a batch B reduces it as the monitors' loss convention asks (:mod:`sfotorch.monitors.base`):
``reduction="mean"`` → (1/|B|) Σ_{i∈B} f_i (which, every sequence having T tokens, is also the
mean over all |B|·T tokens), ``reduction="sum"`` → Σ_{i∈B} f_i. Note that ``nn.CrossEntropyLoss``
with ``reduction="sum"`` on the same tokens gives T Σ_i f_i, not Σ_i f_i: a sum over tokens, not
over samples — which is why this loss exists.

>>> loss = SequenceCrossEntropy()
>>> z, y = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)
>>> round(float(loss(z, y)), 6), round(float(SequenceCrossEntropy("sum")(z, y)), 6)    # log 4, 2 log 4
(1.386294, 2.772589)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sfotheory.validation import check_choice, fail

__all__ = ["SequenceCrossEntropy"]


class SequenceCrossEntropy(nn.Module):
    """f_i = mean token cross-entropy of sequence i; logits (B, T, V), targets (B, T) → mean or sum of f_i."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = check_choice(reduction, ("mean", "sum"), "reduction", "SequenceCrossEntropy")

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 3 or targets.shape != logits.shape[:2]:
            fail("logits", "SequenceCrossEntropy", "a (B, T, V) tensor with targets of shape (B, T)",
                 f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)}")
        tokens = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="mean")
        # mean over the B·T tokens = (1/B) Σ_i f_i; the sum over samples is B times that
        return tokens if self.reduction == "mean" else tokens * logits.shape[0]
