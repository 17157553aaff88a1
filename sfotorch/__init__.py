"""sfotorch: the adaptive batch-size and learning-rate scheduler for PyTorch training.

Built on :mod:`sfotheory`'s one stage rule (:mod:`sfotheory.rule`). The pieces, one module each:

========================  =====================================================================
:class:`StageScheduler`   the torch.optim-style shell around the rule (``step()`` after
                          ``optimizer.step()``, ``get_last_lr()``, ``state_dict()``)
:class:`PolicyScheduler`  the same contract for any policy of :mod:`sfotheory.policies`, with the
                          batch statistics they read measured in the training backward
:class:`ResizableLoader`  batches whose size changes at the very next batch, also with workers
``monitors``              ‖∇f(θ)‖: exact, subsampled, sequential, debiased, screened
:class:`TrainingLoop`     batch → micro-batches → non-finite policy → update → rule → checkpoint
``distributed``           DDP with exact global sums (:mod:`sfotorch.distributed`)
``checkpoint``            atomic, verified checkpoints (:mod:`sfotorch.checkpoint`)
``models``, ``datasets``  CIFAR ResNet-18, DenseNet, a small CNN, a ~1 M-parameter transformer
                          (``tiny_gpt``); CIFAR, Fashion-MNIST and Debian fortunes (text) readers
``losses``                the sequence loss of the language model (a sample is a sequence)
``train``, ``plots``      ``sfo train`` (the driver of seeds, over ``device``, ``components``,
                          ``runlog``, ``progress``, ``evaluation``, ``summary``) and ``sfo plot``
========================  =====================================================================

Importing ``sfotorch`` itself does not import torch (so ``sfo --help`` and ``sfo theory`` stay
fast); the names below are loaded on first use.
"""

import importlib

_EXPORTS = {
    "DebiasedMonitor": "monitors",
    "ExactMonitor": "monitors",
    "Measurement": "monitors",
    "PolicyScheduler": "policy_scheduler",
    "ResizableLoader": "sampler",
    "ScreenedMonitor": "monitors",
    "SequentialMonitor": "monitors",
    "StageScheduler": "scheduler",
    "SubsampledMonitor": "monitors",
    "TrainingLoop": "loop",
    "make_schedule": "scheduler",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'sfotorch' has no attribute {name!r}")
