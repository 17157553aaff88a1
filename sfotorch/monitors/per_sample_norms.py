r"""Per-sample squared gradient norms ‖∇_θ f_i‖² inside the one ordinary backward pass.

For a layer z = W a + β applied to sample i, the gradient of the batch loss L with respect to
W is Σ_i δ_i a_iᵀ with δ_i = ∂L/∂z_i, so sample i's own part is G_i = δ_i a_iᵀ and, with no
other sample in δ_i (no batch-coupled layer), G_i = c · ∇_W f_i where c = 1/b for a mean-reduced
loss and c = 1 for a summed one. Forward hooks keep each layer's input a; a hook on the layer's
output tensor receives δ during the backward that training runs anyway, and

.. math::

    s_i = \lVert\nabla_\theta f_i\rVert^2 = \frac{1}{c^2}\sum_{\text{layers}} \bigl(\lVert G_i\rVert^2 +
          \lVert \textstyle\sum_t \delta_{i,t}\rVert^2\bigr)

(the last term for the bias; t runs over the extra positions of the layer, if any: the T tokens
of a sequence, the pixels of a feature map). Then, with ḡ = (1/b) Σ_i ∇f_i the batch-mean
gradient (the norm of the fresh ``.grad``),

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
``nn.Linear``, input (b, …, d)  ‖Σ_t δ_{i,t} a_{i,t}ᵀ‖² = ‖δ_iᵀ a_i‖² or, from the two T × T Gram
                                matrices, Σ_{t,s}(a_{i,t}·a_{i,s})(δ_{i,t}·δ_{i,s}), the cheaper
                                (not Σ_t ‖δ_{i,t}‖²‖a_{i,t}‖²: the tokens' parts add before the norm)
``nn.Embedding``, ids (b, …)    ‖Σ_t e_{x_t} g_tᵀ‖² = Σ_{t,s} [x_{i,t} = x_{i,s}] (g_{i,t}·g_{i,s}),
                                or the V × d matrix Σ_t e_{x_t} g_tᵀ built by scatter-add, the
                                cheaper; ``padding_idx`` positions add nothing (as in torch)
``nn.Conv1d`` / ``nn.Conv2d``   U_i = unfold(pad(a_i)) (C_in k × L); ‖δ_i U_iᵀ‖² or the Gram form
                                ⟨U_iᵀU_i, δ_iᵀδ_i⟩, the cheaper, per group; any stride, padding
                                (also ``"same"`` and non-zero padding modes), dilation, groups
``nn.LayerNorm``, ``nn.GroupNorm`` weight: ‖Σ_t δ_{i,t} ⊙ â_{i,t}‖² with â the normalised input
                                (per-sample statistics); bias: ‖Σ_t δ_{i,t}‖²
``nn.BatchNorm*d`` in eval mode same, â from the running statistics
============================== =================================================================

**Shared parameters** — one ``Parameter`` owned by several modules (tied embeddings:
``head.weight = tok_emb.weight``) or a module called more than once in one forward. Its
per-sample gradient is the sum over its U uses, G_i = Σ_u G_i^{(u)}, and

.. math::

    \lVert G_i\rVert^2 = \sum_u \lVert G_i^{(u)}\rVert^2 + 2\sum_{u<v}\langle G_i^{(u)}, G_i^{(v)}\rangle
    \neq \sum_u \lVert G_i^{(u)}\rVert^2 .

For these parameters (and only these) the hooks materialise each use's per-sample gradient
G_i^{(u)} (b × the parameter's size: for a tied V × d embedding, b V d numbers), add them, and take
the norm when :attr:`PerSampleNorms.sq_norms` is read; every other parameter goes through the norm
formulas above.

**A use the hooks cannot see.** Hooks see a parameter only through the module that owns it. After
every recorded forward the autograd graph of the model's output is walked and its edges into each
parameter counted; more edges than hooked uses (a weight also used functionally, e.g. a head
written ``F.linear(h, self.tok_emb.weight)``) is refused, since that use's part would be missing
from G_i. (bf16 autocast caches one cast of a weight for all its uses, which can show *fewer*
edges than uses; fewer is never refused, so a functional use that shares that cached cast with a
hooked one goes unseen.)

**Refused** (:class:`~sfotheory.validation.ParameterError` naming the module): a trainable
parameter owned by any other module type (Conv3d, Bilinear, custom layers, …) — use
``variance_source="micro_batches"`` there; BatchNorm in train mode (or without running
statistics): it normalises each sample with the batch's statistics, so δ_i depends on every
sample and sample i's "gradient" is not ∇f_i — there is no per-sample decomposition to take
the norm of (micro-batches, which normalise each group by its own statistics as gradient
accumulation does, are the honest source there); an Embedding with ``scale_grad_by_freq`` (it
divides by the token counts of the whole batch, coupling the samples); a parameter used outside
its modules (above).

Every hooked module must take the batch as the first dimension of its input (a position
embedding is looked up with the positions broadcast to (b, T), not with a (T,) vector).

The hooks only read: the ``.grad`` left by the backward is the one a plain backward leaves, bit
for bit. Hooks exist only inside :meth:`PerSampleNorms.recording` (removed on exit, also on error);
hooks on the output tensors live in the autograd graph, which the backward frees.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import torch
from torch import nn
from torch.nn import functional as F

from sfotheory.validation import fail

__all__ = ["PerSampleNorms", "EXACT_MODULES", "graph_parameter_uses", "unsupported_modules"]

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: Module types whose per-sample gradient norms are computed exactly by :class:`PerSampleNorms`.
EXACT_MODULES = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.LayerNorm, nn.GroupNorm) + _BATCHNORMS


def unsupported_modules(model: nn.Module, params) -> list[str]:
    """Reasons, one per module, why the per-sample norms of ``params`` cannot be computed exactly.

    Empty when every trainable parameter belongs directly to a module of :data:`EXACT_MODULES`,
    no BatchNorm owning one is in train mode (or lacks running statistics) and no Embedding
    owning one scales its gradient by the batch's token frequencies.
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
        elif isinstance(mod, nn.Embedding) and mod.scale_grad_by_freq:
            reasons.append(f"{label}: scale_grad_by_freq divides by the whole batch's token counts, which "
                           "couples the samples")
    if len(owned) != len(ids):
        reasons.append("parameters that belong to no module of the model")
    return reasons


