"""Stability's single-file SVD and SV3D checkpoints -> a diffusers `StableVideoDiffusionPipeline`.

1. read the safetensors header (shapes only) and identify the layout;
2. infer the architecture from shapes and build every module empty (accelerate's `init_empty_weights`);
3. plan where each sgm tensor goes (`convert.map_key`) and check the plan covers every parameter, shape for shape;
4. stream the tensors one at a time from `safe_open` (on CUDA straight into GPU memory), cast to the target dtype
   on the target device, assign them as the modules' parameters;
5. match sgm's GroupNorm eps in the UNet's res-blocks and assemble the pipeline.

Peak host memory is the kept weights plus one tensor in flight; keys the reference never uses are never read.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers
from accelerate import init_empty_weights
from diffusers.models.resnet import SpatioTemporalResBlock
from safetensors import SafetensorError, safe_open
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
from transformers.initialization import no_init_weights

from .checkpoints import (
    detect_family,
    detect_layout,
    diffusers_weights_variant,
    inspect_checkpoint,
    read_safetensors_header,
    shapes_of,
)
from .convert import (
    CLIP_VISUAL,
    FIRST_STAGE,
    OPS,
    UNET,
    Architecture,
    Target,
    infer_architecture,
    map_key,
    target_shape,
)
from .errors import CheckpointError
from .sv3d import SV3DUNet


@contextmanager
def _without_torchvision_fallback_warning():
    """diffusers' SVD pipeline module does `from transformers import CLIPImageProcessor`; without torchvision,
    transformers answers with CLIPImageProcessorPil and logs a warning on the terminal at every start. We build
    the Pil processor ourselves (build_feature_extractor), so that one message is dropped; nothing else is."""
    log = logging.getLogger("transformers.utils.import_utils")

    def drop(record):
        return "falling back to `CLIPImageProcessorPil`" not in record.getMessage()
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


with _without_torchvision_fallback_warning():
    from diffusers import (
        AutoencoderKL,
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SGM_GROUPNORM_EPS = 1e-5  # sgm's ResBlock GroupNorm; diffusers uses 1e-6 in some SpatioTemporalResBlocks


def available_devices() -> list[str]:
    """The device types this machine can sample on, best first: cuda, mps, cpu."""
    out = ["cuda"] if torch.cuda.is_available() else []
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out + ["cpu"]


def default_device() -> torch.device:
    return torch.device(available_devices()[0])


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "cpu" else torch.float16


def resolve_device_dtype(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    device = torch.device(device) if device is not None else default_device()
    if isinstance(dtype, str):
        try:
            dtype = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
                     "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}[dtype]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r}; valid: float32, float16, bfloat16") from None
    return device, dtype or default_dtype(device)


# --------------------------------------------------------------------------------------------- empty modules

def build_unet(arch: Architecture) -> UNetSpatioTemporalConditionModel:
    """diffusers' UNet for SVD; for SV3D its subclass with the added embedding per frame (svd_core.sv3d)."""
    down = tuple("CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in arch.unet_attention)
    up = tuple("CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal"
               for a in reversed(arch.unet_attention))
    config = dict(sample_size=96, in_channels=arch.unet_in_channels, out_channels=arch.unet_out_channels,
                  down_block_types=down, up_block_types=up, block_out_channels=arch.unet_channels,
                  layers_per_block=arch.unet_layers_per_block, cross_attention_dim=arch.unet_context_dim,
                  transformer_layers_per_block=arch.unet_transformer_depth, num_attention_heads=arch.unet_heads,
                  num_frames=25)
    dims = arch.added_embed_dims
    if len(dims) == 3 and len(set(dims)) == 1:  # SVD: [fps_id | motion_bucket_id | cond_aug], one per video
        return UNetSpatioTemporalConditionModel(addition_time_embed_dim=dims[0],
                                                projection_class_embeddings_input_dim=sum(dims), **config)
    return SV3DUNet.build(dims, **config)


def build_vae(arch: Architecture):
    common = dict(in_channels=3, out_channels=3, block_out_channels=arch.vae_channels,
                  layers_per_block=arch.vae_layers_per_block, latent_channels=arch.vae_latent_channels,
                  sample_size=768, scaling_factor=0.18215, force_upcast=True)
    n = len(arch.vae_channels)
    if arch.temporal_decoder:
        return AutoencoderKLTemporalDecoder(down_block_types=("DownEncoderBlock2D",) * n, **common)
    return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         act_fn="silu", norm_num_groups=32, use_post_quant_conv=arch.vae_post_quant_conv, **common)


