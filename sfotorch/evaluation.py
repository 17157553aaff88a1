r"""The test evaluation of ``sfo train``: mean cross-entropy and accuracy of a model on a dataset.

In eval mode (BatchNorm's running statistics, no dropout), on the data as given (``sfo train``
passes the test split, which is never augmented), in fixed batches; it draws no random number
and restores every module's train/eval flag, so evaluating changes nothing in the run that follows.
"""

from __future__ import annotations

import torch

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(model, data, *, batch_size: int, device, transform=None) -> dict:
    """Mean cross-entropy and accuracy of ``model`` on ``data`` (an ImageDataset), in eval mode.

    The model's train/eval flags are restored; nothing else is touched (no RNG is drawn).
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    loss_sum, correct, n = 0.0, 0, len(data)
    try:
        for start in range(0, n, batch_size):
            x, y = data.get_batch(slice(start, min(start + batch_size, n)))
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if transform is not None:
                x = transform(x)
            logits = model(x).float()
            loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    finally:
        for m, was in modes:
            m.training = was
    return {"test_loss": loss_sum / n, "test_acc": correct / n}
