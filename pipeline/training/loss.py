"""The contrastive loss of encoder training."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, groups: torch.Tensor, good: torch.Tensor,
                     temperature: float, negatives: torch.Tensor | None = None) -> torch.Tensor:
    r"""Supervised contrastive loss (SupCon, ``L_out``; Khosla et al., 2020) over ``2B`` views.

    .. math::
        \mathcal{L} = \frac{1}{2B} \sum_i \frac{-1}{|P(i)|} \sum_{p \in P(i)}
        \log \frac{\exp(z_i \cdot z_p / \tau)}{\sum_{a \ne i} \exp(z_i \cdot z_a / \tau)}

    over unit vectors :math:`z`, where the positives :math:`P(i)` of a view are the other view of
    the same model and both views of every other *good* model of its group (task); every other
    view, and every row of ``negatives``, is a candidate :math:`a` only. Each positive is pulled in
    on its own: with one ``-log`` of the summed positive mass instead, the other view of the same
    model (nearly identical for an invariant encoder) would satisfy the loss alone.

    Args:
        z1, z2: ``[B, dim]`` embeddings of the two views of the batch's models.
        groups: ``[B]`` integer task ids.
        good: ``[B]`` bool, the models that are positives of their task's other models.
        temperature: :math:`\tau`.
        negatives: ``[M, dim]`` extra candidates that are never positive (adversarial and broken
            copies), or ``None``.

    Returns:
        A scalar.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n = len(z1)
    sim = z @ z.T / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    same_model = torch.roll(eye, n, dims=1)
    g, ok = groups.repeat(2), good.repeat(2)
    positive = same_model | ((g[:, None] == g[None, :]) & ok[:, None] & ok[None, :] & ~eye)
    sim = sim.masked_fill(eye, float("-inf"))
    candidates = sim
    if negatives is not None and len(negatives):
        candidates = torch.cat([sim, z @ F.normalize(negatives, dim=-1).T / temperature], 1)
    log_prob = sim - torch.logsumexp(candidates, 1, keepdim=True)
    return -(log_prob.masked_fill(~positive, 0.0).sum(1) / positive.sum(1)).mean()
