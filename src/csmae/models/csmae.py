"""CrossSensorMAE: the encoder, the decoders, masking and losses composed (method.md sections 2-4).

Inputs are dicts sensor name -> normalised float tensor (N, C, H, W) whose channels follow
``model.sensors[name].bands``. With ``config.input_transpose`` the model swaps H and W of every
input first (imported reference checkpoints were trained on transposed images); everything
token-level (masks, ids_restore, ``pred``, ``targets``) is then in that transposed frame, while
:meth:`CrossSensorMAE.reconstruct` returns images in the user's frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import csmae.losses as losses
from csmae.masking import make_mask_plan, patchify, unpatchify
from csmae.models.config import ModelConfig
from csmae.models.decoder import CrossSensorDecoder
from csmae.models.encoder import CrossSensorEncoder
from csmae.models.layers import Attention, prefer_fused_attention, set_fused_attention
from csmae.sensors import SENSORS, Sensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pooling:
    """How final tokens (N, 1+K, D) become one descriptor, and whether a LayerNorm follows."""

    select: Callable[[Tensor], Tensor]
    norm: bool


#: pooling name -> spec. ``avg``: mean of the patch tokens (CLS excluded) + LayerNorm; ``token``: CLS.
POOLINGS: dict[str, Pooling] = {
    "avg": Pooling(select=lambda t: t[:, 1:].mean(dim=1), norm=True),
    "token": Pooling(select=lambda t: t[:, 0], norm=False),
}


@dataclass
class TrainOutput:
    """What one training forward produces (token-level tensors are in the model's token frame).

    Attributes:
        pred: {(source, target): (N, L, p*p*C_target)} reconstructions.
        mask: {sensor: (N, L)} float, 1 = masked.
        ids_restore: {sensor: (N, L)} inverse shuffles.
        features: {sensor: (N, D)} pooled descriptors of the masked views.
        targets: {sensor: (N, L, p*p*C)} patchified inputs (the reconstruction targets).
    """

    pred: dict[tuple[str, str], Tensor]
    mask: dict[str, Tensor]
    ids_restore: dict[str, Tensor]
    features: dict[str, Tensor]
    targets: dict[str, Tensor] = field(default_factory=dict)


class CrossSensorMAE(nn.Module):
    """Cross-sensor masked autoencoder (also the uni-modal MAE and the dual encoder, by config).

    Args:
        config: the architecture, masking, pooling and loss weights.
        sensors: the Sensor specs (band order, statistics); default: from ``config``.
    """

    def __init__(self, config: ModelConfig, sensors: Mapping[str, Sensor] | None = None):
        super().__init__()
        self.config = config
        self.sensors: dict[str, Sensor] = dict(sensors) if sensors is not None else config.sensor_specs()
        if tuple(self.sensors) != config.sensors:
            raise ValueError(
                f"sensor specs {list(self.sensors)} do not match config.sensors {list(config.sensors)}"
            )
        channels = {s: spec.num_channels for s, spec in self.sensors.items()}
        self.encoder = CrossSensorEncoder(config, channels)
        self.pooling = POOLINGS[config.pooling]
        self.pool_norm = nn.LayerNorm(config.embed_dim, eps=config.norm_eps) if self.pooling.norm else None
        if self.pool_norm is not None and not config.uses_features:
            # No loss reads the descriptors: keep the norm an identity instead of an untrained,
            # gradient-less parameter (DDP's "unused parameter" error).
            self.pool_norm.requires_grad_(False)
        self.decoder = CrossSensorDecoder(config, channels) if config.uses_decoder else None
        self.pairs = config.reconstruction_pairs()
        self._attention = [m for m in self.modules() if isinstance(m, Attention)]

    # ------------------------------------------------------------------ basics
    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def num_patches(self) -> int:
        return self.config.num_patches

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_bands(self, sensor: str, bands: tuple[str, ...] | list[str]) -> None:
        """Raise ValueError unless ``bands`` is exactly the order this model expects for ``sensor``."""
        expected = self.sensors[sensor].bands
        if tuple(bands) != tuple(expected):
            raise ValueError(
                f"{sensor}: band order {list(bands)} does not match the model's {list(expected)}"
            )

    def _prepare(self, batch: Mapping[str, Any], *, require_all: bool) -> dict[str, Tensor]:
        """Validate a batch, move it to the model's device and orient it (transpose if configured)."""
        if not isinstance(batch, Mapping):
            raise TypeError(f"batch must be a dict sensor -> tensor, got {type(batch).__name__}")
        c = self.config
        foreign = [k for k in batch if k in SENSORS and k not in self.sensors]
        if foreign:
            raise ValueError(
                f"batch holds sensor(s) {foreign} this model does not have; model sensors: "
                f"{list(self.sensors)}"
            )
        for s, bands in (batch.get("bands") or {}).items():
            if s in self.sensors:
                self.check_bands(s, bands)
        present = [s for s in self.sensors if s in batch]
        missing = [s for s in self.sensors if s not in batch]
        if not present or (require_all and missing):
            need = "every sensor" if require_all else "at least one sensor"
            raise ValueError(f"batch needs {need} of {list(self.sensors)}; got keys {list(batch)}")
        dev = self.device
        dtype = self.encoder.cls_tokens[self.config.sensors[0]].dtype  # the model's parameter dtype
        out: dict[str, Tensor] = {}
        for s in present:
            x = torch.as_tensor(batch[s])
            spec = self.sensors[s]
            want = (spec.num_channels, c.img_size, c.img_size)
            if x.ndim != 4 or tuple(x.shape[1:]) != want:
                raise ValueError(
                    f"{s}: expected a normalised tensor (N, {want[0]}, {want[1]}, {want[2]}) with channels "
                    f"{list(spec.bands)}, got shape {tuple(x.shape)}"
                )
            if not x.is_floating_point():
                x = x.float()
            x = x.to(dev)
            if x.dtype != dtype:  # the parameter dtype (autocast casts from there)
                x = x.to(dtype)
            out[s] = x.transpose(-2, -1) if c.input_transpose else x
        self._choose_attention(dev)
        sizes = {s: int(t.shape[0]) for s, t in out.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"sensors have different batch sizes {sizes}")
        return out

    def _choose_attention(self, device: torch.device) -> None:
        """Pick timm's attention path for this forward (config.attention; "auto": by device/precision)."""
        mode = self.config.attention
        if mode == "auto":
            lowp = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
            fused = prefer_fused_attention(device.type, lowp)
        else:
            fused = mode == "fused"
        set_fused_attention(self._attention, fused)

    def pool(self, tokens: Tensor) -> Tensor:
        """Final tokens (N, 1+K, D) -> descriptor (N, D)."""
        feat = self.pooling.select(tokens)
        return self.pool_norm(feat) if self.pool_norm is not None else feat

    # --------------------------------------------------------------- inference
    def embed(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Descriptors {sensor: (N, D)} for the sensors in ``batch``; never masks. Not L2-normalised."""
        images = self._prepare(batch, require_all=False)
        tokens = self.encoder(images)
        return {s: self.pool(t) for s, t in tokens.items()}

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Same as :meth:`embed`."""
        return self.embed(batch)

    # ---------------------------------------------------------------- training
    def _forward_masked(
        self, batch: Mapping[str, Any], noise: Mapping[str, Tensor] | None, pairs: list[tuple[str, str]]
    ) -> tuple[TrainOutput, dict[str, Tensor]]:
        c = self.config
        images = self._prepare(batch, require_all=True)
        n = next(iter(images.values())).shape[0]
        plan = make_mask_plan(
            c.mask_strategy,
            c.mask_ratio,
            c.sensors,
            n=n,
            num_tokens=c.num_patches,
            noise=noise,
            device=self.device,
        )
        tokens = self.encoder(images, {s: m.ids_keep for s, m in plan.items()})
        features = {s: self.pool(t) for s, t in tokens.items()}
        ids_restore = {s: m.ids_restore for s, m in plan.items()}
        pred = self.decoder(tokens, ids_restore, pairs) if (self.decoder is not None and pairs) else {}
        targets = {s: patchify(x, c.patch_size) for s, x in images.items()} if pairs else {}
        out = TrainOutput(
            pred=pred,
            mask={s: m.mask for s, m in plan.items()},
            ids_restore=ids_restore,
            features=features,
            targets=targets,
        )
        return out, images

    def forward_train(
        self, batch: Mapping[str, Any], noise: Mapping[str, Tensor] | None = None
    ) -> TrainOutput:
        """Masked forward: reconstructions of the enabled pairs, masks, ids_restore, pooled features.

        Args:
            batch: {sensor: (N, C, H, W)} normalised images of every model sensor.
            noise: optional {sensor: (N, L)} masking noise (drawn when absent) for exact reproduction.
        """
        return self._forward_masked(batch, noise, self.pairs)[0]

    def loss_weights(self) -> dict[str, float]:
        c = self.config
        return {"umr": c.w_umr, "cmr": c.w_cmr, "mim": c.w_mim, "mde": c.w_mde}

    def training_loss(
        self,
        batch: Mapping[str, Any] | None = None,
        noise: Mapping[str, Tensor] | None = None,
        out: TrainOutput | None = None,
        *,
        gather: losses.RowGatherLike | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted total loss and the unweighted terms (plus ``reconstruction`` = their sum, ``loss``).

        ``gather``: under DDP, gathers the descriptors of every rank so that the MIM negatives are
        the whole global batch (``csmae.training.gather.RowGather``; see ``losses.nt_xent``).
        """
        c = self.config
        if out is None:
            if batch is None:
                raise ValueError("training_loss needs a batch or a TrainOutput")
            out = self.forward_train(batch, noise)
        terms = losses.reconstruction_terms(out.pred, out.targets, out.mask, norm_pix=c.norm_pix_loss)
        if terms:
            terms["reconstruction"] = torch.stack(list(terms.values())).sum()
        if c.w_mim > 0 or c.w_mde > 0:
            z1, z2 = (out.features[s] for s in c.sensors[:2])
            if c.w_mim > 0:
                terms["mim"] = losses.nt_xent(z1, z2, c.mim_tau, gather=gather)
            if c.w_mde > 0:
                terms["mde"] = losses.mde_loss(z1, z2)
        total = losses.weighted_total(terms, self.loss_weights())
        terms["loss"] = total
        return total, terms

    def reconstruct(
        self, batch: Mapping[str, Any], noise: Mapping[str, Tensor] | None = None
    ) -> dict[str, Any]:
        """Images for pictures (normalised units, the user's frame), every pair the decoder can do.

        Returns {"input": {s: (N,C,H,W)}, "masked": {s: ...} (masked patches zeroed),
        "pred": {(src, tgt): (N,C_tgt,H,W)}}.
        """
        if self.decoder is None:
            raise ValueError(f"model {self.config.name!r} has no decoder, it cannot reconstruct images")
        pairs = [(a, b) for a in self.sensors for b in self.sensors]
        out, images = self._forward_masked(batch, noise, pairs)
        p = self.config.patch_size
        back = (lambda x: x.transpose(-2, -1)) if self.config.input_transpose else (lambda x: x)
        masked = {}
        for s, x in images.items():
            keep = (1 - out.mask[s]).to(x.dtype)[:, :, None].expand(-1, -1, p * p * x.shape[1])
            masked[s] = back(x * unpatchify(keep, p, x.shape[1]))
        return {
            "input": {s: back(x) for s, x in images.items()},
            "masked": masked,
            "pred": {k: back(unpatchify(v, p, self.sensors[k[1]].num_channels)) for k, v in out.pred.items()},
        }

    # --------------------------------------------------------------- save/load
    def save_pretrained(self, path: str | Path) -> Path:
        """Write model.safetensors + config.json + README.md (+ manifest.json) atomically to ``path``."""
        from csmae.models.io import save_pretrained

        return save_pretrained(self, path)

    def load_weights(self, state: Mapping[str, Tensor], *, source: str = "checkpoint") -> None:
        """Load a state dict, raising a clear error when it belongs to another variant or size."""
        from csmae.models.io import load_weights

        load_weights(self, state, source=source)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"name={c.name}, sensors={list(self.sensors)}, D={c.embed_dim}, private={c.private_depth}, "
            f"shared={c.shared_depth}, decoder={c.decoder_sharing if self.decoder is not None else 'none'}"
        )
