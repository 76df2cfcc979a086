"""The federation's console output: the final summary with and without a final evaluation."""

from __future__ import annotations

from rich.table import Table

from fl_server.console import final_summary


def test_a_run_without_final_evaluation_says_so_and_names_the_weights():
    metrics = {"rounds": 5, "phases": ["pretrain"], "sites": {}, "weighted": {}, "missing": []}
    line = final_summary(metrics, checkpoint="global/round-0005.safetensors")
    assert isinstance(line, str)
    assert "no site evaluated the final model" in line and "global/round-0005.safetensors" in line


def test_a_run_with_final_evaluation_gets_one_row_per_site_and_the_weighted_row():
    metrics = {
        "sites": {"knee-3t": {"n_cases": 4, "macro_auc": 0.61, "mean_dice": 0.7}},
        "weighted": {"n_cases": 4, "macro_auc": 0.61, "mean_dice": 0.7},
    }
    table = final_summary(metrics, checkpoint="global/round-0003.safetensors")
    assert isinstance(table, Table) and table.row_count == 2
