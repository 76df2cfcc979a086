"""Server-side aggregation and server-side DP settings (OmegaConf structured dataclasses).

Plain field types only (str, float, int, bool, optional float) so YAML and dotted overrides
merge into them; `__post_init__` rejects values that would make a round meaningless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class AggregationRule(StrEnum):
    """How the accepted updates of one group are combined."""

    WEIGHTED_MEAN = "weighted_mean"
    MEDIAN = "median"
    TRIMMED_MEAN = "trimmed_mean"


def parse_rule(value: str) -> AggregationRule:
    """Return the rule named by `value`, or raise a ValueError listing the choices."""
    try:
        return AggregationRule(str(value).strip().lower())
    except ValueError:
        choices = ", ".join(r.value for r in AggregationRule)
        raise ValueError(f"unknown aggregation rule {value!r}: choose one of {choices}") from None


@dataclass
class AggregationConfig:
    """Rule per group plus the update checks that run before it.

    `norm_factor`: an update whose L2 distance to the global group is more than this many
    times the median distance of the sites that sent the group is rejected; the check only
    runs when at least `norm_min_sites` sites sent the group (a median of 1-2 is no baseline).
    `max_relative_norm`: whatever the number of sites, an update farther from the global group
    than this many times the group's own L2 norm is rejected (a sanity bound: legitimate
    rounds move a group by a fraction of its norm, a scaled or exploding update by far more).
    `trim_fraction`: fraction of sites dropped at each end per coordinate (`trimmed_mean`).
    """

    rule: str = "weighted_mean"
    trim_fraction: float = 0.1
    norm_factor: float = 10.0
    norm_min_sites: int = 3
    max_relative_norm: float = 100.0

    def __post_init__(self) -> None:
        self.rule = parse_rule(self.rule).value
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ValueError(
                f"aggregation.trim_fraction={self.trim_fraction}: must be in [0, 0.5) "
                "(fraction of sites dropped at EACH end; 0.5 would drop everything)"
            )
        if not (math.isfinite(self.norm_factor) and self.norm_factor > 1.0):
            raise ValueError(
                f"aggregation.norm_factor={self.norm_factor}: must be a finite number > 1 "
                "(e.g. 10 rejects updates 10x larger than the median update of the group)"
            )
        if not (math.isfinite(self.max_relative_norm) and self.max_relative_norm > 0):
            raise ValueError(
                f"aggregation.max_relative_norm={self.max_relative_norm}: must be a finite "
                "number > 0 (e.g. 100 rejects updates 100x larger than the group's weights)"
            )
        if self.norm_min_sites < 3:
            raise ValueError(
                f"aggregation.norm_min_sites={self.norm_min_sites}: must be >= 3 "
                "(the median of fewer sites cannot tell an outlier from a normal update)"
            )


@dataclass
class ServerDPConfig:
    """DP-FedAvg on the server, per weight group (clip each site's delta, add Gaussian noise).

    `noise_multiplier` is sigma: the noise std is sigma * clip_norm / number of sites that
    contributed to the group. `secure_noise` draws the noise from the OS CSPRNG (os.urandom)
    instead of the seeded numpy generator (seeded noise is for reproducible simulations).
    `max_epsilon`: a group whose epsilon would exceed this after the round is not updated.
    """

    enabled: bool = False
    clip_norm: float = 1.0
    noise_multiplier: float = 1.0
    delta: float = 1e-5
    secure_noise: bool = False
    max_epsilon: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ValueError(
                f"server_dp.clip_norm={self.clip_norm}: must be a finite number > 0 "
                "(L2 bound of one site's update of one weight group)"
            )
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ValueError(
                f"server_dp.noise_multiplier={self.noise_multiplier}: must be a finite number > 0 "
                "(0 gives no privacy; to turn server DP off set server_dp.enabled=false)"
            )
        if not 0.0 < self.delta < 1.0:
            raise ValueError(
                f"server_dp.delta={self.delta}: must be in (0, 1), typically below 1/number of "
                "sites (e.g. 1e-5)"
            )
        if self.max_epsilon is not None and not self.max_epsilon > 0:
            raise ValueError(
                f"server_dp.max_epsilon={self.max_epsilon}: must be > 0, or null for no limit"
            )
