"""Final files of a run: `metrics.json` from the history's evaluate round."""

from __future__ import annotations

from core.atomic import write_json_atomic
from core.federation.rundir import Phase, RunDir


def write_final_metrics(run: RunDir) -> dict:
    history = run.read_history()
    evaluation = [r for r in history if r.get("phase") == Phase.EVALUATE]
    last = evaluation[-1] if evaluation else {}
    summary = {
        "rounds": len(history),
        "phases": sorted({r["phase"] for r in history}),
        "sites": last.get("metrics", {}),
        "weighted": last.get("weighted", {}),
        "missing": last.get("missing", []),
    }
    eps = [r["epsilon"] for r in history if "epsilon" in r]
    if eps:
        summary["epsilon"] = eps[-1]
    write_json_atomic(run.root / "metrics.json", summary)
    return summary
