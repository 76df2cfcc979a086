"""View backbones: one MONAI `DiffusionModelUNet` (3D, 1 channel in/out) per view.

Block names used across the project (feature taps, fine-tuning groups):
`middle` (the bottleneck), `down.<i>` and `up.<i>` (the i-th down/up block of the UNet).
"""

from __future__ import annotations

from monai.networks.nets import DiffusionModelUNet
from torch import nn

from core.config import BackboneConfig, FeatureTap, ModelConfig

# Submodules of DiffusionModelUNet forming the encoder (incl. time embedding) and decoder.
ENCODER_MODULES = ("conv_in", "time_embed", "down_blocks", "middle_block")
DECODER_MODULES = ("up_blocks", "out")


def validate_backbone(config: BackboneConfig) -> None:
    """Raise ValueError with a fixable message when the backbone settings cannot build a UNet."""
    if len(config.channels) < 2:
        raise ValueError("model.backbone.channels needs at least two levels")
    if len(config.attention_levels) != len(config.channels):
        raise ValueError(
            f"model.backbone.attention_levels has {len(config.attention_levels)} entries but "
            f"channels has {len(config.channels)}: give one per level"
        )
    bad = [c for c in config.channels if c % config.norm_num_groups]
    if bad:
        raise ValueError(
            f"model.backbone.channels {bad} are not multiples of norm_num_groups="
            f"{config.norm_num_groups}"
        )
    if config.num_res_blocks < 1:
        raise ValueError("model.backbone.num_res_blocks must be >= 1")


def build_backbone(config: BackboneConfig) -> DiffusionModelUNet:
    """A fresh 3D diffusion UNet for one view."""
    validate_backbone(config)
    return DiffusionModelUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        channels=tuple(config.channels),
        attention_levels=tuple(config.attention_levels),
        num_res_blocks=config.num_res_blocks,
        norm_num_groups=config.norm_num_groups,
        num_head_channels=config.num_head_channels,
        use_flash_attention=config.use_flash_attention,
    )


def downsampling_factor(config: BackboneConfig) -> int:
    """How much the bottleneck grid is smaller than the input along each axis."""
    return 2 ** (len(config.channels) - 1)


def conv_shapes(config: ModelConfig) -> list[tuple[int, int]]:
    """(depth, channels) of the 3D feature maps the model convolves: each backbone level
    (skip concatenations double the decoder's channels) and the segmentation head's grids;
    for the bf16 gradient check in `core.precision.resolve_precision`."""
    shapes = []
    for level, channels in enumerate(config.backbone.channels):
        depth = max(1, config.input_slices // 2**level)
        shapes += [(depth, channels), (depth, 2 * channels)]
    width, pool = config.heads.seg_channels, config.heads.seg_context_pool
    shapes.append((config.input_slices, width))
    if pool > 1:
        shapes.append((max(1, config.input_slices // pool), width))
    return shapes


def validate_input_shape(config: ModelConfig) -> None:
    """The input grid must divide evenly down to the bottleneck."""
    factor = downsampling_factor(config.backbone)
    for name, value in (("input_slices", config.input_slices), ("input_size", config.input_size)):
        if value < factor or value % factor:
            raise ValueError(
                f"model.{name}={value} must be a positive multiple of {factor} "
                f"(the backbone halves the grid {len(config.backbone.channels) - 1} times)"
            )


def parse_block(block: str, *, levels: int) -> tuple[str, int]:
    """Split a block name into (kind, index); kind is "middle", "down" or "up"."""
    if block == "middle":
        return "middle", 0
    kind, _, index = block.partition(".")
    if kind in ("down", "up") and index.isdigit() and int(index) < levels:
        return kind, int(index)
    raise ValueError(
        f"unknown feature block {block!r}: use 'middle', 'down.<i>' or 'up.<i>' with i < {levels}"
    )


def block_module(unet: DiffusionModelUNet, block: str) -> nn.Module:
    """The submodule whose output a feature tap hooks."""
    kind, index = parse_block(block, levels=len(unet.block_out_channels))
    if kind == "middle":
        return unet.middle_block
    return (unet.down_blocks if kind == "down" else unet.up_blocks)[index]


def block_channels(config: BackboneConfig, block: str) -> int:
    """Channels of a block's output (for sizing heads without running the network)."""
    kind, index = parse_block(block, levels=len(config.channels))
    if kind == "middle":
        return config.channels[-1]
    if kind == "down":
        return config.channels[index]
    return list(reversed(config.channels))[index]


def block_scale(config: BackboneConfig, block: str) -> int:
    """Downsampling factor of a block's output grid relative to the input."""
    levels = len(config.channels)
    kind, index = parse_block(block, levels=levels)
    if kind == "middle":
        return 2 ** (levels - 1)
    if kind == "down":  # the last down block does not downsample
        return 2 ** min(index + 1, levels - 1)
    return 2 ** max(levels - 2 - index, 0)


def encoder_parameters(unet: DiffusionModelUNet) -> list[nn.Parameter]:
    """Encoder + middle block (+ time embedding) parameters: trained in `partial` mode."""
    return [p for name in ENCODER_MODULES for p in getattr(unet, name).parameters()]


def decoder_parameters(unet: DiffusionModelUNet) -> list[nn.Parameter]:
    """Decoder parameters: frozen in `partial` mode."""
    return [p for name in DECODER_MODULES for p in getattr(unet, name).parameters()]


def default_seg_taps(config: BackboneConfig, *, timestep: int) -> list[FeatureTap]:
    """The last three decoder blocks (full and half resolution) and the first encoder block,
    at a small t (the features still see the image; measured, core/models/heads.py)."""
    levels = len(config.channels)
    ups = [f"up.{i}" for i in range(levels - 1, max(levels - 4, -1), -1)]
    return [FeatureTap(timestep=timestep, block=b) for b in [*ups, "down.0"]]


def seg_taps(config: ModelConfig) -> list[FeatureTap]:
    """The segmentation taps of a model config (`heads.seg_taps`, or the default if empty)."""
    return list(config.heads.seg_taps) or default_seg_taps(
        config.backbone, timestep=config.heads.seg_timestep
    )