def graph_parameter_uses(outputs, params) -> Counter:
    """``{id(p): edges}``: how many edges of the autograd graph behind ``outputs`` (a tensor, or a
    tuple/list/dict of them) lead into each parameter of ``params`` (its AccumulateGrad node).

    One module call that uses a parameter makes one edge, so a parameter used twice (a tied
    weight) has two.

    >>> emb, head = nn.Embedding(5, 3), nn.Linear(3, 5, bias=False)
    >>> head.weight = emb.weight
    >>> out = head(emb(torch.tensor([[1, 2]])))
    >>> graph_parameter_uses(out, [emb.weight])[id(emb.weight)]
    2
    """
    ids = {id(p) for p in params}
    counts: Counter = Counter()
    stack = [t.grad_fn for t in _tensors(outputs) if t.grad_fn is not None]
    seen = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for nxt, _ in node.next_functions:
            if nxt is None:
                continue
            var = getattr(nxt, "variable", None)          # an AccumulateGrad node: a leaf
            if var is not None:
                if id(var) in ids:
                    counts[id(var)] += 1
            else:
                stack.append(nxt)
    return counts


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for x in obj:
            yield from _tensors(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors(x)


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
        owners = Counter(id(getattr(mod, key)) for mod, tw, tb in self.layers
                         for key, trainable in (("weight", tw), ("bias", tb)) if trainable)
        #: ids of the parameters owned by more than one module (tied weights): materialised
        self.tied = {pid for pid, count in owners.items() if count > 1}
        self._params = {id(p): p for p in params}
        self._batchnorms = [(name, mod) for name, mod in model.named_modules()
                            if isinstance(mod, _BATCHNORMS) and id(mod) in self._flags]
        self._handles = []
        self._reset()

    def _reset(self):
        self._seen = set()                   # modules called in this recording
        self._shared = set(self.tied)        # parameters with several uses: tied, or a module called again
        self._uses = Counter()               # hooked uses of each parameter in this recording
        self._pending = {}                   # id(p) → Σ_u G_i^(u), (b, *p.shape), of a shared parameter
        self._sq = None                      # (b,) tensor: Σ ‖G_i‖² over the parameters not pending

    @property
    def sq_norms(self):
        """The (b,) tensor of c² s_i over the recorded backward (None before one): the norm-formula
        parameters' part plus, for each shared parameter, ‖Σ_u G_i^{(u)}‖²."""
        if self._pending:
            for g in self._pending.values():
                sq = _sq(g, g.shape[0])
                self._sq = sq if self._sq is None else self._sq + sq
            self._pending = {}
        return self._sq

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
        self._reset()
        self._handles = [mod.register_forward_hook(self._forward_hook) for mod, _, _ in self.layers]
        self._handles.append(self.model.register_forward_hook(self._check_graph))   # after the layers' hooks
        try:
            yield self
        finally:
            for h in self._handles:
                h.remove()
            self._handles, self._seen = [], set()

    # -- hooks -------------------------------------------------------------------------------------

    def _owned(self, mod, tw, tb):
        return [p for p, trainable in ((getattr(mod, "weight", None), tw), (getattr(mod, "bias", None), tb))
                if trainable]

    def _forward_hook(self, mod, inputs, output):
        if not torch.is_grad_enabled() or not isinstance(output, torch.Tensor) or not output.requires_grad:
            return
        tw, tb = self._flags[id(mod)]
        owned = self._owned(mod, tw, tb)
        if id(mod) in self._seen:            # a second call: its parameters' uses add before the norm
            self._shared.update(id(p) for p in owned)
        self._seen.add(id(mod))
        self._uses.update(id(p) for p in owned)
        a = inputs[0].detach()
        output.register_hook(lambda delta, mod=mod, a=a, tw=tw, tb=tb: self._backward(mod, a, delta, tw, tb))

    def _check_graph(self, model, inputs, output):
        """Refuse a parameter the graph uses more often than the hooked modules do (module doc)."""
        if not torch.is_grad_enabled():
            return
        edges = graph_parameter_uses(output, self._params.values())
        for pid, count in edges.items():
            if count > self._uses[pid]:
                names = {id(p): n for n, p in self.model.named_parameters()}
                fail("model", self.where, "a model whose trainable parameters are used only through the modules "
                     "that own them", names.get(pid, "a parameter"),
                     reason=f"the autograd graph uses it {count} times, the hooked modules {self._uses[pid]} "
                            "times (e.g. a weight tied through F.linear): its per-sample gradient would miss a use")

    def _backward(self, mod, a, delta, tw, tb):
        # under autocast the layer's input and the gradient of its output can differ in dtype (a
        # float32 input, a bf16 δ): the norms are taken in float32 (or wider) whatever they are
        dtype = torch.promote_types(delta.dtype, torch.float32)
        if a.is_floating_point():
            dtype = torch.promote_types(dtype, a.dtype)
            a = a.to(dtype)
        delta = delta.detach().to(dtype)
        weight, bias = getattr(mod, "weight", None), getattr(mod, "bias", None)
        mw = tw and id(weight) in self._shared
        mb = tb and id(bias) in self._shared
        if mw or mb:                         # materialise the shared parameters' G_i^(u) and add them up
            gw, gb = _per_sample_grads(mod, a, delta, mw, mb)
            for p, g in ((weight, gw), (bias, gb)):
                if g is not None:
                    g = g.reshape(delta.shape[0], *p.shape)
                    old = self._pending.get(id(p))
                    self._pending[id(p)] = g if old is None else old + g
            tw, tb = tw and not mw, tb and not mb
        if not (tw or tb):
            return
        if isinstance(mod, nn.Linear):
            sq = _linear_sq(a, delta, tw, tb)
        elif isinstance(mod, nn.Embedding):
            sq = _embedding_sq(mod, a, delta)
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            sq = _conv_sq(mod, a, delta, tw, tb)
        else:
            gw, gb = _norm_grads(mod, a, delta, tw, tb)
            sq = sum(_sq(g, g.shape[0]) for g in (gw, gb) if g is not None)
        self._sq = sq if self._sq is None else self._sq + sq


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


def _embedding_inputs(mod, ids, delta):
    """ids (b, T) and g (b, T, d), with the positions of ``padding_idx`` zeroed (they get no gradient)."""
    b = ids.shape[0]
    ids = ids.reshape(b, -1)
    g = delta.reshape(b, ids.shape[1], -1)
    if mod.padding_idx is not None:
        g = g * (ids != mod.padding_idx).unsqueeze(-1).to(g.dtype)
    return ids, g


def _embedding_matrix(ids, g, num_embeddings):
    """Σ_t e_{x_t} g_tᵀ per sample: (b, V, d) by scatter-add."""
    out = g.new_zeros(g.shape[0], num_embeddings, g.shape[2])
    return out.scatter_add_(1, ids.unsqueeze(-1).expand(-1, -1, g.shape[2]), g)


def _embedding_sq(mod, ids, delta):
    ids, g = _embedding_inputs(mod, ids, delta)
    b, t, _ = g.shape
    if mod.num_embeddings <= t * t:          # V d per sample against T² d for the Gram form
        return _sq(_embedding_matrix(ids, g, mod.num_embeddings), b)
    same = (ids.unsqueeze(2) == ids.unsqueeze(1)).to(g.dtype)
    gram = torch.bmm(g, g.transpose(1, 2))
    return torch.linalg.vecdot(gram.reshape(b, -1), same.reshape(b, -1))


def _conv_columns(mod, a, delta):
    """(δ, U) per sample and group: δ (b·g, C_out/g, L), U (b·g, C_in k/g, L), as the convolution sees them."""
    b = a.shape[0]
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
    return delta.reshape(b * g, -1, length), cols.reshape(b * g, -1, length)


def _conv_sq(mod, a, delta, tw, tb):
    b = a.shape[0]
    out = 0.0
    if tb:
        out = _sq(delta.reshape(b, delta.shape[1], -1).sum(2), b)
    if not tw:
        return out
    d, u = _conv_columns(mod, a, delta)
    sq = _outer_sum_sq(d, u)
    return out + (sq if mod.groups == 1 else sq.reshape(b, mod.groups).sum(1))


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


def _norm_grads(mod, a, delta, tw, tb):
    """Per-sample gradients (b, C) of a normalisation layer's weight and bias (None where not wanted)."""
    b = a.shape[0]
    gw = gb = None
    if isinstance(mod, nn.LayerNorm):
        lead = a.dim() - len(mod.normalized_shape)
        red = tuple(range(1, lead))                        # extra positions between batch and features
        if tw:
            normed = F.layer_norm(a, mod.normalized_shape, None, None, mod.eps)
            gw = (delta * normed).sum(red) if red else delta * normed
        if tb:
            gb = delta.sum(red) if red else delta
        return gw, gb
    c = a.shape[1]
    if tw:
        if isinstance(mod, nn.GroupNorm):
            normed = F.group_norm(a, mod.num_groups, None, None, mod.eps)
        else:
            normed = F.batch_norm(a, mod.running_mean, mod.running_var, None, None, False, 0.0, mod.eps)
        gw = (delta * normed).reshape(b, c, -1).sum(2)
    if tb:
        gb = delta.reshape(b, c, -1).sum(2)
    return gw, gb


def _per_sample_grads(mod, a, delta, tw, tb):
    """One use's per-sample gradients G_i^(u) of the module's weight and bias, (b, …) tensors (None where
    not wanted): for the parameters whose uses must add before the norm."""
    b = a.shape[0]
    gw = gb = None
    if isinstance(mod, nn.Linear):
        d2, a2 = delta.reshape(b, -1, delta.shape[-1]), a.reshape(b, -1, a.shape[-1])
        if tw:
            gw = torch.bmm(d2.transpose(1, 2), a2)            # Σ_t δ_t a_tᵀ: (b, out, in)
        if tb:
            gb = d2.sum(1)
    elif isinstance(mod, nn.Embedding):
        ids, g = _embedding_inputs(mod, a, delta)
        gw = _embedding_matrix(ids, g, mod.num_embeddings)
    elif isinstance(mod, (nn.Conv1d, nn.Conv2d)):
        if tw:
            d, u = _conv_columns(mod, a, delta)
            gw = torch.bmm(d, u.transpose(1, 2)).reshape(b, -1)   # per group: (C_out/g) × (C_in k/g)
        if tb:
            gb = delta.reshape(b, delta.shape[1], -1).sum(2)
    else:
        gw, gb = _norm_grads(mod, a, delta, tw, tb)
    return gw, gb
