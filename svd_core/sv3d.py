"""SV3D in diffusers: the UNet with its added embedding computed per frame.

SVD adds one embedding per video, `label_emb([emb(fps_id) | emb(motion) | emb(cond_aug)])`, the same for every
frame; diffusers' `UNetSpatioTemporalConditionModel` computes it once and repeats it over the frames. SV3D_p
conditions each frame on its own camera: the vector is `[emb256(cond_aug) | emb512(polar_f) | emb512(azimuth_f)]`,
one row per frame, and sgm's UNet adds `label_emb(row_f)` to frame f's time embedding. SV3D_u has the vector
`[emb256(cond_aug)]` (the same for all frames).

`SV3DUNet` is diffusers' UNet (same modules, same weights, same forward) with one change: the per-frame
embedding is computed here and handed to every down, mid and up block in place of the repeated one, through
forward pre-hooks that live for one call. Nothing of diffusers' forward is copied.
"""

from __future__ import annotations

import math

import torch
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.models.embeddings import Timesteps


class SV3DUNet(UNetSpatioTemporalConditionModel):
    """`added_time_ids` (B, F, n), or (B, n) / (B, 1, n) for the same on every frame: n ids per frame, each
    embedded with its own sinusoid width `added_embed_dims` (sv3d_u: (256,), sv3d_p: (256, 512, 512)), then
    label_emb, then added to that frame's time embedding."""

    @classmethod
    def build(cls, added_embed_dims: tuple[int, ...], **config) -> SV3DUNet:
        dims = tuple(int(d) for d in added_embed_dims)
        base = math.gcd(*dims)
        # the stock path still runs on a dummy row of width sum(dims); its result is replaced in every block
        unet = cls(addition_time_embed_dim=base, projection_class_embeddings_input_dim=sum(dims), **config)
        unet.register_to_config(added_embed_dims=dims)
        return unet

    @property
    def added_embed_dims(self) -> tuple[int, ...]:
        return tuple(self.config.added_embed_dims)

    def conditioning_vector(self, added_time_ids: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """(B*F, sum(dims)) float32: sgm's `vector`, one row per frame, each id's sinusoid [cos | sin] of its own
        width (= diffusers' Timesteps(d, flip_sin_to_cos=True, downscale_freq_shift=0))."""
        ids = added_time_ids
        if ids.dim() == 2:  # (B, n): the same ids for every frame
            ids = ids[:, None]
        if ids.dim() == 3 and ids.shape[1] == 1:
            ids = ids.expand(ids.shape[0], frames, ids.shape[-1])
        if ids.shape[:2] != (batch, frames) or ids.shape[-1] != len(self.added_embed_dims):
            raise ValueError(f"added_time_ids must be ({batch}, {frames}, {len(self.added_embed_dims)}) for this "
                             f"SV3D UNet, got {tuple(added_time_ids.shape)}")
        rows = ids.reshape(batch * frames, -1).float()
        return torch.cat([Timesteps(d, flip_sin_to_cos=True, downscale_freq_shift=0)(rows[:, j])
                          for j, d in enumerate(self.added_embed_dims)], dim=1)

    def added_embedding(self, timestep, added_time_ids: torch.Tensor, batch: int, frames: int,
                        dtype: torch.dtype) -> torch.Tensor:
        """(B*F, C): time embedding + label_emb of each frame's own vector, as sgm's VideoUNet adds them."""
        t = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], device=added_time_ids.device)
        t = t.reshape(-1).to(added_time_ids.device).expand(batch)
        emb = self.time_embedding(self.time_proj(t).to(dtype))
        aug = self.add_embedding(self.conditioning_vector(added_time_ids, batch, frames).to(emb.dtype))
        return emb.repeat_interleave(frames, dim=0) + aug

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict: bool = True):
        batch, frames = sample.shape[:2]
        emb = self.added_embedding(timestep, added_time_ids, batch, frames, sample.dtype)

        def per_frame(module, args, kwargs):
            return args, {**kwargs, "temb": emb}

        blocks = [*self.down_blocks, self.mid_block, *self.up_blocks]
        hooks = [b.register_forward_pre_hook(per_frame, with_kwargs=True) for b in blocks]
        dummy = torch.zeros(batch, self.config.projection_class_embeddings_input_dim
                            // self.config.addition_time_embed_dim, device=sample.device, dtype=sample.dtype)
        try:
            return super().forward(sample, timestep, encoder_hidden_states, added_time_ids=dummy,
                                   return_dict=return_dict)
        finally:
            for h in hooks:
                h.remove()


def family_of(unet) -> str:
    """'svd', 'sv3d_u' or 'sv3d_p' of a loaded UNet."""
    if not isinstance(unet, SV3DUNet):
        return "svd"
    return "sv3d_p" if len(unet.added_embed_dims) == 3 else "sv3d_u"


def camera_ids(family: str, cond_aug: float, polars_rad=None, azimuths_rad=None) -> torch.Tensor:
    """(F, n) or (1, 1) float32 ids of one video: sv3d_u [cond_aug]; sv3d_p [cond_aug, polar_f, azimuth_f] per
    frame, the angles given in radians as float64 and cast to float32 like sgm's embedder."""
    if family == "sv3d_u":
        return torch.tensor([[cond_aug]], dtype=torch.float32)
    if family == "sv3d_p":
        polars = torch.as_tensor(polars_rad, dtype=torch.float64)
        azimuths = torch.as_tensor(azimuths_rad, dtype=torch.float64)
        aug = torch.full_like(polars, cond_aug)
        return torch.stack([aug.float(), polars.float(), azimuths.float()], dim=1)
    raise ValueError(f"unknown SV3D family {family!r}; valid: sv3d_u, sv3d_p")
