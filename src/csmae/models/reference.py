"""Import checkpoints of the public reference implementation of CSMAE (github.com/jakhac/CSMAE).

The reference model takes one 12-channel image ordered B02 B03 B04 B08 B05 B06 B07 B11 B12 B8A |
VH VV (S2 = first ten, S1 = last two) and was trained on transposed images (H and W swapped). The
imported model records those band orders in its Sensor specs and ``input_transpose=True``, so
users pass normally oriented images per sensor and get the reference's descriptors.

Parameter names are mapped by an explicit table (:func:`reference_key_table`), built from the
config so that it covers any private/shared depth split, any decoder depth and both decoder
layouts. The reference's fixed position tables are checked against ours, not loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from csmae.models.config import SIZES, ModelConfig
from csmae.models.layers import sincos_2d_table
from csmae.sensors import REFERENCE_S1_BANDS, REFERENCE_S2_BANDS

log = logging.getLogger(__name__)

#: Parameters of one timm ViT block (same names in the reference and here).
BLOCK_PARAMS = (
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)
WB = ("weight", "bias")

#: Per-sensor module names in the reference backbone:
#: sensor -> (stem, CLS token, private blocks, private norm).
REFERENCE_SENSOR_NAMES = {
    "s1": ("backbone.patch_embed.proj", "backbone.cls_token", "backbone.blocks_s1", "backbone.norm_s1"),
    "s2": ("backbone.patch_embed_s2.proj", "backbone.cls_token_s2", "backbone.blocks_s2", "backbone.norm_s2"),
}
#: Reference decoder names: decoding_strategy -> (target sensor -> (body prefix, head prefix)).
REFERENCE_DECODERS = {
    "common": {
        "s1": ("decoder", "decoder.decoder_pred_s2_to_s1"),
        "s2": ("decoder", "decoder.decoder_pred_s1_to_s2"),
    },
    "specific": {
        "s1": ("decoder_s2_to_s1", "decoder_s2_to_s1.decoder_pred"),
        "s2": ("decoder_s1_to_s2", "decoder_s1_to_s2.decoder_pred"),
    },
}
#: Reference decoding strategy <-> our decoder_sharing.
DECODING_TO_SHARING = {"common": "shared", "specific": "per_target"}
#: Reference body prefix -> our body name, per layout.
_BODY_NAME = {"common": lambda tgt: "shared", "specific": lambda tgt: tgt}
#: Reference config flags -> our loss weight fields.
LOSS_FLAGS = {
    "apply_umr_loss": "w_umr",
    "apply_cmr_loss": "w_cmr",
    "apply_mim_loss": "w_mim",
    "apply_mde_loss": "w_mde",
}
REFERENCE_BANDS = {"s1": REFERENCE_S1_BANDS, "s2": REFERENCE_S2_BANDS}


def _blocks(ref: str, ours: str, depth: int) -> dict[str, str]:
    return {f"{ref}.{i}.{p}": f"{ours}.{i}.{p}" for i in range(depth) for p in BLOCK_PARAMS}


def reference_key_table(config: ModelConfig) -> dict[str, str]:
    """Reference parameter name -> csmae parameter name for a model with ``config``."""
    c = config
    table: dict[str, str] = {}
    for s, (stem, cls, blocks, norm) in REFERENCE_SENSOR_NAMES.items():
        table.update({f"{stem}.{w}": f"encoder.stems.{s}.proj.{w}" for w in WB})
        table[cls] = f"encoder.cls_tokens.{s}"
        table.update(_blocks(blocks, f"encoder.private.{s}", c.private_depth))
        if c.private_depth:
            table.update({f"{norm}.{w}": f"encoder.private_norms.{s}.{w}" for w in WB})
    table.update(_blocks("backbone.blocks", "encoder.shared", c.shared_depth))
    table.update({f"backbone.norm.{w}": f"encoder.norm.{w}" for w in WB})
    if c.pooling == "avg":
        table.update({f"backbone.fc_norm.{w}": f"pool_norm.{w}" for w in WB})
    if c.uses_decoder:
        strategy = {v: k for k, v in DECODING_TO_SHARING.items()}[c.decoder_sharing]
        for tgt, (body, head) in REFERENCE_DECODERS[strategy].items():
            ours = f"decoder.bodies.{_BODY_NAME[strategy](tgt)}"
            table.update({f"{body}.decoder_embed.{w}": f"{ours}.embed.{w}" for w in WB})
            table[f"{body}.mask_token"] = f"{ours}.mask_token"
            table.update(_blocks(f"{body}.decoder_blocks", f"{ours}.blocks", c.decoder_depth))
            table.update({f"{body}.decoder_norm.{w}": f"{ours}.norm.{w}" for w in WB})
            table.update({f"{head}.{w}": f"decoder.heads.{tgt}.{w}" for w in WB})
    return table


def _fixed_tables(config: ModelConfig) -> dict[str, tuple[int, bool]]:
    """Reference fixed sin-cos tables -> (width, is_decoder); checked against ours, never loaded."""
    out = {"backbone.pos_embed": (config.embed_dim, False)}
    if config.uses_decoder:
        strategy = {v: k for k, v in DECODING_TO_SHARING.items()}[config.decoder_sharing]
        for body, _ in REFERENCE_DECODERS[strategy].values():
            out[f"{body}.decoder_pos_embed"] = (config.decoder_embed_dim, True)
    return out


def config_from_reference_args(args: Mapping[str, Any]) -> ModelConfig:
    """A ModelConfig equal to the reference's resolved training config (its ``args.yaml``)."""
    bb = args.get("backbone") or {}
    kw = dict(bb.get("kwargs") or {})
    mk = dict(args.get("method_kwargs") or {})
    name = bb.get("name", "vit_custom")
    if name == "vit_custom":
        dim, heads = int(kw["embed_dim"]), int(kw["num_heads"])
    elif name.startswith("vit_") and name[4:] in SIZES:
        dim, heads = SIZES[name[4:]]
    else:
        raise ValueError(
            f"unknown reference backbone {name!r}; expected vit_custom or vit_{{{','.join(SIZES)}}}"
        )
    in_chans = int(kw.get("in_chans", 12))
    if in_chans != len(REFERENCE_S2_BANDS) + len(REFERENCE_S1_BANDS):
        raise ValueError(f"reference in_chans {in_chans}: only the 12-channel (10 S2 + 2 S1) layout is known")
    rec = mk.get("reconstruction_strategy", "disjoint")
    if rec != "disjoint":
        raise ValueError(
            f"reference reconstruction_strategy {rec!r} is not supported; csmae implements 'disjoint' "
            "(cross-modal loss at the positions masked in the source sensor)"
        )
    decoding = mk.get("decoding_strategy", "specific")
    if decoding not in DECODING_TO_SHARING:
        raise ValueError(
            f"unknown reference decoding_strategy {decoding!r}; known: {sorted(DECODING_TO_SHARING)}"
        )
    private, shared = (
        int(kw.get("multi_sensor_encoder_depth", 12)),
        int(kw.get("cross_sensor_encoder_depth", 0)),
    )
    sharing = DECODING_TO_SHARING[decoding]
    # Paper naming by structure: SE* = with shared encoder blocks, CE* = none; *CD = shared decoder body.
    variant = ("se" if shared else "ce") + ("cd" if sharing == "shared" else "sd")
    weights: dict[str, Any] = {
        ours: float(bool(mk.get(flag, flag != "apply_mde_loss"))) for flag, ours in LOSS_FLAGS.items()
    }
    return ModelConfig(
        name=f"reference_{variant}",
        variant=variant,
        sensors=("s1", "s2"),
        bands={s: tuple(b) for s, b in REFERENCE_BANDS.items()},
        img_size=int(kw.get("img_size", 120)),
        patch_size=int(kw.get("patch_size", 15)),
        embed_dim=dim,
        num_heads=heads,
        mlp_ratio=float(kw.get("mlp_ratio", 4.0)),
        private_depth=private,
        shared_depth=shared,
        norm_eps=1e-6,
        decoder_sharing=sharing,
        decoder_embed_dim=int(mk.get("decoder_embed_dim", 512)),
        decoder_depth=int(mk.get("decoder_depth", 8)),
        decoder_num_heads=int(mk.get("decoder_num_heads", 16)),
        decoder_norm_eps=1e-5,
        pooling=kw.get("global_pool", "avg"),
        mask_strategy=kw.get("masking_strategy", "random") or "random",
        mask_ratio=float(mk.get("mask_ratio", 0.5)),
        norm_pix_loss=bool(mk.get("norm_pix_loss", False)),
        mim_tau=float(mk.get("mim_temp", 0.5)),
        input_transpose=True,
        **weights,
    )