def build_image_encoder(arch: Architecture) -> CLIPVisionModelWithProjection:
    config = CLIPVisionConfig(hidden_size=arch.clip_width, intermediate_size=arch.clip_mlp,
                              num_hidden_layers=arch.clip_layers, num_attention_heads=arch.clip_heads,
                              image_size=arch.clip_image_size, patch_size=arch.clip_patch,
                              projection_dim=arch.clip_embed_dim, hidden_act="gelu", layer_norm_eps=1e-5)
    return CLIPVisionModelWithProjection(config)


def build_scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler.from_config(json.loads((CONFIG_DIR / "scheduler_config.json").read_text()))


def build_feature_extractor():
    # The pipeline only normalises tensors with it; the PIL backend needs no torchvision.
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(**json.loads((CONFIG_DIR / "preprocessor_config.json").read_text()))


def match_sgm_groupnorm_eps(unet: torch.nn.Module) -> None:
    """sgm normalises every UNet res-block with GroupNorm(eps=1e-5); stock diffusers uses 1e-6 in the
    res-blocks of its cross-attention down blocks and all up blocks. Matching it brings the UNet's output from
    2e-5 to 2e-6 of Stability's (float32)."""
    for block in unet.modules():
        if isinstance(block, SpatioTemporalResBlock):
            for m in block.modules():
                if isinstance(m, torch.nn.GroupNorm):
                    m.eps = SGM_GROUPNORM_EPS


# ------------------------------------------------------------------------------------------------- planning

def plan_load(shapes: dict[str, list[int]], arch: Architecture, modules: dict[str, torch.nn.Module],
              name: str = "the checkpoint") -> dict[str, list[Target]]:
    """sgm key -> targets, in file order; raises CheckpointError (naming the file `name`) unless the plan fills
    every parameter exactly."""
    plan: dict[str, list[Target]] = {}
    unknown = []
    for key in shapes:
        targets = map_key(key, arch)
        if targets is None:
            unknown.append(key)
        elif targets:
            plan[key] = targets
    if unknown:
        raise CheckpointError(f"{name} has {len(unknown)} unexpected tensor(s) for an SVD checkpoint (e.g. "
                              f"{unknown[0]}): the file is not a Stability SVD release")
    expected = {c: dict(m.named_parameters()) for c, m in modules.items()}
    seen = defaultdict(set)
    for key, targets in plan.items():
        for t in targets:
            param = expected[t.component].get(t.key)
            if param is None:
                raise CheckpointError(f"{name}: {key} maps to no parameter of the {t.component} ({t.key}): the "
                                      "file's architecture is not one this loader knows")
            got = target_shape(t.op, shapes[key])
            if tuple(param.shape) != got:
                raise CheckpointError(f"{name}: {key} has shape {list(shapes[key])}, the {t.component} expects "
                                      f"{list(param.shape)}: the file is corrupt or of another architecture")
            seen[t.component].add(t.key)
    missing = [f"{c}.{k}" for c, params in expected.items() for k in params if k not in seen[c]]
    if missing:
        raise CheckpointError(f"{name} lacks {len(missing)} tensor(s) the model needs (e.g. {missing[0]}): the file "
                              "is incomplete; download it again")
    return plan


def check_interfaces(shapes: dict[str, list[int]], arch: Architecture, name: str = "the checkpoint") -> None:
    """The sizes where the modules meet, each read off a different tensor, must agree (a module is built from
    the file's own shapes, so a wrong shape there loads and fails only in the middle of sampling): the UNet takes
    the noisy latent and the image latent (2 x the VAE's latent channels) and returns a latent, and its
    cross-attention reads the image encoder's embedding. Raises CheckpointError naming the file and tensor."""
    latent = FIRST_STAGE + "decoder.conv_in.weight"
    checks = (
        (UNET + "input_blocks.0.0.weight", arch.unet_in_channels, 2 * arch.vae_latent_channels,
         f"input channels (the noisy and the image latent, {arch.vae_latent_channels} each by {latent})"),
        (UNET + "out.2.weight", arch.unet_out_channels, arch.vae_latent_channels,
         f"output channels (one latent, {arch.vae_latent_channels} by {latent})"),
        (UNET + "middle_block.1.transformer_blocks.0.attn2.to_k.weight", arch.unet_context_dim, arch.clip_embed_dim,
         f"context width (the image embedding, {arch.clip_embed_dim} by {CLIP_VISUAL}proj)"),
    )
    for key, got, want, what in checks:
        if got != want:
            raise CheckpointError(f"{name}: {key} has shape {list(shapes[key])}, which gives the UNet {got} {what}, "
                                  f"not {want}: the file is corrupt or of another architecture")


