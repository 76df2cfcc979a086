"""FedProx: a proximal term (mu / 2) * ||w - w_global||^2 added to a site's local objective.

Hand-written because Flower's FedProx strategy only sends `proximal_mu` to the clients; the
term itself is the client's business. It is added as its gradient, mu * (w - w_global), in an
optimizer step pre-hook, so it works unchanged under Opacus's DPOptimizer (the hook sits on
the wrapped optimizer, which steps after clipping and noise: the term depends on no data and
costs no privacy) and whatever loss the loop computes.
"""

from __future__ import annotations

import torch
from torch.utils.hooks import RemovableHandle


def attach_proximal_term(optimizer: torch.optim.Optimizer, *, mu: float) -> RemovableHandle | None:
    """Pull every parameter of `optimizer` toward its value now (the round's global weights)
    with strength `mu`; returns the hook handle (remove it after the round), None if mu == 0."""
    if mu < 0:
        raise ValueError(f"train.proximal_mu={mu}: must be >= 0 (0 turns FedProx off)")
    if mu == 0:
        return None
    anchors = [(p, p.detach().clone()) for group in optimizer.param_groups for p in group["params"]]

    def add_proximal_gradient(_optimizer, _args, _kwargs) -> None:
        with torch.no_grad():
            for param, anchor in anchors:
                if param.grad is not None:
                    param.grad.add_(param - anchor, alpha=mu)

    return optimizer.register_step_pre_hook(add_proximal_gradient)
