"""Stability "sgm" key names -> diffusers / transformers key names.

This is the only hand-written mapping in the project. Everything here is a pure function of key names and
tensor shapes: no tensor is read, so the same code checks a 9.56 GB checkpoint's layout from its header alone.

A mapping is a list of `Target(component, key, op)`: which pipeline component receives the tensor, under which
name, and how the sgm tensor is reshaped on the way (`OPS`). One sgm key can feed several targets (OpenCLIP's fused
q/k/v projection); keys the reference code never uses at inference map to nothing (`is_unused`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

UNET = "model.diffusion_model."
CLIP = "conditioner.embedders.0.open_clip.model."
CLIP_VISUAL = CLIP + "visual."
COND_VAE = "conditioner.embedders.3.encoder."  # encoder + quant_conv the reference conditions on
COND_VAE_SV3D = "conditioner.embedders.1.encoder."  # the same in SV3D (no fps / motion embedders before it)
FIRST_STAGE = "first_stage_model."

# Keys Stability's inference never reads (see tests/fixtures/README.md): the OpenCLIP text leftovers, the unused
# decoder half of the conditioning autoencoder, and the first stage's own encoder.
UNUSED_PREFIXES = (
    COND_VAE + "decoder.",
    COND_VAE + "post_quant_conv.",
    COND_VAE_SV3D + "decoder.",
    COND_VAE_SV3D + "post_quant_conv.",
    FIRST_STAGE + "encoder.",
    FIRST_STAGE + "quant_conv.",
    CLIP + "transformer.",  # text tower blocks (absent in the released files, present in some exports)
    CLIP + "token_embedding.",
    CLIP + "ln_final.",
)
UNUSED_KEYS = frozenset({CLIP + "positional_embedding", CLIP + "text_projection", CLIP + "logit_scale"})


def is_unused(key: str) -> bool:
    return key in UNUSED_KEYS or key.startswith(UNUSED_PREFIXES)


@dataclass(frozen=True)
class Target:
    component: str  # "unet" | "vae" | "image_encoder"
    key: str
    op: str = "copy"


def _chunk(i: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: t.chunk(3, dim=0)[i]


OPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "copy": lambda t: t,
    "transpose": lambda t: t.t(),  # OpenCLIP `proj` (width, embed) -> Linear weight (embed, width)
    "conv1x1_to_linear": lambda t: t.reshape(t.shape[0], t.shape[1]),  # VAE attention q/k/v/proj_out
    "q": _chunk(0),
    "k": _chunk(1),
    "v": _chunk(2),
}


def target_shape(op: str, shape: Sequence[int]) -> tuple[int, ...]:
    """The shape `OPS[op]` produces from a tensor of `shape`, computed without data."""
    return tuple(OPS[op](torch.empty(tuple(shape), device="meta")).shape)


# ----------------------------------------------------------------------------------------------------- UNet

_UNET_RES = [
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "conv_shortcut."),
]
_TRANSFORMER_STARTS = ("norm.", "proj_in.", "proj_out.", "transformer_blocks.", "time_stack.", "time_pos_embed.",
                       "time_mixer.")


def _sub(rest: str, table: Sequence[tuple[str, str]]) -> str | None:
    for old, new in table:
        if rest.startswith(old):
            return new + rest[len(old):]
    return None


def _unet_resblock(rest: str) -> str | None:
    if rest == "time_mixer.mix_factor":
        return rest
    if rest.startswith("time_stack."):
        sub = _sub(rest[len("time_stack."):], _UNET_RES)
        return None if sub is None else "temporal_res_block." + sub
    sub = _sub(rest, _UNET_RES)
    return None if sub is None else "spatial_res_block." + sub


def _unet_transformer(rest: str) -> str:
    rest = re.sub(r"^time_stack\.", "temporal_transformer_blocks.", rest)
    rest = re.sub(r"^time_pos_embed\.0\.", "time_pos_embed.linear_1.", rest)
    return re.sub(r"^time_pos_embed\.2\.", "time_pos_embed.linear_2.", rest)


def map_unet_key(key: str, layers_per_block: int) -> str | None:
    """sgm `model.diffusion_model.*` key -> diffusers UNetSpatioTemporalConditionModel key (None: not a UNet key
    this mapping knows)."""
    if not key.startswith(UNET):
        return None
    k = key[len(UNET):]
    fixed = {
        "time_embed.0.": "time_embedding.linear_1.",
        "time_embed.2.": "time_embedding.linear_2.",
        "label_emb.0.0.": "add_embedding.linear_1.",
        "label_emb.0.2.": "add_embedding.linear_2.",
        "input_blocks.0.0.": "conv_in.",
        "out.0.": "conv_norm_out.",
        "out.2.": "conv_out.",
    }
    sub = _sub(k, list(fixed.items()))
    if sub is not None:
        return sub
    per_level = layers_per_block + 1
    m = re.match(r"input_blocks\.(\d+)\.(\d+)\.(.+)$", k)
    if m:
        i, part, rest = int(m[1]), int(m[2]), m[3]
        level, j = divmod(i - 1, per_level)
        if j == layers_per_block:  # the downsampler closing a level
            return f"down_blocks.{level}.downsamplers.0.conv.{rest[3:]}" if rest.startswith("op.") else None
        if part == 0:
            sub = _unet_resblock(rest)
            return None if sub is None else f"down_blocks.{level}.resnets.{j}.{sub}"
        return f"down_blocks.{level}.attentions.{j}.{_unet_transformer(rest)}"
    m = re.match(r"middle_block\.(\d+)\.(.+)$", k)
    if m:
        part, rest = int(m[1]), m[2]
        if part == 1:
            return f"mid_block.attentions.0.{_unet_transformer(rest)}"
        sub = _unet_resblock(rest)
        return None if sub is None else f"mid_block.resnets.{part // 2}.{sub}"
    m = re.match(r"output_blocks\.(\d+)\.(\d+)\.(.+)$", k)
    if m:
        i, part, rest = int(m[1]), int(m[2]), m[3]
        level, j = divmod(i, per_level)
        if part == 0:
            sub = _unet_resblock(rest)
            return None if sub is None else f"up_blocks.{level}.resnets.{j}.{sub}"
        if rest.startswith("conv."):  # upsampler: output_blocks.i.1.conv (no attention) or .2.conv
            return f"up_blocks.{level}.upsamplers.0.{rest}"
        if rest.startswith(_TRANSFORMER_STARTS):
            return f"up_blocks.{level}.attentions.{j}.{_unet_transformer(rest)}"
    return None


# ------------------------------------------------------------------------------------------------------ VAE

_VAE_RES = [("nin_shortcut.", "conv_shortcut."), ("norm1.", "norm1."), ("conv1.", "conv1."), ("norm2.", "norm2."),
            ("conv2.", "conv2.")]
_VAE_TEMPORAL_RES = [("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("out_layers.0.", "norm2."),
                     ("out_layers.3.", "conv2.")]


def _vae_resblock(rest: str, temporal: bool) -> str | None:
    if not temporal:
        return _sub(rest, _VAE_RES)
    if rest.startswith("mix_factor"):
        return "time_mixer." + rest
    if rest.startswith("time_stack."):
        sub = _sub(rest[len("time_stack."):], _VAE_TEMPORAL_RES)
        return None if sub is None else "temporal_res_block." + sub
    sub = _sub(rest, _VAE_RES)
    return None if sub is None else "spatial_res_block." + sub


def _vae_attention(rest: str) -> tuple[str, str] | None:
    table = {"norm.": ("group_norm.", "copy"), "q.": ("to_q.", "conv1x1_to_linear"),
             "k.": ("to_k.", "conv1x1_to_linear"), "v.": ("to_v.", "conv1x1_to_linear"),
             "proj_out.": ("to_out.0.", "conv1x1_to_linear")}
    for old, (new, op) in table.items():
        if rest.startswith(old):
            param = rest[len(old):]
            return new + param, (op if param == "weight" else "copy")
    return None


def map_vae_coder_key(k: str, side: str, num_levels: int, temporal: bool) -> tuple[str, str] | None:
    """sgm Encoder/Decoder sub-key (after `encoder.` / `decoder.`) -> (diffusers sub-key, op)."""
    simple = {"conv_in.": "conv_in.", "norm_out.": "conv_norm_out."}
    if temporal and k.startswith("conv_out.time_mix_conv."):
        return "time_conv_out." + k[len("conv_out.time_mix_conv."):], "copy"
    if k.startswith("conv_out."):
        return k, "copy"
    sub = _sub(k, list(simple.items()))
    if sub is not None:
        return sub, "copy"
    m = re.match(r"mid\.block_([12])\.(.+)$", k)
    if m:
        sub = _vae_resblock(m[2], temporal)
        return None if sub is None else (f"mid_block.resnets.{int(m[1]) - 1}.{sub}", "copy")
    m = re.match(r"mid\.attn_1\.(.+)$", k)
    if m:
        sub = _vae_attention(m[1])
        return None if sub is None else ("mid_block.attentions.0." + sub[0], sub[1])
    word, blocks, sampler = ("down", "down_blocks", "downsample") if side == "encoder" else ("up", "up_blocks",
                                                                                         "upsample")
    m = re.match(rf"{word}\.(\d+)\.(.+)$", k)
    if m:
        level = int(m[1]) if side == "encoder" else num_levels - 1 - int(m[1])  # sgm counts up blocks backwards
        rest = m[2]
        if rest.startswith(f"{sampler}.conv."):
            return f"{blocks}.{level}.{sampler}rs.0.conv.{rest[len(sampler) + 6:]}", "copy"
        m2 = re.match(r"block\.(\d+)\.(.+)$", rest)
        if m2:
            sub = _vae_resblock(m2[2], temporal and side == "decoder")
            return None if sub is None else (f"{blocks}.{level}.resnets.{m2[1]}.{sub}", "copy")
    return None


def map_vae_key(key: str, num_levels: int, temporal: bool) -> tuple[str, str] | None:
    cond = COND_VAE if key.startswith(COND_VAE) else COND_VAE_SV3D
    if key.startswith(cond + "encoder."):
        sub = map_vae_coder_key(key[len(cond + "encoder."):], "encoder", num_levels, temporal=False)
        return None if sub is None else ("encoder." + sub[0], sub[1])
    if key.startswith(cond + "quant_conv."):
        return key[len(cond):], "copy"
    if key.startswith(FIRST_STAGE + "decoder."):
        sub = map_vae_coder_key(key[len(FIRST_STAGE + "decoder."):], "decoder", num_levels, temporal)
        return None if sub is None else ("decoder." + sub[0], sub[1])
    if key.startswith(FIRST_STAGE + "post_quant_conv."):
        return key[len(FIRST_STAGE):], "copy"
    return None


# --------------------------------------------------------------------------------------------- OpenCLIP ViT

def map_clip_key(key: str) -> list[tuple[str, str]] | None:
    if not key.startswith(CLIP_VISUAL):
        return None
    k = key[len(CLIP_VISUAL):]
    fixed = {
        "class_embedding": "vision_model.embeddings.class_embedding",
        "positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    }
    if k in fixed:
        return [(fixed[k], "copy")]
    if k == "proj":
        return [("visual_projection.weight", "transpose")]
    sub = _sub(k, [("ln_pre.", "vision_model.pre_layrnorm."), ("ln_post.", "vision_model.post_layernorm.")])
    if sub is not None:
        return [(sub, "copy")]
    m = re.match(r"transformer\.resblocks\.(\d+)\.(.+)$", k)
    if not m:
        return None
    layer, rest = f"vision_model.encoder.layers.{m[1]}.", m[2]
    m2 = re.match(r"attn\.in_proj_(weight|bias)$", rest)
    if m2:
        return [(f"{layer}self_attn.{x}_proj.{m2[1]}", x) for x in ("q", "k", "v")]
    sub = _sub(rest, [("attn.out_proj.", "self_attn.out_proj."), ("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."),
                      ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2.")])
    return None if sub is None else [(layer + sub, "copy")]


# ---------------------------------------------------------------------------------------- the whole mapping

@dataclass(frozen=True)
class Architecture:
    """What the mapping and the module configs need, all read off tensor shapes (head widths excepted)."""

    temporal_decoder: bool
    vae_post_quant_conv: bool  # SV3D's first stage has none
    added_embed_dims: tuple[int, ...]  # sinusoid width of each added id: SVD 3 x 256, sv3d_u 256, sv3d_p 256/512/512
    unet_layers_per_block: int
    unet_channels: tuple[int, ...]
    unet_attention: tuple[bool, ...]
    unet_in_channels: int
    unet_out_channels: int
    unet_context_dim: int
    unet_adm_channels: int
    unet_transformer_depth: int
    unet_head_channels: int
    vae_channels: tuple[int, ...]
    vae_layers_per_block: int
    vae_latent_channels: int
    clip_width: int
    clip_layers: int
    clip_mlp: int
    clip_patch: int
    clip_image_size: int
    clip_embed_dim: int
    clip_head_width: int

    @property
    def unet_heads(self) -> tuple[int, ...]:
        return tuple(c // self.unet_head_channels for c in self.unet_channels)

    @property
    def clip_heads(self) -> int:
        return self.clip_width // self.clip_head_width

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)


# Head widths are not visible in any tensor shape. Stability's released files use 64-wide UNet heads and
# OpenCLIP ViT-H/14 (80-wide heads); the tiny test architecture uses 16 and 32. A file can state its own
# in its safetensors metadata (`make-tiny` does).
KNOWN_UNET_HEAD_CHANNELS = {320: 64, 32: 16}
KNOWN_CLIP_HEAD_WIDTH = {1280: 80, 64: 32}
META_UNET_HEAD_CHANNELS = "svd_studio.unet_head_channels"
META_CLIP_HEAD_WIDTH = "svd_studio.clip_head_width"


def _count(keys: Sequence[str], pattern: str) -> set[int]:
    rx = re.compile(pattern)
    return {int(m[1]) for k in keys if (m := rx.match(k))}


def added_embed_dims(adm: int, family: str) -> tuple[int, ...]:
    """How the added conditioning vector of width `adm` splits into sinusoid embeddings, one per id: SVD
    [fps_id | motion_bucket_id | cond_aug] in thirds; sv3d_u [cond_aug]; sv3d_p [cond_aug | polar | azimuth] in
    the ratio 1:2:2 (256/512/512 at full size)."""
    if family == "svd":
        return (adm // 3,) * 3
    if family == "sv3d_u":
        return (adm,)
    if family == "sv3d_p":
        return (adm // 5, 2 * adm // 5, 2 * adm // 5)
    raise ValueError(f"unknown model family {family!r}; valid: svd, sv3d_u, sv3d_p")


def infer_architecture(shapes: Mapping[str, Sequence[int]], metadata: Mapping[str, str] | None = None,
                       family: str = "svd") -> Architecture:
    """Read the architecture off the checkpoint's key names and shapes (`family` from
    checkpoints.detect_family). Raises KeyError on a missing key."""
    metadata = metadata or {}
    keys = list(shapes)
    conv_in = shapes[UNET + "input_blocks.0.0.weight"]
    downs = sorted(_count(keys, re.escape(UNET) + r"input_blocks\.(\d+)\.0\.op\.weight"))
    num_levels = len(downs) + 1
    n_input = max(_count(keys, re.escape(UNET) + r"input_blocks\.(\d+)\.")) + 1
    layers = (n_input - num_levels) // num_levels
    channels, attention = [], []
    for level in range(num_levels):
        first = 1 + level * (layers + 1)
        channels.append(shapes[f"{UNET}input_blocks.{first}.0.out_layers.3.weight"][0])
        attention.append(f"{UNET}input_blocks.{first}.1.proj_in.weight" in shapes)
    depth = len(_count(keys, re.escape(UNET) + r"middle_block\.1\.transformer_blocks\.(\d+)\."))
    mc = channels[0]
    head_channels = int(metadata.get(META_UNET_HEAD_CHANNELS, KNOWN_UNET_HEAD_CHANNELS.get(mc, 64)))

    dec = FIRST_STAGE + "decoder."
    vae_levels = len(_count(keys, re.escape(dec) + r"up\.(\d+)\."))
    vae_channels = tuple(shapes[f"{dec}up.{i}.block.0.conv2.weight"][0] for i in range(vae_levels))
    cond_vae = COND_VAE_SV3D if family != "svd" else COND_VAE
    vae_layers = len(_count(keys, re.escape(cond_vae) + r"encoder\.down\.0\.block\.(\d+)\."))

    width = shapes[CLIP_VISUAL + "class_embedding"][0]
    patch = shapes[CLIP_VISUAL + "conv1.weight"][-1]
    n_pos = shapes[CLIP_VISUAL + "positional_embedding"][0]
    head_width = int(metadata.get(META_CLIP_HEAD_WIDTH, KNOWN_CLIP_HEAD_WIDTH.get(width, 64)))
    arch = Architecture(
        temporal_decoder=dec + "conv_out.time_mix_conv.weight" in shapes,
        vae_post_quant_conv=FIRST_STAGE + "post_quant_conv.weight" in shapes,
        added_embed_dims=added_embed_dims(shapes[UNET + "label_emb.0.0.weight"][1], family),
        unet_layers_per_block=layers,
        unet_channels=tuple(channels),
        unet_attention=tuple(attention),
        unet_in_channels=conv_in[1],
        unet_out_channels=shapes[UNET + "out.2.weight"][0],
        unet_context_dim=shapes[UNET + "middle_block.1.transformer_blocks.0.attn2.to_k.weight"][1],
        unet_adm_channels=shapes[UNET + "label_emb.0.0.weight"][1],
        unet_transformer_depth=depth,
        unet_head_channels=head_channels,
        vae_channels=vae_channels,
        vae_layers_per_block=vae_layers,
        vae_latent_channels=shapes[dec + "conv_in.weight"][1],
        clip_width=width,
        clip_layers=len(_count(keys, re.escape(CLIP_VISUAL) + r"transformer\.resblocks\.(\d+)\.")),
        clip_mlp=shapes[CLIP_VISUAL + "transformer.resblocks.0.mlp.c_fc.weight"][0],
        clip_patch=patch,
        clip_image_size=int(math.isqrt(n_pos - 1)) * patch,
        clip_embed_dim=shapes[CLIP_VISUAL + "proj"][1],
        clip_head_width=head_width,
    )
    bad = [c for c in arch.unet_channels if c % head_channels] + ([width] if width % head_width else [])
    if bad:
        raise ValueError(f"head width does not divide channel count(s) {bad}; set {META_UNET_HEAD_CHANNELS} / "
                         f"{META_CLIP_HEAD_WIDTH} in the file's metadata")
    return arch


def map_key(key: str, arch: Architecture) -> list[Target] | None:
    """All targets of one sgm key; [] for a key the reference never uses; None for a key nobody knows."""
    if is_unused(key):
        return []
    if key.startswith(UNET):
        k = map_unet_key(key, arch.unet_layers_per_block)
        return None if k is None else [Target("unet", k)]
    if key.startswith(CLIP_VISUAL):
        ks = map_clip_key(key)
        return None if ks is None else [Target("image_encoder", k, op) for k, op in ks]
    vk = map_vae_key(key, len(arch.vae_channels), arch.temporal_decoder)
    return None if vk is None else [Target("vae", vk[0], vk[1])]