def empty_modules(arch: Architecture) -> dict[str, torch.nn.Module]:
    """unet, vae and image_encoder of `arch` with parameters on the meta device (no memory): for loading, key
    coverage checks and FLOP counts. No initialisation runs (transformers' `no_init_weights`): random init of
    meta tensors is pointless and slow (CLIP's normal_ on meta goes through Python prims)."""
    with no_init_weights(), init_empty_weights():
        return {"unet": build_unet(arch), "vae": build_vae(arch), "image_encoder": build_image_encoder(arch)}


def _parameter_slots(module: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, str]]:
    """'a.b.weight' -> (the module a.b, 'weight'), for every parameter."""
    return {f"{prefix}.{name}" if prefix else name: (owner, name)
            for prefix, owner in module.named_modules() for name in owner._parameters}


# ---------------------------------------------------------------------------------------------------- loading

def load_components(path, *, device=None, dtype=None) -> dict[str, torch.nn.Module]:
    """unet, vae and image_encoder from an sgm single-file checkpoint, in `dtype` on `device`."""
    path = Path(path)
    device, dtype = resolve_device_dtype(device, dtype)
    header = read_safetensors_header(path)
    shapes = shapes_of(header)
    detect_layout(shapes, path.name)
    family = detect_family(shapes, path.name)
    try:
        arch = infer_architecture(shapes, header.get("__metadata__"), family)
    except (KeyError, IndexError, ValueError) as e:
        raise CheckpointError(f"cannot read the architecture of {path.name} ({e}): the file is incomplete or "
                              "not an SVD release") from None
    check_interfaces(shapes, arch, path.name)
    modules = empty_modules(arch)
    plan = plan_load(shapes, arch, modules, path.name)
    slots = {c: _parameter_slots(m) for c, m in modules.items()}
    # On CUDA safetensors reads each tensor straight into GPU memory and the cast runs there: no CPU copy of the
    # model, at most one tensor in flight. Parameters are assigned, not copied into (the meta ones hold nothing).
    read_on = str(device) if device.type == "cuda" else "cpu"
    try:
        with safe_open(str(path), framework="pt", device=read_on) as f:
            for key in sorted(plan, key=lambda k: header[k]["data_offsets"][0]):  # file order: sequential reads
                tensor = f.get_tensor(key)
                targets = plan[key]
                for t in targets:
                    value = OPS[t.op](tensor).to(device=device, dtype=dtype).contiguous()
                    owner, name = slots[t.component][t.key]
                    owner._parameters[name] = torch.nn.Parameter(value, requires_grad=False)
                del tensor
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path.name} could not be read ({e}): the file is corrupt; download it again") from None
    for m in modules.values():
        if device.type != "cpu":
            m.to(device)  # non-persistent buffers (CLIP position ids) were built on the CPU
        m.eval()  # parameters were made with requires_grad=False
    match_sgm_groupnorm_eps(modules["unet"])
    return modules


def load_pipeline(path, *, device=None, dtype=None) -> StableVideoDiffusionPipeline:
    """A ready `StableVideoDiffusionPipeline` from Stability's single-file checkpoint (svd*.safetensors, sgm key
    layout, float32 or float16) or from a diffusers folder with model_index.json.

    device: default CUDA, else MPS, else CPU. dtype: default float16 on an accelerator, float32 on the CPU.
    Nothing is downloaded. Raises CheckpointError with a one-line reason for anything that is not SVD.
    """
    path = Path(path)
    device, dtype = resolve_device_dtype(device, dtype)
    info = inspect_checkpoint(path)  # every "this is not an SVD checkpoint" answer comes from here
    if info.diffusers_folder:
        try:
            pipe = StableVideoDiffusionPipeline.from_pretrained(
                path, torch_dtype=dtype, variant=diffusers_weights_variant(path, dtype), local_files_only=True)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot load the diffusers folder {path}: {str(e).splitlines()[0]}") from None
        pipe.to(device)
        match_sgm_groupnorm_eps(pipe.unet)
    else:
        modules = load_components(path, device=device, dtype=dtype)
        # the frames the variant was trained for, as Stability's diffusers repos record it (14 svd, 25 svd_xt):
        # a folder saved from this pipeline is then identified from its configs like theirs
        modules["unet"].register_to_config(num_frames=info.variant.num_frames)
        pipe = StableVideoDiffusionPipeline(scheduler=build_scheduler(), feature_extractor=build_feature_extractor(),
                                            **modules)
    pipe.set_progress_bar_config(disable=True)
    return pipe
