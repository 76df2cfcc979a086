"""Client-DP settings that spend a whole-federation epsilon target.

`client_dp.target_epsilon` is a per-round target, so a federation of several rounds would
spend more. Here the noise multiplier is chosen for the whole plan instead: each site's
history (pretraining: `steps` per trained view per round at q = batch / that view's training
volumes; fine-tuning, linear: epochs x ceil(1/q) steps per round, at least
`dp_finetune_min_steps`, at q = batch / annotated training cases) is composed, and sigma is the
smallest (bisection, conservative side) whose worst site stays at or under the target. With
the RDP accountant the search uses integer Renyi orders only (Opacus's fractional orders cost
~0.5 s per evaluation): an upper bound of what the sites' accountant (more orders) will count,
so the epsilon actually spent is at most the target (typically a few percent under it; the
run records the spent value).
The budget guard `max_epsilon` is set just above the target: a planning error shows up as a
refused round, never as a silently larger epsilon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from core.train.privacy import epsilon_of, merge_history, sample_rate
from reproduce.config import FederationSpec, PrivacySpec

GUARD = 1.01  # max_epsilon = GUARD x target
ORDERS = [float(a) for a in range(2, 64)] + [80.0, 96.0, 128.0, 256.0]


def site_history(
    cases: Sequence, *, sigma: float, fed: FederationSpec
) -> list[tuple[float, float, int]]:
    """The accountant entries one site will record over the whole federation."""
    from core.train.dp_finetune import dp_steps  # Opacus: only when a history is built

    train = [c for c in cases if not c.heldout]
    per_view: dict[str, int] = {}
    for case in train:
        for view in case.views:
            per_view[str(view)] = per_view.get(str(view), 0) + 1
    entries = [
        (
            sigma,
            sample_rate(batch_size=fed.pretrain_batch, cases=n),
            fed.pretrain_steps * fed.pretrain_rounds,
        )
        for n in per_view.values()
    ]
    annotated = sum(1 for c in train if c.labels is not None or c.mask is not None)
    if annotated:
        rate = sample_rate(batch_size=fed.finetune_batch, cases=annotated)
        floor = fed.min_steps(private=True)
        per_round = dp_steps(epochs=fed.finetune_epochs, rate=rate, min_steps=floor)
        steps = per_round * fed.finetune_rounds
        entries.append((sigma, rate, steps))
    return merge_history(entries)


def bound(history: Sequence[tuple[float, float, int]], *, privacy: PrivacySpec) -> float:
    """Epsilon of `history`: an RDP upper bound over integer orders (fast), or the exact
    count of the configured accountant when it is not RDP."""
    if privacy.accountant != "rdp":
        return epsilon_of(history, accountant=privacy.accountant, delta=privacy.delta)
    import warnings

    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    rdp = sum(compute_rdp(q=q, noise_multiplier=s, steps=n, orders=ORDERS) for s, q, n in history)
    with warnings.catch_warnings():  # "optimal order is the smallest alpha": still a bound
        warnings.simplefilter("ignore")
        epsilon, _ = get_privacy_spent(orders=ORDERS, rdp=rdp, delta=privacy.delta)
    return float(epsilon)


def worst_epsilon(
    sites: Sequence[Sequence], *, sigma: float, fed: FederationSpec, privacy: PrivacySpec
) -> float:
    return max(bound(site_history(cases, sigma=sigma, fed=fed), privacy=privacy) for cases in sites)


def noise_for(
    target: float,
    *,
    sites: Sequence[Sequence],
    fed: FederationSpec,
    privacy: PrivacySpec,
    iterations: int = 40,
) -> float:
    """Smallest sigma (to ~1e-3 relative) whose worst site spends <= `target`."""
    low, high = 0.3, 1.0
    while worst_epsilon(sites, sigma=high, fed=fed, privacy=privacy) > target:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(f"no noise multiplier reaches epsilon {target}: lower the budgets")
    for _ in range(iterations):
        mid = math.sqrt(low * high)
        if worst_epsilon(sites, sigma=mid, fed=fed, privacy=privacy) > target:
            low = mid
        else:
            high = mid
        if high / low < 1.001:
            break
    return high


def client_dp(
    target: float, *, sites: Sequence[Sequence], fed: FederationSpec, privacy: PrivacySpec
) -> dict[str, Any]:
    """The experiment's `client_dp` section for a whole-federation epsilon `target`."""
    sigma = noise_for(target, sites=sites, fed=fed, privacy=privacy)
    return {
        "enabled": True,
        "noise_multiplier": float(sigma),
        "max_grad_norm": privacy.max_grad_norm,
        "delta": privacy.delta,
        "accountant": privacy.accountant,
        "max_epsilon": float(target * GUARD),
        "phases": ["pretrain", "finetune"],
    }
