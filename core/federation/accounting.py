"""Privacy accounting of server-side DP, one Opacus RDP accountant per weight group.

A group spends budget only in rounds where it was aggregated with noise. `sample_rate` is the
fraction of sites sampled in the round. The state is JSON (per group, Opacus's history of
`[noise_multiplier, sample_rate, steps]`) so the server can persist it and resume a run
without forgetting budget already spent.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

from opacus.accountants import RDPAccountant

from core.federation.groups import validate_group_name

MECHANISM = RDPAccountant.mechanism()


def _check_inputs(*, noise_multiplier: float, sample_rate: float) -> None:
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ValueError(f"noise multiplier must be a finite number > 0, got {noise_multiplier}")
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(
            f"sample rate (fraction of sites sampled per round) must be in (0, 1], "
            f"got {sample_rate}"
        )


def epsilon_at(accountant: Any, *, delta: float) -> float:
    """`accountant.get_epsilon(delta)` without Opacus's "Optimal order is the largest/smallest
    alpha" warning on every call: we keep Opacus's default RDP orders, so the epsilon we report
    is exactly Opacus's (audited against a fresh accountant in the tests) and, when the optimum
    sits at an end of the range, a valid upper bound that is merely not the tightest."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the")
        return float(accountant.get_epsilon(delta=delta))


def _accountant_from_history(history: list[tuple[float, float, int]]) -> RDPAccountant:
    accountant = RDPAccountant()
    accountant.load_state_dict({"history": list(history), "mechanism": MECHANISM})
    return accountant


class GroupPrivacyAccountant:
    """Per-group RDP accounting across rounds; (de)serialises to JSON."""

    def __init__(self) -> None:
        self._accountants: dict[str, RDPAccountant] = {}

    @property
    def groups(self) -> tuple[str, ...]:
        """Groups that have spent budget, in the order they first did."""
        return tuple(self._accountants)

    def history(self, group: str) -> list[tuple[float, float, int]]:
        """Opacus history of `group`: (noise_multiplier, sample_rate, steps) runs."""
        accountant = self._accountants.get(group)
        return [tuple(entry) for entry in accountant.history] if accountant else []

    def step(self, *, group: str, noise_multiplier: float, sample_rate: float) -> None:
        """Record one noisy aggregation of `group`."""
        validate_group_name(group)
        _check_inputs(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
        accountant = self._accountants.setdefault(group, RDPAccountant())
        accountant.step(noise_multiplier=float(noise_multiplier), sample_rate=float(sample_rate))

    def epsilon(self, *, group: str, delta: float) -> float:
        """Epsilon spent so far by `group` at `delta` (0.0 if it never spent any)."""
        accountant = self._accountants.get(group)
        return epsilon_at(accountant, delta=delta) if accountant else 0.0

    def epsilon_after_step(
        self, *, group: str, noise_multiplier: float, sample_rate: float, delta: float
    ) -> float:
        """Epsilon `group` would have after one more step (the state is left unchanged)."""
        _check_inputs(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
        trial = _accountant_from_history(self.history(group))
        trial.step(noise_multiplier=float(noise_multiplier), sample_rate=float(sample_rate))
        return epsilon_at(trial, delta=delta)

    def inputs(self, *, group: str, delta: float) -> dict[str, Any]:
        """The history contract for `group`: latest (sigma, q), its cumulative steps, delta."""
        history = self.history(group)
        if not history:
            raise ValueError(f"group {group!r} has not been aggregated with DP noise yet")
        noise_multiplier, sample_rate, steps = history[-1]
        return {
            "noise_multiplier": float(noise_multiplier),
            "sample_rate": float(sample_rate),
            "steps": int(steps),
            "delta": float(delta),
            "accountant": MECHANISM,
        }

    def report(self, *, delta: float) -> dict[str, dict[str, Any]]:
        """`{group: {"epsilon": ..., **inputs}}` for every group that spent budget."""
        return {
            group: {
                "epsilon": self.epsilon(group=group, delta=delta),
                **self.inputs(group=group, delta=delta),
            }
            for group in self._accountants
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state: `{"mechanism": "rdp", "groups": {group: [[s, q, n], ...]}}`."""
        groups = {g: [list(entry) for entry in self.history(g)] for g in self._accountants}
        return {"mechanism": MECHANISM, "groups": groups}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroupPrivacyAccountant:
        """Rebuild from `to_dict` output; raises ValueError naming the bad group or entry."""
        if not isinstance(data, dict) or data.get("mechanism") != MECHANISM:
            raise ValueError(
                f"privacy accountant state must be a dict with mechanism {MECHANISM!r}"
            )
        groups = data.get("groups")
        if not isinstance(groups, dict):
            raise ValueError("privacy accountant state has no 'groups' mapping")
        restored = cls()
        for group, entries in groups.items():
            validate_group_name(group)
            restored._accountants[group] = _accountant_from_history(_parse_history(group, entries))
        return restored

    @classmethod
    def from_json(cls, text: str) -> GroupPrivacyAccountant:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"privacy accountant state is not valid JSON: {err}") from None
        return cls.from_dict(data)


PRIVACY_FIELDS = ("epsilon", "dp")  # history.jsonl: cumulative spend and accountant inputs
PRIVACY_SCOPES = ("sites", "groups")  # client DP per site, server DP per weight group


def carry_privacy(
    *, previous: dict[str, Any] | None, current: dict[str, Any] | None
) -> dict[str, Any]:
    """The `epsilon` and `dp` fields of a history line, cumulative over the whole run.

    `current` holds what this round reported (`{"epsilon": {"sites": .., "groups": ..}, "dp":
    ..}`), `previous` the run's last history line. A site or group that reported nothing this
    round (an evaluate round, a dropout, a refusal) keeps its last values, so every line, the
    last one included, says what was spent so far. `{}` while nothing has spent budget."""
    merged = {
        field: {
            scope: {
                **(((previous or {}).get(field) or {}).get(scope) or {}),
                **(((current or {}).get(field) or {}).get(scope) or {}),
            }
            for scope in PRIVACY_SCOPES
        }
        for field in PRIVACY_FIELDS
    }
    spent = any(merged["epsilon"][scope] for scope in PRIVACY_SCOPES)
    return merged if spent else {}


def _parse_history(group: str, entries: object) -> list[tuple[float, float, int]]:
    if not isinstance(entries, list):
        raise ValueError(f"privacy accountant state of {group!r} must be a list of entries")
    history = []
    for entry in entries:
        ok = isinstance(entry, list | tuple) and len(entry) == 3
        steps = entry[2] if ok else None
        if not ok or not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(
                f"privacy accountant state of {group!r}: entry {entry!r} must be "
                "[noise_multiplier, sample_rate, steps>=1]"
            )
        _check_inputs(noise_multiplier=float(entry[0]), sample_rate=float(entry[1]))
        history.append((float(entry[0]), float(entry[1]), steps))
    return history
