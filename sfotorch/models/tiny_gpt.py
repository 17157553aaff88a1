r"""A small decoder-only transformer (about 1 M parameters) for byte- or character-level text.

Shape, for vocabulary V, context T_max, width d, L blocks of h heads (pre-LayerNorm, as GPT-2)::

    x_t = E[s_t] + P[t]                                 token and position embeddings (nn.Embedding)
    L × { x = x + W_o · attn(LN(x))                     causal self-attention, h heads of d/h
          x = x + W_2 · GELU(W_1 · LN(x)) }             MLP of width 4d
    logits_t = E · LN(x_t)                              head tied to the token embedding E (V × d)

Attention is ``torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)``:
position t attends to positions ≤ t of its own sequence only, so no sample sees another and
per-sample gradients are well defined (:mod:`sfotorch.monitors.per_sample_norms` computes their
norms exactly, the tied E included).

Every parameter belongs to an ``nn.Embedding``, ``nn.Linear`` or ``nn.LayerNorm``: the head is an
``nn.Linear`` (no bias) whose ``weight`` *is* ``E`` (one ``Parameter`` shared by two modules, counted
once), and the position embedding is looked up with the positions broadcast to (B, T), so every
layer's input has the batch as its first dimension.

Parameter count (every weight and bias; the tied E counted once):

.. math::

    N = V d + T_{\max} d + L\,(12 d^2 + 13 d) + 2 d,

per block 4d² + 4d (attention: qkv and output projections), 8d² + 5d (MLP), 4d (two LayerNorms);
the last 2d is the final LayerNorm. Defaults V = 256, T_max = 128, d = 128, L = 5, h = 4:
N = 32 768 + 16 384 + 5 · 198 272 + 256 = 1 040 768.

Initialisation as GPT-2: weights 𝒩(0, 0.02²), the two residual projections of every block
𝒩(0, 0.02²/(2L)), biases 0, LayerNorm (1, 0).

>>> model = TinyGPT()
>>> sum(p.numel() for p in model.parameters())
1040768
>>> model(torch.zeros(2, 16, dtype=torch.long)).shape
torch.Size([2, 16, 256])
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from sfotheory.validation import check_integer, fail

__all__ = ["CausalSelfAttention", "TinyGPT", "TransformerBlock", "tiny_gpt"]


class CausalSelfAttention(nn.Module):
    """h-head causal self-attention: q, k, v = split(W_qkv x), out = W_o · concat_heads(SDPA(q, k, v))."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(LN(x)), then x + MLP(LN(x)) with a GELU MLP of width ``mlp_ratio``·d."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, mlp_ratio * d_model)
        self.out = nn.Linear(mlp_ratio * d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))


class TinyGPT(nn.Module):
    """A decoder-only transformer over token ids (B, T) → next-token logits (B, T, V); see the module doc.

    Parameters
    ----------
    vocab_size : V (256 for bytes).
    context : T_max, the longest input sequence (the rows of the position embedding).
    d_model : d, the width (a multiple of ``n_heads``).
    n_layers : L, transformer blocks.
    n_heads : h, attention heads per block.
    mlp_ratio : MLP width / d.
    dropout : dropout on the residual branches and the attention weights (0: none, the default).
    tie_weights : the head's weight is the token embedding E (one shared Parameter).
    """

    def __init__(self, vocab_size: int = 256, context: int = 128, d_model: int = 128, n_layers: int = 5,
                 n_heads: int = 4, mlp_ratio: int = 4, dropout: float = 0.0, tie_weights: bool = True):
        super().__init__()
        where = "TinyGPT"
        self.vocab_size = check_integer(vocab_size, "vocab_size", where, minimum=2)
        self.context = check_integer(context, "context", where, minimum=1)
        d_model = check_integer(d_model, "d_model", where, minimum=1)
        n_layers = check_integer(n_layers, "n_layers", where, minimum=1)
        n_heads = check_integer(n_heads, "n_heads", where, minimum=1)
        mlp_ratio = check_integer(mlp_ratio, "mlp_ratio", where, minimum=1)
        if d_model % n_heads:
            fail("d_model", where, f"a multiple of n_heads = {n_heads} (each head has d_model / n_heads dims)",
                 d_model)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            fail("dropout", where, ">= 0 and < 1", dropout)
        if not isinstance(tie_weights, bool):
            fail("tie_weights", where, "a bool", tie_weights)
        self.d_model, self.n_layers, self.n_heads = d_model, n_layers, n_heads
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(context, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, n_heads, mlp_ratio, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.tie_weights = tie_weights
        if tie_weights:
            self.head.weight = self.tok_emb.weight
        self._init_weights()

    def _init_weights(self) -> None:
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                nn.init.normal_(mod.weight, mean=0.0, std=0.02)
                if isinstance(mod, nn.Linear) and mod.bias is not None:
                    nn.init.zeros_(mod.bias)
        for block in self.blocks:          # the residual projections: std 0.02 / sqrt(2L)
            for lin in (block.attn.proj, block.out):
                nn.init.normal_(lin.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.n_layers))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.dim() != 2 or idx.shape[1] > self.context:
            fail("idx", "TinyGPT.forward", f"a (B, T) tensor of token ids with T <= context = {self.context}",
                 f"shape {tuple(idx.shape)}")
        b, t = idx.shape
        pos = torch.arange(t, device=idx.device).expand(b, t)      # (B, T): the batch stays the first dim
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def tiny_gpt(num_classes: int = 256, in_channels: int = 1, context: int = 128, d_model: int = 128,
             n_layers: int = 5, n_heads: int = 4, mlp_ratio: int = 4, dropout: float = 0.0,
             tie_weights: bool = True) -> TinyGPT:
    """The :class:`TinyGPT` for :func:`~sfotorch.models.build_model`: ``num_classes`` is the vocabulary
    V (the classes of next-token prediction) and ``in_channels`` must be 1 (one token id per position).
    1 040 768 parameters with the defaults."""
    check_integer(in_channels, "in_channels", "tiny_gpt", minimum=1)
    if in_channels != 1:
        fail("in_channels", "tiny_gpt", "1 (a text model reads one token id per position)", in_channels)
    return TinyGPT(vocab_size=num_classes, context=context, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                   mlp_ratio=mlp_ratio, dropout=dropout, tie_weights=tie_weights)
