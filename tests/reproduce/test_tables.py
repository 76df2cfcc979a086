"""Tables, contrasts, the cross-site matrix and the plots, from fake cell results."""

from __future__ import annotations

import statistics

import pytest

from core.reporting.federation_run import load_cross_site
from core.views import KNEE_STRUCTURES
from reproduce import plots, specs, tables
from reproduce.config import load_reproduce_config
from reproduce.runner import write_outputs


@pytest.fixture
def config():
    config = load_reproduce_config(quick=True, seeds=3)
    config.label_fractions = [1.0, 0.1]
    config.privacy.epsilons = [8.0, 3.0]
    return config


def _metrics(auc: float, dice: float | None = None) -> dict:
    out = {"macro_auc": auc}
    if dice is not None:
        out["mean_dice"] = dice
        out["dice"] = {s: dice for s in KNEE_STRUCTURES}
    return out


def fake_results(config, *, seeds=(0, 1, 2), skip=()) -> dict:
    """Every cell of every seed, with values that encode method, fraction and seed."""
    out = {}
    knee = config.sites_of("knee")
    for seed in seeds:

        def put(suffix, result, seed=seed):
            if (seed, suffix) not in skip:
                out[f"s{seed}.{suffix}"] = {"seed": seed, **result}

        for m, base in zip(specs.LABEL_EFFICIENCY_METHODS, (0.70, 0.72, 0.55), strict=True):
            for f in config.label_fractions:
                auc = base + 0.1 * f + 0.01 * seed
                per_site = {s: _metrics(auc + 0.02 * j, 0.5) for j, s in enumerate(knee)}
                put(specs.r1(m, f), {"metrics": _metrics(auc, 0.5), "per_site": per_site})
        for i, model in enumerate(specs.r2_models(config)):
            per_site = {s: _metrics(0.6 + 0.05 * i + 0.01 * j) for j, s in enumerate(knee)}
            put(specs.r2(model), {"per_site": per_site, "metrics": _metrics(0.6 + 0.05 * i)})
        for site in specs.transfer_sites(config):
            for m in specs.TRANSFER_METHODS:
                put(specs.r3(site, m), {"metrics": _metrics(0.65 + 0.01 * seed)})
        put(specs.r4(None), {"metrics": _metrics(0.75 + 0.01 * seed, 0.6)})
        for eps in config.privacy.epsilons:
            put(specs.r4(eps), {"metrics": _metrics(0.6 + eps / 100), "epsilon": eps - 0.01})
        out["site.knee-3t"] = {"cases": {"train": 5, "heldout": 3}}
    return out


def test_table_lines_mean_sd_and_seed_counts(config):
    results = fake_results(config, skip={(2, specs.r1("fed-linear", 0.1))})
    rows = tables.table_rows(results, specs.lines(config))
    line = next(r for r in rows if r["cell"] == specs.r1("fed-linear", 1.0))
    assert line["n_seeds"] == 3 and line["values"] == pytest.approx(
        {"0": 0.80, "1": 0.81, "2": 0.82}
    )
    assert line["mean"] == pytest.approx(0.81) and line["sd"] == pytest.approx(
        statistics.stdev([0.80, 0.81, 0.82])
    )
    missing = next(r for r in rows if r["cell"] == specs.r1("fed-linear", 0.1))
    assert missing["n_seeds"] == 2 and set(missing["values"]) == {"0", "1"}
    spent = next(r for r in rows if r["cell"] == specs.r4(3.0) and r["path"] == "epsilon")
    assert spent["mean"] == pytest.approx(2.99)
    seg = [r for r in rows if r["row"] == "5"]
    # three models with every structure (the partial model's and the UNet's mean Dice are in
    # the next block), then mean Dice per label fraction of the masks for the SSL linear heads,
    # the partial fine-tune, the random-backbone heads and the supervised UNet
    assert len(seg) == 3 * (1 + len(KNEE_STRUCTURES)) - 2 + 4 * len(config.label_fractions)
    assert [r["mean"] for r in seg if r["cell"] == specs.r4(None)] == pytest.approx(
        [0.6] * (1 + len(KNEE_STRUCTURES))
    )
    assert {r["row"] for r in rows} == set(specs.ROWS)


def test_contrasts_are_paired_by_seed(config):
    results = fake_results(config, skip={(1, specs.r1("random-linear", 1.0))})
    rows = tables.contrast_rows(results, specs.contrasts(config))
    probe = next(r for r in rows if r["contrast"] == "SSL probe - random probe @ 100%")
    assert probe["n_seeds"] == 2 and probe["positive_seeds"] == 2
    assert probe["mean"] == pytest.approx(0.15) and probe["sd"] == pytest.approx(0.0, abs=1e-9)
    privacy = next(r for r in rows if r["contrast"] == "epsilon inf - epsilon 3")
    assert privacy["mean"] == pytest.approx(0.75 + 0.01 - 0.63)


