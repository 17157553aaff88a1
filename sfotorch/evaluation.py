r"""The test evaluation of ``sfo train``: mean cross-entropy and accuracy of a model on a dataset.

For a classifier (logits (B, C)) the loss is the mean cross-entropy per sample and the accuracy
the share of samples whose arg-max is the label. For a language model (logits (B, T, V), targets
(B, T), a sample is a sequence) the loss is the mean over sequences of the mean token
cross-entropy — the f_i of :class:`sfotorch.losses.SequenceCrossEntropy`, in nats per token —
the accuracy is the share of tokens whose arg-max is the next token, and ``test_ppl`` = exp(loss)
is the per-token perplexity.

In eval mode (BatchNorm's running statistics, no dropout), on the data as given (``sfo train``
passes the test split, which is never augmented), in fixed batches; it draws no random number
and restores every module's train/eval flag, so evaluating changes nothing in the run that follows.
"""

from __future__ import annotations

import math

import torch

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(model, data, *, batch_size: int, device, transform=None) -> dict:
    """Mean cross-entropy and accuracy of ``model`` on ``data`` (an ImageDataset or a TextDataset), in
    eval mode; for sequences also ``test_ppl`` (see the module doc).

    The model's train/eval flags are restored; nothing else is touched (no RNG is drawn).
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    loss_sum, correct, predicted, n, sequences = 0.0, 0, 0, len(data), False
    try:
        for start in range(0, n, batch_size):
            x, y = data.get_batch(slice(start, min(start + batch_size, n)))
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if transform is not None:
                x = transform(x)
            logits = model(x).float()
            if logits.dim() == 3:          # (B, T, V): per sequence, the mean over its T tokens
                sequences = True
                loss_sum += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(),
                                                                    reduction="sum")) / y.shape[1]
                correct += int((logits.argmax(2) == y).sum())
                predicted += y.numel()
            else:
                loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                predicted += y.shape[0]
    finally:
        for m, was in modes:
            m.training = was
    out = {"test_loss": loss_sum / n, "test_acc": correct / predicted}
    if sequences:
        out["test_ppl"] = math.exp(out["test_loss"])
    return out
