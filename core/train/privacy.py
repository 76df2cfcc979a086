"""Sample-level DP-SGD at a site: settings, the persistent site budget, and its accounting.

Privacy unit: one case (a patient's exam). Each view backbone trains on one volume per case,
so the three views' trainings are composed in ONE site accountant: a case is protected
across all three. `target_epsilon` is a PER-ROUND target (the epsilon this round's training
alone spends, over all views, for a fresh accountant); `max_epsilon` is the TOTAL site budget
over every round ever trained, checked before each round: a site that would pass it refuses.

The budget lives in `<state dir>/privacy-budget.json` (accountant kind, delta, and the
history of `[noise_multiplier, sample_rate, steps]` runs). It is written atomically, survives
restarts and resumed federations, and is never reset: a redone round spends again. The
history is what was spent; the accountant kind and delta are how it is counted, so they
follow the experiment (a change is recorded in the file, the history is kept).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.atomic import write_bytes_atomic, write_json_atomic

BUDGET_FILE = "privacy-budget.json"
SECRET_FILE = "privacy-secret"
ACCOUNTANTS = ("rdp", "prv")
PHASES = ("pretrain", "finetune")  # phases with sample-level DP implemented

Entry = tuple[float, float, int]  # (noise_multiplier, sample_rate, steps)


@dataclass
class ClientDPConfig:
    """Sample-level DP-SGD (Opacus) at every site; part of the experiment (`client_dp:`).

    Exactly one of `noise_multiplier` (sigma, fixed) or `target_epsilon` (per-round target
    from which sigma is computed) is set when enabled. `max_epsilon` is the total budget.
    `secure_rng` draws batches and noise from torchcsprng (Opacus secure mode); otherwise
    they come from a generator seeded with a secret kept in the site's state dir.
    `phases` lists the phases trained with DP (pretrain: every view backbone; finetune: the
    heads on frozen backbones, `linear` mode only). Both spend the same site budget.
    """

    enabled: bool = False
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    accountant: str = "rdp"
    max_epsilon: float | None = None
    secure_rng: bool = False
    phases: list[str] = field(default_factory=lambda: ["pretrain", "finetune"])

    def __post_init__(self) -> None:
        _positive("max_grad_norm", self.max_grad_norm, hint="L2 bound of one case's gradient")
        if not 0.0 < self.delta < 1.0:
            raise ValueError(
                f"client_dp.delta={self.delta}: must be in (0, 1), well below 1 / cases per "
                "site (e.g. 1e-5)"
            )
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(
                f"client_dp.accountant={self.accountant!r}: use one of {', '.join(ACCOUNTANTS)}"
            )
        for name in ("noise_multiplier", "target_epsilon", "max_epsilon"):
            value = getattr(self, name)
            if value is not None:
                _positive(name, value, hint="or null")
        unknown = [p for p in self.phases if p not in PHASES]
        if unknown:
            raise ValueError(
                f"client_dp.phases {unknown}: sample-level DP is implemented for "
                f"{', '.join(PHASES)} only"
            )
        if self.enabled and (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(
                "client_dp: set exactly one of noise_multiplier (fixed sigma) or "
                "target_epsilon (per-round epsilon from which sigma is computed)"
            )


def _positive(name: str, value: float, *, hint: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"client_dp.{name}={value}: must be a finite number > 0 ({hint})")


def parse_client_dp(text: str | None) -> ClientDPConfig:
    """The experiment's client DP settings from their JSON form (empty: DP off)."""
    from core.config import load_config  # core.config pulls torch; this module stays torch-free

    if not text:
        return ClientDPConfig()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"client_dp settings are not valid JSON: {err}") from None
    return load_config(ClientDPConfig, data=data)


def epsilon_of(history: Iterable[Entry], *, accountant: str, delta: float) -> float:
    """Epsilon at `delta` of a composed history (0.0 for no history), via Opacus."""
    from opacus.accountants import create_accountant

    from core.federation.accounting import epsilon_at  # imports Opacus, as the line above

    entries = [(float(s), float(q), int(n)) for s, q, n in history]
    if not entries:
        return 0.0
    counter = create_accountant(accountant)
    counter.history = entries
    return epsilon_at(counter, delta=delta)


def merge_history(history: Iterable[Entry]) -> list[Entry]:
    """Runs with equal (sigma, q) summed (composition is order-free), first-seen order."""
    steps: dict[tuple[float, float], int] = {}
    for sigma, rate, n in history:
        key = (float(sigma), float(rate))
        steps[key] = steps.get(key, 0) + int(n)
    return [(s, q, n) for (s, q), n in steps.items()]


def sample_rate(*, batch_size: int, cases: int) -> float:
    """Poisson sampling rate giving `batch_size` expected cases per step (at most 1)."""
    if cases < 1:
        raise ValueError(f"DP sampling needs at least one training case, got {cases}")
    if batch_size < 1:
        raise ValueError(f"DP sampling needs batch_size >= 1, got {batch_size}")
    return min(1.0, batch_size / cases)