def test_row_1_is_shown_per_knee_site_too(config):
    """Each row-1 setting has a pooled line and one line per knee site, from `per_site`; the
    per-site contrasts pair the same seeds on the same site."""
    results = fake_results(config)
    rows = tables.table_rows(results, specs.lines(config))
    knee = config.sites_of("knee")
    assert specs.row1_sites(config) == knee and len(knee) == 2
    row1 = [r for r in rows if r["row"] == "1"]
    settings = 4 * len(config.label_fractions)  # three methods and the CNN
    assert len(row1) == settings * (1 + len(knee))
    cell = specs.r1("fed-linear", 0.1)
    on_site = [r for r in row1 if r["cell"] == cell]
    assert [r["path"] for r in on_site] == [
        "metrics.macro_auc",
        *(f"per_site.{s}.macro_auc" for s in knee),
    ]
    assert on_site[2]["setting"].endswith(f"-> {knee[1]}")
    assert on_site[2]["mean"] == pytest.approx(0.70 + 0.01 + 0.01 + 0.02)
    cnn = next(r for r in row1 if r["cell"] == specs.r1_cnn(1.0) and knee[0] in r["path"])
    assert cnn["n_seeds"] == 0  # the fakes have no CNN cells: n/a, not an error
    contrasts = tables.contrast_rows(results, specs.contrasts(config))
    site_probe = next(
        c for c in contrasts if c["contrast"] == f"SSL probe - random probe @ 10%, {knee[1]}"
    )
    assert site_probe["n_seeds"] == 3 and site_probe["mean"] == pytest.approx(0.15)


def test_cross_site_matrix_shape_and_report_format(config, tmp_path):
    results = fake_results(config)
    models = specs.r2_models(config)
    matrix = tables.cross_site(
        results, models=models, sites=config.sites_of("knee"), suffix_of=specs.r2
    )
    assert len(matrix["macro_auc"]) == len(models) == 4
    assert all(len(row) == 2 for row in matrix["macro_auc"])
    assert matrix["macro_auc"][2][1] == pytest.approx(0.6 + 0.1 + 0.01)  # federated -> knee-15t
    path = tmp_path / "cross_site.json"
    path.write_text(__import__("json").dumps(matrix))
    loaded = load_cross_site(path)  # what the federation report renders
    assert loaded["models"][2] == "federated" and loaded["sites"] == ["knee-3t", "knee-15t"]


def test_markdown_has_every_row_its_claim_and_na_for_empty_cells(config):
    results = fake_results(config, seeds=(0,))
    results.pop(f"s0.{specs.r3('ankle-std', 'scratch-full')}")
    text = tables.markdown(
        tables.table_rows(results, specs.lines(config)),
        tables.contrast_rows(results, specs.contrasts(config)),
        header=["# title"],
    )
    assert text.startswith("# title")
    for row, claim in specs.CLAIMS.items():
        assert f"| {row}. {specs.ROWS[row]} |" in text and claim in text
    assert "| ankle-std: scratch: random init, full | macro AUC | n/a | 0 |" in text
    assert "| 0.800 | 1 |" in text  # one seed: no sd
    multi = tables.markdown(tables.table_rows(fake_results(config), specs.lines(config)), [])
    assert "0.810 ± 0.010" in multi


def test_write_outputs_and_plots_from_fake_results(config, tmp_path):
    results = fake_results(config)
    meta = {
        "command": "python -m reproduce --test",
        "date": "today",
        "wall_s": 60.0,
        "compute_s": 120.0,
        "failed": {"s2.fed-eps3": "RuntimeError: boom"},
    }
    payload = write_outputs(out=tmp_path, config=config, results=results, meta=meta)
    for name in ("label-efficiency", "privacy", "cross-site"):
        png = tmp_path / f"reproduce-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "reproduce.md").read_text()
    assert "`python -m reproduce --test`" in text and "s2.fed-eps3: RuntimeError: boom" in text
    assert payload["cells"] == results and payload["config"]["seeds"] == 3
    assert (tmp_path / "reproduce" / "cross_site.json").is_file()
    # plots cope with rows that have no result at all
    plots.privacy({}, config, tmp_path / "empty.png")
    plots.label_efficiency({}, config, tmp_path / "empty2.png")
