r"""Per-sample squared gradient norms ‖∇_θ f_i‖² inside the one ordinary backward pass.

For a layer z = W a + β applied to sample i, the gradient of the batch loss L with respect to
W is Σ_i δ_i a_iᵀ with δ_i = ∂L/∂z_i, so sample i's own part is G_i = δ_i a_iᵀ and, with no
other sample in δ_i (no batch-coupled layer), G_i = c · ∇_W f_i where c = 1/b for a mean-reduced
loss and c = 1 for a summed one. Forward hooks keep each layer's input a; a hook on the layer's
output tensor receives δ during the backward that training runs anyway, and

.. math::

    s_i = \lVert\nabla_\theta f_i\rVert^2 = \frac{1}{c^2}\sum_{\text{layers}} \bigl(\lVert G_i\rVert^2 +
          \lVert \textstyle\sum_t \delta_{i,t}\rVert^2\bigr)

(the last term for the bias; t runs over the extra positions of the layer, if any). Then, with
ḡ = (1/b) Σ_i ∇f_i the batch-mean gradient (the norm of the fresh ``.grad``),

.. math::

    \widehat{\operatorname{tr}\Sigma} = \frac{1}{b-1}\sum_i \lVert\nabla f_i - \bar g\rVert^2
        = \frac{b}{b-1}\Bigl(\frac{1}{b}\sum_i s_i - \lVert\bar g\rVert^2\Bigr)

— the sample-covariance trace of :mod:`sfotorch.monitors.moments` with k = b, at no extra
backward. (Goodfellow 2015, "Efficient per-example gradient computations"; BackPACK's
``BatchL2Grad`` computes the same quantity. This is an independent implementation.)

**Exact layers** (per-sample norms equal brute-force per-sample gradients up to float rounding;
tested against :mod:`torch.func`):

============================== =================================================================
module                         ‖G_i‖²
============================== =================================================================
``nn.Linear``, input (b, d)     ‖a_i‖² ‖δ_i‖²  (bias: ‖δ_i‖²)
``nn.Linear``, input (b, …, d)  ‖δ_iᵀ a_i‖² or Σ_{t,s}(a_i a_iᵀ)_{ts}(δ_i δ_iᵀ)_{ts}, the cheaper
``nn.Conv1d`` / ``nn.Conv2d``   U_i = unfold(pad(a_i)) (C_in k × L); ‖δ_i U_iᵀ‖² or the Gram form
                                ⟨U_iᵀU_i, δ_iᵀδ_i⟩, the cheaper, per group; any stride, padding
                                (also ``"same"`` and non-zero padding modes), dilation, groups
``nn.LayerNorm``, ``nn.GroupNorm`` weight: ‖Σ_t δ_{i,t} ⊙ â_{i,t}‖² with â the normalised input
                                (per-sample statistics); bias: ‖Σ_t δ_{i,t}‖²
``nn.BatchNorm*d`` in eval mode same, â from the running statistics
============================== =================================================================

**Refused** (:class:`~sfotheory.validation.ParameterError` naming the module): a trainable
parameter owned by any other module type (Embedding, Conv3d, custom layers, …) — use
``variance_source="micro_batches"`` there; BatchNorm in train mode (or without running
statistics): it normalises each sample with the batch's statistics, so δ_i depends on every
sample and sample i's "gradient" is not ∇f_i — there is no per-sample decomposition to take
the norm of (micro-batches, which normalise each group by its own statistics as gradient
accumulation does, are the honest source there); a module called more than once in one forward
(weight sharing: the per-sample gradient is a sum over calls, whose norm is not the sum of
norms).

The hooks only read: the ``.grad`` left by the backward is the one a plain backward leaves, bit
for bit. Hooks exist only inside :meth:`PerSampleNorms.recording` (removed on exit, also on error);
hooks on the output tensors live in the autograd graph, which the backward frees.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional as F

from sfotheory.validation import fail

__all__ = ["PerSampleNorms", "EXACT_MODULES", "unsupported_modules"]

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: Module types whose per-sample gradient norms are computed exactly by :class:`PerSampleNorms`.
EXACT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.LayerNorm, nn.GroupNorm) + _BATCHNORMS


def unsupported_modules(model: nn.Module, params) -> list[str]:
    """Reasons, one per module, why the per-sample norms of ``params`` cannot be computed exactly.

    Empty when every trainable parameter belongs directly to a module of :data:`EXACT_MODULES`,
    no BatchNorm owning one is in train mode (or lacks running statistics).
    """
    ids = {id(p) for p in params}
    owned = set()
    reasons = []
    for name, mod in model.named_modules():
        mine = [p for p in mod.parameters(recurse=False) if id(p) in ids]
        if not mine:
            continue
        owned.update(id(p) for p in mine)
        label = f"{name or '(root)'} ({type(mod).__name__})"
        if type(mod) not in EXACT_MODULES:
            reasons.append(f"{label}: no per-sample norm formula")
        elif isinstance(mod, _BATCHNORMS) and (mod.training or mod.running_mean is None):
            reasons.append(f"{label}: BatchNorm normalising with batch statistics couples the samples")
    if len(owned) != len(ids):
        reasons.append("parameters that belong to no module of the model")
    return reasons


class PerSampleNorms:
    """The layers that own ``params``; inside :meth:`recording`, forward hooks are registered on
    them and each backward adds c² s_i (see the module doc) to the (b,) tensor :attr:`sq_norms`.
    Outside :meth:`recording` the model carries no hook of ours.

    >>> lin = nn.Linear(3, 2)
    >>> x = torch.randn(4, 3)
    >>> psn = PerSampleNorms(lin, list(lin.parameters()), where="example")
    >>> with psn.recording():
    ...     lin(x).pow(2).sum().backward()
    >>> brute = torch.stack([sum(g.pow(2).sum() for g in torch.autograd.grad(lin(x[i:i+1]).pow(2).sum(),
    ...                     list(lin.parameters()))) for i in range(4)])
    >>> torch.allclose(psn.sq_norms, brute.detach(), rtol=1e-5)
    True
    """

    def __init__(self, model: nn.Module, params, *, where: str):
        self.where = where
        self._refuse(unsupported_modules(model, params))
        ids = {id(p) for p in params}
        self.model = model
        self.layers = []                     # (module, weight trainable?, bias trainable?)
        for mod in model.modules():
            if type(mod) in EXACT_MODULES:
                w = getattr(mod, "weight", None)
                bias = getattr(mod, "bias", None)
                tw, tb = w is not None and id(w) in ids, bias is not None and id(bias) in ids
                if tw or tb:
                    self.layers.append((mod, tw, tb))
        self._flags = {id(mod): (tw, tb) for mod, tw, tb in self.layers}
        self._batchnorms = [(name, mod) for name, mod in model.named_modules()
                            if isinstance(mod, _BATCHNORMS) and id(mod) in self._flags]
        self._handles = []
        self._seen = set()
        self.sq_norms = None                 # (b,) tensor: Σ_layers ‖G_i‖² (c² s_i)

    def _refuse(self, reasons):
        if reasons:
            fail("variance_source", self.where, "'micro_batches' for this model", "per_sample_norms",
                 reason="per-sample norms are exact only for " + ", ".join(t.__name__ for t in EXACT_MODULES)
                        + " (BatchNorm in eval mode); here: " + "; ".join(reasons))

    @contextlib.contextmanager
    def recording(self):
        """Hooks registered for one forward + backward, removed on exit (also on error)."""
        self._refuse([f"{name} ({type(mod).__name__}): BatchNorm in train mode couples the samples"
                      for name, mod in self._batchnorms if mod.training])
        self._seen, self.sq_norms = set(), None
        self._handles = [mod.register_forward_hook(self._forward_hook) for mod, _, _ in self.layers]
        try:
            yield self
        finally:
            for h in self._handles:
                h.remove()
            self._handles, self._seen = [], set()

    # -- hooks -------------------------------------------------------------------------------------

    def _forward_hook(self, mod, inputs, output):
        if not torch.is_grad_enabled() or not output.requires_grad:
            return
        if id(mod) in self._seen:
            fail("model", self.where, "a model whose layers are each called once per forward",
                 type(mod).__name__, reason="a shared layer's per-sample gradient is a sum over its calls")
        self._seen.add(id(mod))
        a = inputs[0].detach()
        tw, tb = self._flags[id(mod)]
        output.register_hook(lambda delta, mod=mod, a=a, tw=tw, tb=tb: self._backward(mod, a, delta, tw, tb))

    def _backward(self, mod, a, delta, tw, tb):
        # under autocast the layer's input and the gradient of its output can differ in dtype (a
        # float32 input, a bf16 δ): the norms are taken in float32 (or wider) whatever they are
        dtype = torch.promote_types(torch.promote_types(a.dtype, delta.dtype), torch.float32)
        a, delta = a.to(dtype), delta.detach().to(dtype)
        if isinstance(mod, nn.Linear):
            sq = _linear_sq(a, delta, tw, tb)
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            sq = _conv_sq(mod, a, delta, tw, tb)
        else:
            sq = _norm_sq(mod, a, delta, tw, tb)
        self.sq_norms = sq if self.sq_norms is None else self.sq_norms + sq


# -- per-layer formulas (each returns the (b,) tensor of ‖G_i‖² over the layer's trainable params) ------

def _sq(x, b):
    """Per-sample ‖x_i‖² of a tensor with leading dimension b."""
    x = x.reshape(b, -1)
    return torch.linalg.vecdot(x, x)


def _linear_sq(a, delta, tw, tb):
    b = a.shape[0]
    if a.dim() == 2:
        d2 = _sq(delta, b)
        if tw and tb:
            return d2 * (_sq(a, b) + 1.0)
        return d2 * _sq(a, b) if tw else d2
    out = 0.0
    if tw:   # channels first: (b, in, T) and (b, out, T)
        out = _outer_sum_sq(delta.reshape(b, -1, delta.shape[-1]).transpose(1, 2),
                            a.reshape(b, -1, a.shape[-1]).transpose(1, 2))
    if tb:
        out = out + _sq(delta.reshape(b, -1, delta.shape[-1]).sum(1), b)
    return out


def _outer_sum_sq(delta, u):
    """‖Σ_t δ_t u_tᵀ‖² = ‖δ uᵀ‖² per sample for δ (n, p, T), u (n, q, T): the (p × q) product
    materialised, or ⟨uᵀu, δᵀδ⟩ from the two (T × T) Gram matrices, whichever has fewer flops."""
    n, p, t = delta.shape
    q = u.shape[1]
    if p * q <= t * (p + q):
        return _sq(torch.bmm(delta, u.transpose(1, 2)), n)
    gu = torch.bmm(u.transpose(1, 2), u)
    gd = torch.bmm(delta.transpose(1, 2), delta)
    return torch.linalg.vecdot(gu.reshape(n, -1), gd.reshape(n, -1))


def _conv_sq(mod, a, delta, tw, tb):
    b = a.shape[0]
    out = 0.0
    if tb:
        out = _sq(delta.reshape(b, delta.shape[1], -1).sum(2), b)
    if not tw:
        return out
    two_d = isinstance(mod, nn.Conv2d)
    if not two_d:                                         # Conv1d as a Conv2d of height 1
        a, delta = a.unsqueeze(2), delta.unsqueeze(2)
    kernel = mod.kernel_size if two_d else (1, mod.kernel_size[0])
    stride = mod.stride if two_d else (1, mod.stride[0])
    dilation = mod.dilation if two_d else (1, mod.dilation[0])
    if mod.padding_mode == "zeros" and not isinstance(mod.padding, str):
        padding = mod.padding if two_d else (0, mod.padding[0])
        cols = F.unfold(a, kernel, dilation=dilation, padding=padding, stride=stride)     # (b, C_in·k, L)
    else:
        cols = F.unfold(_pad(mod, a, two_d), kernel, dilation=dilation, stride=stride)
    g = mod.groups
    length = cols.shape[2]
    sq = _outer_sum_sq(delta.reshape(b * g, -1, length), cols.reshape(b * g, -1, length))
    return out + (sq if g == 1 else sq.reshape(b, g).sum(1))


def _pad(mod, a, two_d):
    """The input as the convolution sees it after padding (a non-zero padding mode, or a string)."""
    if isinstance(mod.padding, str):
        if mod.padding == "valid":
            return a
        pads = []                                         # 'same', stride 1: total d·(k − 1), extra on the right
        for k, d in zip(reversed(mod.kernel_size), reversed(mod.dilation)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
    else:
        pads = [p for p in reversed(mod.padding) for _ in range(2)]
    if not two_d:
        pads = pads + [0, 0]
    if not any(pads):
        return a
    if mod.padding_mode == "zeros":
        return F.pad(a, pads)
    return F.pad(a, pads, mode=mod.padding_mode)


def _norm_sq(mod, a, delta, tw, tb):
    b = a.shape[0]
    out = 0.0
    if isinstance(mod, nn.LayerNorm):
        lead = a.dim() - len(mod.normalized_shape)
        red = tuple(range(1, lead))                        # extra positions between batch and features
        if tw:
            normed = F.layer_norm(a, mod.normalized_shape, None, None, mod.eps)
            gw = (delta * normed).sum(red) if red else delta * normed
            out = _sq(gw, b)
        if tb:
            gb = delta.sum(red) if red else delta
            out = out + _sq(gb, b)
        return out
    c = a.shape[1]
    if tw:
        if isinstance(mod, nn.GroupNorm):
            normed = F.group_norm(a, mod.num_groups, None, None, mod.eps)
        else:
            normed = F.batch_norm(a, mod.running_mean, mod.running_var, None, None, False, 0.0, mod.eps)
        out = _sq((delta * normed).reshape(b, c, -1).sum(2), b)
    if tb:
        out = out + _sq(delta.reshape(b, c, -1).sum(2), b)
    return out