def convert_reference_state_dict(state: Mapping[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """Rename a reference state dict to csmae names; raise on unknown/missing keys or foreign tables."""
    table = reference_key_table(config)
    fixed = _fixed_tables(config)
    unknown = sorted(k for k in state if k not in table and k not in fixed)
    missing = sorted(k for k in table if k not in state)
    if unknown or missing:
        raise ValueError(
            "reference checkpoint does not match its config (another variant or size?): "
            + (f"{len(unknown)} unexpected key(s) e.g. {unknown[:4]}; " if unknown else "")
            + (f"{len(missing)} missing key(s) e.g. {missing[:4]}" if missing else "")
        )
    grid = config.img_size // config.patch_size
    for key, (width, _) in fixed.items():
        if key in state:
            ours = sincos_2d_table(width, grid)
            theirs = state[key].detach().to(torch.float32).reshape(ours.shape)
            if not torch.allclose(theirs, ours, atol=1e-5):
                raise ValueError(f"{key} is not the fixed 2-D sin-cos table csmae uses; cannot import")
    return {ours: state[ref] for ref, ours in table.items()}


def to_reference_state_dict(model: Any) -> dict[str, Tensor]:
    """The inverse mapping: a csmae model's weights under the reference's names (with fixed tables)."""
    own = model.state_dict()
    out = {ref: own[ours] for ref, ours in reference_key_table(model.config).items()}
    grid = model.config.img_size // model.config.patch_size
    for key, (width, _) in _fixed_tables(model.config).items():
        out[key] = sincos_2d_table(width, grid)[None]
    return out


def load_reference_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The ``state_dict`` of a reference Lightning checkpoint, loaded without executing pickled code."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"reference checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses foreign globals (e.g. omegaconf objects)
        raise ValueError(
            f"{path}: cannot load safely with weights_only=True ({e}); re-save its state_dict"
        ) from e
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict with 'state_dict', got {type(ckpt).__name__}")
    return state


def import_reference(ckpt: str | Path, args_yaml: str | Path | Mapping[str, Any]):
    """A csmae model (eval mode) equal to a reference CSMAE checkpoint.

    Args:
        ckpt: the reference Lightning checkpoint (``{"state_dict": ...}``).
        args_yaml: its resolved config (``args.yaml``), or that config as a dict.
    """
    import yaml

    from csmae.models.csmae import CrossSensorMAE

    if isinstance(args_yaml, Mapping):
        args = dict(args_yaml)
    else:
        p = Path(args_yaml)
        if not p.exists():
            raise FileNotFoundError(f"reference config not found: {p}")
        args = yaml.safe_load(p.read_text())
    config = config_from_reference_args(args)
    state = convert_reference_state_dict(load_reference_checkpoint(ckpt), config)
    model = CrossSensorMAE(config)
    model.load_weights(state, source=str(ckpt))
    model.eval()
    log.info("imported reference %s (%s) from %s", config.variant, config.name, ckpt)
    return model
