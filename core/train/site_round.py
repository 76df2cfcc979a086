"""One federated training round at a site, framework-free (dispatched by core/train/site_task.py).

A site receives global weights, trains the groups its data supports (pretraining: the view
backbones it has; fine-tuning: its joint's heads, plus backbones in partial/full mode) and
returns only those groups with their example counts (cases, not batches). Optimizer state is
kept in the site's state dir between rounds (core/train/round_state.py); what a site shares of
its held-out evaluation is chosen in core/eval/shared_metrics.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from core.config import FinetuneConfig, ModelConfig, PretrainConfig, PretrainRunConfig
from core.data.cache import feature_root, load_site_tensors
from core.device import Device
from core.federation.groups import group_of
from core.federation.rundir import Phase
from core.models.presets import preprocess_for
from core.models.registry import build_model
from core.train.finetune import finetune
from core.train.pretrain import Pretrainer, training_volumes
from core.train.privacy import ClientDPConfig
from core.train.proximal import attach_proximal_term
from core.train.round_state import restore_state, run_state_dir, save_state


@dataclass
class LocalResult:
    site_id: str
    arrays: dict[str, np.ndarray]
    examples: dict[str, int]
    metrics: dict[str, float] = field(default_factory=dict)
    refused: str = ""


def derived_seed(seed: int, *parts: object) -> int:
    """A 31-bit seed from the experiment seed and e.g. (round index, site id)."""
    text = ":".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") >> 1


def site_cases(site, model_config: ModelConfig):
    return load_site_tensors(site, preprocess=preprocess_for(model_config))


def _feature_root(site, model_config: ModelConfig) -> Path:
    return feature_root(site, preprocess_for(model_config))


def check_incoming(
    given: dict[str, np.ndarray], expected: dict[str, torch.Tensor], *, groups: list[str]
) -> dict[str, torch.Tensor]:
    """The global arrays of `groups`, checked against the local model (keys, shapes, dtypes,
    finite values). Raises ValueError naming the first problems: never load a bad update."""
    wanted = {k: v for k, v in expected.items() if any(k.startswith(g + ".") for g in groups)}
    missing = [k for k in wanted if k not in given]
    if missing:
        raise ValueError(f"global model lacks {len(missing)} expected arrays, e.g. {missing[:3]}")
    out = {}
    for key, ref in wanted.items():
        value = given[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise ValueError(
                f"global array {key} has shape {value.shape}, expected {tuple(ref.shape)}"
            )
        if str(value.dtype) != str(ref.dtype).replace("torch.", ""):
            raise ValueError(f"global array {key} has dtype {value.dtype}, expected {ref.dtype}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"global array {key} holds non-finite values")
        out[key] = torch.from_numpy(np.array(value))
    return out


def pretrain_round(
    *,
    site,
    site_id: str,
    state_dir: Path,
    index: int,
    seed: int,
    model_config: ModelConfig,
    train: PretrainConfig,
    global_arrays: dict[str, np.ndarray],
    client_dp: ClientDPConfig | None = None,
    run_key: str = "",
) -> LocalResult:
    """With client DP on, trains by DP-SGD (or refuses when the site budget would be
    exceeded) and reports epsilon instead of the (non-private) training losses.

    Optimizer state between rounds lives under `run_state_dir(state_dir, run_key)`; an empty
    `run_key` keeps it in `state_dir` itself (a folder private to one run, e.g. local-only
    training's). The privacy budget stays in `state_dir`: it spans every run of the site."""
    own_state = run_state_dir(state_dir, run_key) if run_key else state_dir

    volumes = training_volumes(site_cases(site, model_config), config=model_config)
    run_seed = derived_seed(seed, index, site_id)
    dp_round = client_dp is not None and client_dp.enabled and Phase.PRETRAIN in client_dp.phases
    device = Device.cpu if dp_round else train.device  # DP steps run on the CPU (core/device.py)
    config = PretrainRunConfig(
        model=model_config, train=replace(train, seed=run_seed, device=device)
    )
    trainer = Pretrainer(config=config, volumes=volumes)
    restore_state(trainer, state_dir=own_state, index=index)
    trainer.generator.manual_seed(run_seed)
    groups = [f"backbone.{v.value}" for v in trainer.trained_views]
    expected = trainer.backbone_weights(ema=False)
    trainer.load_backbones(check_incoming(global_arrays, expected, groups=groups))
    proximal = [
        attach_proximal_term(trainer.optimizers[v], mu=train.proximal_mu)
        for v in trainer.trained_views
    ]
    if dp_round:
        from core.train.dp_pretrain import pretrain_privately  # Opacus: only for a DP round

        private = pretrain_privately(
            trainer,
            config=client_dp,
            state_dir=state_dir,
            index=index,
            site_id=site_id,
            run_key=run_key,
        )
        if private.refused:
            return LocalResult(site_id=site_id, arrays={}, examples={}, refused=private.refused)
        metrics = dict(private.metrics or {})
    else:
        losses: dict[str, list[float]] = {}
        for _ in range(train.steps):
            for view, loss in trainer.train_step().items():
                losses.setdefault(view.value, []).append(loss)
        metrics = {f"loss/{view}": float(np.mean(vals)) for view, vals in losses.items()}
    for handle in proximal:
        if handle is not None:
            handle.remove()
    own_state.mkdir(parents=True, exist_ok=True)
    save_state(trainer, state_dir=own_state, index=index)
    weights = trainer.backbone_weights(ema=True)
    arrays = {
        k: v.detach().cpu().numpy().copy()
        for k, v in weights.items()
        if any(k.startswith(g + ".") for g in groups)
    }
    examples = {f"backbone.{v.value}": len(volumes[v]) for v in trainer.trained_views}
    return LocalResult(site_id=site_id, arrays=arrays, examples=examples, metrics=metrics)


def model_with_global(*, site, model_config: ModelConfig, seed: int, global_arrays):
    model = build_model(model_config, joint=site.joint, seed=seed)
    expected = model.state_dict()
    groups = all_groups(model)
    tensors = check_incoming(global_arrays, expected, groups=groups)
    model.load_state_dict(tensors, strict=False)
    return model, groups


def all_groups(model) -> list[str]:
    return sorted({group_of(k) for k in model.state_dict()})


def finetune_round(
    *,
    site,
    site_id: str,
    state_dir: Path,
    index: int,
    seed: int,
    model_config: ModelConfig,
    train: FinetuneConfig,
    global_arrays: dict[str, np.ndarray],
    client_dp: ClientDPConfig | None = None,
    run_key: str = "",
) -> LocalResult:
    """With client DP on (and `finetune` in its phases), trains the heads by DP-SGD (or
    refuses when the site budget would be exceeded) and reports epsilon instead of the loss."""
    cases = site_cases(site, model_config)
    model, groups = model_with_global(
        site=site,
        model_config=model_config,
        seed=seed,
        global_arrays=global_arrays,
    )
    config = replace(train, seed=derived_seed(seed, index, site_id))
    subset_seed = derived_seed(seed, "label-subset", site_id)  # the same subset every round
    if client_dp is not None and client_dp.enabled and Phase.FINETUNE in client_dp.phases:
        from core.train.dp_finetune import finetune_privately  # Opacus: only for a DP round

        private, result = finetune_privately(
            model,
            cases,
            config=config,
            dp=client_dp,
            state_dir=state_dir,
            index=index,
            site_id=site_id,
            subset_seed=subset_seed,
            run_key=run_key,
        )
        if result is None:
            return LocalResult(site_id=site_id, arrays={}, examples={}, refused=private.refused)
        metrics = dict(private.metrics or {})
    else:
        result = finetune(
            model,
            cases,
            config=config,
            subset_seed=subset_seed,
            feature_root=_feature_root(site, model_config),
        )
        metrics = {"loss": float(result.epoch_losses[-1]) if result.epoch_losses else float("nan")}
    trained = [g for g in groups if g.startswith("head.")]
    if train.mode != "linear":
        trained += [g for g in groups if g.startswith("backbone.")]
    chosen = set(result.case_ids)
    n_masks = sum(1 for c in cases if c.case_id in chosen and c.mask is not None)
    if n_masks == 0:  # a site without masks does not train (or send) the segmentation head
        trained = [g for g in trained if not g.endswith(".seg")]
    examples = {g: (n_masks if g.endswith(".seg") else result.num_examples) for g in trained}
    arrays = {
        k: v.detach().cpu().numpy().copy()
        for k, v in model.state_dict().items()
        if any(k.startswith(g + ".") for g in trained)
    }
    return LocalResult(site_id=site_id, arrays=arrays, examples=examples, metrics=metrics)
