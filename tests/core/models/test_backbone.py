import pytest
import torch

from core.config import BackboneConfig, DiffusionConfig, ModelConfig, load_config, to_dict
from core.diffusion.ddpm import build_scheduler
from core.models.backbone import block_scale, build_backbone, downsampling_factor, seg_taps
from core.models.presets import load_model_config
from core.models.registry import build_model
from core.views import KNEE_STRUCTURES, LABELS, VIEWS, Joint


@pytest.mark.parametrize("joint", list(Joint))
def test_state_dict_keys_are_grouped_by_view_and_joint(tiny_config, joint):
    model = build_model(tiny_config, joint=joint)
    groups = {
        ".".join(k.split(".")[: 3 if k.startswith("head") else 2]) for k in model.state_dict()
    }
    expected = {f"backbone.{v.value}" for v in VIEWS} | {f"head.{joint.value}.cls"}
    if joint == Joint.KNEE:
        expected.add("head.knee.seg")
    assert groups == expected


@pytest.mark.parametrize("joint", list(Joint))
@pytest.mark.parametrize("view", VIEWS)
def test_feature_and_head_shapes(tiny_config, joint, view):
    model = build_model(tiny_config, joint=joint)
    x = torch.rand(2, 1, 8, 32, 32) * 2 - 1
    fused, seg = model.encode(view, x, seeds=[1, 2], with_seg=True)
    assert fused.shape == (2, 16, 4, 16, 16)  # middle block of a 2-level UNet: /2 grid
    present = torch.zeros(2, 3, dtype=torch.bool)
    present[:, VIEWS.index(view)] = True
    logits = model.classify({view.value: fused}, present)
    assert logits.shape == (2, len(LABELS[joint]))
    if joint == Joint.KNEE:
        assert len(seg) == 3  # 2-level backbone: up.1, up.0 and down.0
        assert model.segment(x, seg).shape == (2, len(KNEE_STRUCTURES) + 1, 8, 32, 32)
    else:
        assert model.seg_head is None
        with pytest.raises(ValueError, match="no segmentation head"):
            model.segment(x, seg)


def test_backbone_denoiser_keeps_input_shape(tiny_config):
    unet = build_backbone(tiny_config.backbone)
    x = torch.randn(1, 1, 8, 32, 32)
    assert unet(x, torch.tensor([10])).shape == x.shape


def test_paper_preset_matches_reference():
    config = load_model_config("paper")
    assert config.backbone.channels == [64, 64, 128, 128, 256]
    assert config.backbone.attention_levels == [False] * 4 + [True]
    assert config.backbone.num_res_blocks == 1
    assert (config.input_slices, config.input_size) == (16, 256)
    assert downsampling_factor(config.backbone) == 16
    assert block_scale(config.backbone, "middle") == 16  # four upsampling stages in the seg head
    assert config.diffusion.schedule == "cosine" and config.diffusion.num_train_timesteps == 1000


def test_tiny_preset_builds_a_knee_model():
    model = build_model(load_model_config("tiny"), joint="knee")
    assert model.backbone["axial"].block_out_channels == (16, 32, 64)


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_presets_tap_segmentation_at_t2_and_configs_older_than_the_key_at_t10(preset):
    config = load_model_config(preset)
    assert {t.timestep for t in seg_taps(config)} == {2}
    assert [t.block for t in seg_taps(config)][-1] == "down.0"
    # a checkpoint or run written before `heads.seg_timestep` existed has no such key: it
    # keeps the t = 10 its heads were trained on
    older = to_dict(config)
    del older["heads"]["seg_timestep"]
    taps = seg_taps(load_config(ModelConfig, data=older))
    assert {t.timestep for t in taps} == {10}
    assert [t.block for t in taps] == [t.block for t in seg_taps(config)]


@pytest.mark.parametrize(
    ("override", "match"),
    [
        (["heads.seg_timestep=1000"], "seg_timestep"),
        (["backbone.norm_num_groups=5"], "norm_num_groups"),
        (["input_size=34"], "input_size"),
        (["features.taps=[{timestep: 1000, block: middle}]"], "timestep"),
        (["backbone.attention_levels=[true]"], "attention_levels"),
        (["features.taps=[{timestep: 100, block: sideways}]"], "sideways"),
    ],
)
def test_invalid_model_configs_are_rejected(override, match):
    with pytest.raises(ValueError, match=match):
        config = load_model_config("tiny", overrides=override)
        build_model(config, joint="knee")


@pytest.mark.parametrize(
    ("override", "match"),
    [
        (["diffusion.schedule=bogus"], "cosine"),
        (["diffusion.prediction_type=v_prediction"], "epsilon"),
        (["diffusion.num_train_timesteps=1"], ">= 2"),
    ],
)
def test_diffusion_settings_are_refused_when_loaded_not_when_used(override, match):
    with pytest.raises(ValueError, match=match):
        load_model_config("tiny", overrides=override)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match="paper, tiny"):
        load_model_config("huge")


def test_scheduler_is_cosine_ddpm():
    scheduler = build_scheduler(DiffusionConfig())
    assert scheduler.num_train_timesteps == 1000
    abar = scheduler.alphas_cumprod
    assert abar[0] > 0.999 and abar[-1] < 1e-3 and torch.all(abar[1:] <= abar[:-1])
    with pytest.raises(ValueError, match="schedule"):
        build_scheduler(DiffusionConfig(schedule="wiggly"))


def test_backbone_rejects_mismatched_attention_levels():
    with pytest.raises(ValueError, match="attention_levels"):
        build_backbone(BackboneConfig(channels=[8, 16], attention_levels=[True], norm_num_groups=8))