def round_entries(*, rates: Sequence[float], steps: int, config: ClientDPConfig) -> list[Entry]:
    """This round's accountant entries, one per trained view (rates: one per view).

    With `target_epsilon`, sigma is Opacus's noise for `steps * views` steps at the largest
    rate: conservative (epsilon grows with the rate), one sigma for all views.
    """
    if steps < 1:
        raise ValueError(f"a DP round needs train.steps >= 1, got {steps}")
    if not rates:
        raise ValueError("a DP round needs at least one trained view, got none")
    from opacus.accountants.utils import get_noise_multiplier

    sigma = config.noise_multiplier
    if sigma is None:
        sigma = get_noise_multiplier(
            target_epsilon=float(config.target_epsilon),  # type: ignore[arg-type]
            target_delta=config.delta,
            sample_rate=max(rates),
            steps=steps * len(rates),
            accountant=config.accountant,
        )
    return merge_history((float(sigma), float(q), steps) for q in rates)


def _parse_entries(entries: object, *, path: Path) -> list[Entry]:
    bad = ValueError(
        f"{path}: 'history' must be a list of [noise_multiplier > 0, sample_rate in (0, 1], "
        "steps >= 1]; restore the file from a backup: never delete it (that would reset the "
        "site's privacy budget)"
    )
    if not isinstance(entries, list):
        raise bad
    out = []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], int)):
            raise bad
        sigma, rate, steps = float(entry[0]), float(entry[1]), entry[2]
        if not (sigma > 0 and 0 < rate <= 1 and steps >= 1):
            raise bad
        out.append((sigma, rate, steps))
    return out


@dataclass
class SiteBudget:
    """The privacy a site has spent, persisted in its state dir."""

    path: Path
    accountant: str
    delta: float
    history: list[Entry] = field(default_factory=list)

    @classmethod
    def load(cls, state_dir: Path, *, config: ClientDPConfig) -> SiteBudget:
        """The site's budget (empty if it never trained with DP), counted as `config` says."""
        path = Path(state_dir) / BUDGET_FILE
        history: list[Entry] = []
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise ValueError(f"{path}: unreadable privacy budget ({err})") from None
            entries = data.get("history") if isinstance(data, dict) else None
            history = _parse_entries(entries, path=path)
        return cls(path=path, accountant=config.accountant, delta=config.delta, history=history)

    def epsilon(self, *, planned: Sequence[Entry] = ()) -> float:
        """Epsilon spent so far, or after `planned` entries too (state unchanged)."""
        return epsilon_of([*self.history, *planned], accountant=self.accountant, delta=self.delta)

    def refusal(self, planned: Sequence[Entry], *, max_epsilon: float | None) -> str:
        """Why the site must not train `planned` ("" when it may)."""
        if max_epsilon is None:
            return ""
        after = self.epsilon(planned=planned)
        if after <= max_epsilon:
            return ""
        return (
            f"privacy budget exhausted: epsilon would reach {after:.4g} > max_epsilon "
            f"{max_epsilon:.4g} at delta {self.delta:.3g}"
        )

    def spend(self, entries: Sequence[Entry]) -> None:
        """Add `entries` to the history and write the file atomically. When the write fails
        (a full disk: OSError naming the file) the file and this object keep the old history
        and the error propagates, so the round's training is never released."""
        before = self.history
        self.history = merge_history([*self.history, *entries])
        try:
            write_json_atomic(self.path, self.to_dict())
        except BaseException:
            self.history = before
            raise

    def to_dict(self) -> dict[str, Any]:
        return {
            "accountant": self.accountant,
            "delta": self.delta,
            "epsilon": self.epsilon(),
            "history": [list(e) for e in self.history],
        }

    def metrics(self, entries: Sequence[Entry]) -> dict[str, float]:
        """Reply metrics after spending `entries`: cumulative epsilon, and the (sigma, q) of
        this round's largest-rate entry with its cumulative steps (the full history stays in
        the site's privacy-budget.json)."""
        sigma, rate, _ = max(entries, key=lambda e: e[1])
        steps = sum(n for s, q, n in self.history if (s, q) == (sigma, rate))
        return {
            "epsilon": self.epsilon(),
            "dp_noise_multiplier": float(sigma),
            "dp_sample_rate": float(rate),
            "dp_steps": int(steps),
            "dp_delta": float(self.delta),
        }


def site_secret(state_dir: Path) -> bytes:
    """A random secret kept in the state dir (created once, never sent). It seeds batch
    sampling and noise: the server knows the experiment seed, so noise derived from it alone
    could be subtracted, and known batches would void the subsampling amplification."""
    path = Path(state_dir) / SECRET_FILE
    if not path.exists():
        write_bytes_atomic(path, os.urandom(32).hex().encode())
        path.chmod(0o600)
    return bytes.fromhex(path.read_text().strip())


def run_part(run_key: str) -> tuple[str, ...]:
    """Seed parts naming the federation run: two federations at one site must never draw
    the same noise at the same round index (the difference of two releases would cancel it).
    Empty for runs without a key (local training), which keeps their seeds as they were."""
    return (f"run={run_key}",) if run_key else ()


def private_seed(secret: bytes, *parts: object) -> int:
    """A 63-bit seed from the site secret and e.g. (round index, view)."""
    text = ":".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.sha256(secret + b":" + text).digest()[:8], "big") >> 1
