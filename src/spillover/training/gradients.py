"""Mean training gradient of a set of sequences at a model's current weights (issue 26's gradient-alignment
signal, in the spirit of LESS / Grad-TAG): the gradient of the token-mean target loss with respect to the
trainable parameters, flattened into one fp32 vector.

With a freshly initialised LoRA adapter (B = 0), only B receives a gradient: ∂L/∂B = Σ (∂L/∂h) (A x)ᵀ, the
full weight gradient ∂L/∂W = Σ (∂L/∂h) xᵀ projected by the random A. So the mean LoRA gradient is a random
projection of the full-weight gradient (r rows per layer instead of the layer's width), which is what the
cosine between two tasks' gradients needs; no separate projection is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from spillover.data.collate import Sequence_
from spillover.models.load import Precision
from spillover.training.sequence_nll import target_batches


def mean_gradient(
    model: nn.Module,
    sequences: Sequence[Sequence_],
    pad_id: int,
    precision: Precision | None = None,
    batch_size: int = 8,
) -> Tensor:
    """(P,) fp32 CPU vector: ∇ of the mean NLL over every target token of `sequences`, w.r.t. the
    parameters that require grad (in `named_parameters` order). Dropout off (eval mode) so the result is
    deterministic; the parameters' `.grad` is left as it was found (cleared before and after)."""
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters to take a gradient of")
    n_tokens = sum(len(s.input_ids) - max(s.n_prompt, 1) for s in sequences)
    if n_tokens <= 0:
        raise ValueError("the sequences have no target tokens")
    was_training = model.training
    model.eval()
    for p in params:
        p.grad = None
    try:
        for _, t in target_batches(model, sequences, pad_id, precision, batch_size):
            (t.nll.sum() / n_tokens).backward()
        return torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).float().flatten().cpu() for p in params]
        )
    finally:
        for p in params:
            p.grad = None
        model.train(was_training)


def cosine(a: Tensor, b: Tensor) -> float:
    """Cosine of two gradient vectors; 0 when either is zero."""
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else 0.0
