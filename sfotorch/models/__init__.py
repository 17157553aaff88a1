"""Models for the paper's experiments and their CPU-sized counterparts, by name.

=============  =====================================================  ==================
name           model                                                  parameters (C=10)
=============  =====================================================  ==================
``resnet18``   CIFAR ResNet-18 (:mod:`.resnet`)                       11 173 962
``densenet``   the paper's DenseNet, k = 12, no compression           1 724 266
               (:mod:`.densenet`)
``small_cnn``  ~94 k-parameter CNN for 28×28 / 32×32 (:mod:`.small_cnn`)  94 538 (3 ch.)
``tiny_gpt``   decoder-only transformer for byte/char text, tied      1 040 768 (V=256)
               embeddings (:mod:`.tiny_gpt`); C is the vocabulary V
=============  =====================================================  ==================

>>> model = build_model("small_cnn", num_classes=10, in_channels=1, batch_norm=True)
>>> type(model).__name__, model.in_channels
('SmallCNN', 1)
>>> build_model("vgg16", num_classes=10)
Traceback (most recent call last):
...
sfotheory.validation.ParameterError: The 'name' parameter of build_model must be one of 'densenet', 'resnet18', 'small_cnn', 'tiny_gpt'. Got name='vgg16' instead.
"""

from __future__ import annotations

import inspect

from torch import nn

from sfotheory.validation import check_choice, check_integer, fail

from .densenet import Bottleneck, DenseNet, Transition, densenet_cifar
from .resnet import BasicBlock, ResNet, resnet18
from .small_cnn import SmallCNN, small_cnn
from .tiny_gpt import CausalSelfAttention, TinyGPT, TransformerBlock, tiny_gpt

__all__ = [
    "MODELS",
    "BasicBlock",
    "Bottleneck",
    "CausalSelfAttention",
    "DenseNet",
    "ResNet",
    "SmallCNN",
    "TEXT_MODELS",
    "TinyGPT",
    "Transition",
    "TransformerBlock",
    "build_model",
    "count_parameters",
    "densenet_cifar",
    "resnet18",
    "small_cnn",
    "tiny_gpt",
]

#: name → constructor taking ``num_classes``, ``in_channels`` and model-specific keywords.
MODELS = {
    "densenet": densenet_cifar,
    "resnet18": resnet18,
    "small_cnn": small_cnn,
    "tiny_gpt": tiny_gpt,
}
#: the models of :data:`MODELS` that read token ids (B, T) rather than images (B, C, H, W)
TEXT_MODELS = ("tiny_gpt",)


def build_model(name: str, num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build the model registered as ``name`` (one of :data:`MODELS`) for C classes and c channels.

    Extra keywords go to the constructor (``batch_norm`` for ``small_cnn``); an unknown keyword
    is refused with the list of the ones that constructor accepts.
    """
    where = "build_model"
    check_choice(name, tuple(sorted(MODELS)), "name", where)
    check_integer(num_classes, "num_classes", where, minimum=1)
    check_integer(in_channels, "in_channels", where, minimum=1)
    factory = MODELS[name]
    accepted = [p for p in inspect.signature(factory).parameters if p not in ("num_classes", "in_channels")]
    for key in kwargs:
        if key not in accepted:
            fail(key, where, f"one of the keywords model {name!r} accepts ({', '.join(accepted) or 'none'})",
                 kwargs[key])
    return factory(num_classes=num_classes, in_channels=in_channels, **kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``: Σ numel over ``model.parameters()``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
