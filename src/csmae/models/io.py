"""save_pretrained / from_pretrained: safetensors weights + config.json + a model card, atomically.

A model folder holds ``model.safetensors`` (plain parameter names, no wrapper prefixes),
``config.json`` (the ModelConfig, the variant spec and every sensor's band order and
normalisation), ``README.md`` (model card) and ``manifest.json`` (what produced it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from csmae.atomic import OWNER_FILE, clean_stale_temps, mark_owner, replace_folder
from csmae.integrity import IntegrityError, checksum_files, verify_manifest_files, warn_unverified
from csmae.models.config import ModelConfig
from csmae.sensors import Sensor

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
KIND = "csmae-model"
MANIFEST = "manifest.json"
VERIFIED = (WEIGHTS, CONFIG)  # files whose checksums the manifest records (the card may be edited)
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def _describe(config: ModelConfig) -> str:
    return (
        f"{config.name} (sensors {list(config.sensors)}, D={config.embed_dim}, "
        f"private={config.private_depth}, "
        f"shared={config.shared_depth}, decoder={config.decoder_sharing}, "
        f"decoder D={config.decoder_embed_dim} "
        f"x{config.decoder_depth})"
    )


def _strip_prefixes(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for k, v in state.items():
        for p in _WRAPPER_PREFIXES:
            while k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def load_weights(model: Any, state: Mapping[str, Tensor], *, source: str = "checkpoint") -> None:
    """Load ``state`` into ``model`` strictly; name the mismatch (another variant or size) clearly."""
    state = _strip_prefixes(state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(
                "shape mismatch: "
                + "; ".join(
                    f"{k} {tuple(state[k].shape)} vs expected {tuple(own[k].shape)}" for k in wrong[:5]
                )
            )
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:5]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:5]}")
        raise ValueError(
            f"{source} does not fit model {_describe(model.config)}: it is another variant or size; "
            + " | ".join(parts)
        )
    model.load_state_dict(state, strict=True)


def model_card(model: Any) -> str:
    c = model.config
    sens = "\n".join(
        f"- `{s}`: {len(sp.bands)} bands {', '.join(sp.bands)} ({sp.units})"
        for s, sp in model.sensors.items()
    )
    n_params = sum(p.numel() for p in model.parameters())
    transpose_note = (
        "Images are transposed inside the model (imported reference checkpoint); pass normal images."
        if c.input_transpose
        else ""
    )
    return f"""# {c.name}

Cross-Sensor Masked Autoencoder (csmae) for sensor-agnostic remote-sensing image retrieval
(Hackstein et al., IEEE TGRS 2024). Variant `{c.variant}`: {c.private_depth} private blocks per sensor,
{c.shared_depth} shared blocks, decoder `{c.decoder_sharing}`; ViT width {c.embed_dim}, {c.num_heads} heads,
patch {c.patch_size}, input {c.img_size}x{c.img_size}; {n_params / 1e6:.1f} M parameters.

## Inputs
Normalised images (per-band mean/std in `config.json`), channels in this order:
{sens}
{transpose_note}

## Use
```python
import csmae
from csmae.models import normalize_batch
model = csmae.from_pretrained("this/folder")
desc = model.embed(normalize_batch({{"s2": raw_s2}}, model.sensors))  # {{"s2": (N, {c.embed_dim})}}
```
Descriptors: `{c.pooling}` pooling; retrieval uses the L2-normalised descriptor (cosine similarity).

## Training objective
Mask `{c.mask_strategy}` ratio {c.mask_ratio}; weights UMR {c.w_umr}, CMR {c.w_cmr}, MIM {c.w_mim}
(tau {c.mim_tau}), MDE {c.w_mde}; norm-pix loss {c.norm_pix_loss}.
"""


def _atomic_replace(tmp: Path, final: Path) -> None:
    if final.exists() and not (final / CONFIG).exists() and any(final.iterdir()):
        raise FileExistsError(f"{final} exists and is not a csmae model folder; not overwriting it")
    replace_folder(tmp, final)


def save_pretrained(model: Any, path: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the model folder at ``path`` (atomically: temp folder + rename). Returns ``path``."""
    from safetensors.torch import save_file

    from csmae.version import __version__

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    clean_stale_temps(final)  # folders of killed earlier saves
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    mark_owner(tmp)
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in _strip_prefixes(model.state_dict()).items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt", "kind": KIND})
        config = {
            "kind": KIND,
            "csmae_version": __version__,
            "config": model.config.to_dict(),
            "variant_spec": model.config.spec.to_dict(),
            "sensors": {s: spec.to_dict() for s, spec in model.sensors.items()},
            "embed_dim": model.embed_dim,
            "pooling": model.config.pooling,
            "loss_weights": model.loss_weights(),
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=2))
        (tmp / "README.md").write_text(model_card(model))
        manifest = {
            "kind": KIND,
            "producer": f"csmae {__version__}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": model.config.name,
            "files": [WEIGHTS, CONFIG, "README.md"],
            **dict(extra or {}),
            "checksums": checksum_files(tmp, VERIFIED),  # verified by from_pretrained
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        (tmp / OWNER_FILE).unlink()
        _atomic_replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved %s to %s", model.config.name, final)
    return final


def read_config(path: str | Path) -> tuple[ModelConfig, dict[str, Sensor]]:
    """The ModelConfig and Sensor specs recorded in a model folder."""
    path = Path(path)
    cfg_file = path / CONFIG
    if not cfg_file.exists():
        raise FileNotFoundError(
            f"{path} is not a csmae model folder (no {CONFIG}); make one with save_pretrained"
        )
    try:
        d = json.loads(cfg_file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_file} is damaged (not valid JSON: {e})") from None
    if not isinstance(d, dict) or d.get("kind") != KIND:
        got = d.get("kind") if isinstance(d, dict) else None
        raise ValueError(f"{cfg_file}: kind {got!r}, expected {KIND!r}")
    config = ModelConfig.from_dict(d["config"])
    sensors = {s: Sensor.from_dict(sd) for s, sd in d["sensors"].items()}
    return config, sensors


def verify_model_folder(path: str | Path, *, full: bool = True) -> bool:
    """Check model.safetensors and config.json against manifest.json's checksums.

    Returns False (warning logged once) for folders saved before checksums were recorded.

    Raises:
        IntegrityError: a file is missing, resized or changed (named in the message).
    """
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.exists():
        warn_unverified(path, "model folder")
        return False
    try:
        manifest = json.loads(mpath.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{mpath} is damaged (not valid JSON: {e})", path=mpath) from None
    if not isinstance(manifest, dict):
        raise IntegrityError(f"{mpath} is damaged (not a JSON object)", path=mpath)
    return verify_manifest_files(path, manifest, what="model folder", full=full)


def from_pretrained(path: str | Path, *, map_location: str | torch.device = "cpu", **overrides: Any):
    """Load a model folder written by ``save_pretrained``; returned in eval mode.

    ``overrides`` change config fields (e.g. ``mask_ratio``); ones that change the architecture
    make the weights not fit, which raises a ValueError naming the mismatch.
    """
    from safetensors.torch import load_file

    from csmae.models.csmae import CrossSensorMAE

    path = Path(path)
    verify_model_folder(path)
    config, sensors = read_config(path)
    if overrides:
        config = config.replace(**overrides)
    weights = path / WEIGHTS
    if not weights.exists():
        raise FileNotFoundError(f"{path}: missing {WEIGHTS}")
    specs = {s: sensors[s] for s in config.sensors if s in sensors}
    rebands = any(k == "bands" or k.endswith("_bands") for k in overrides)
    model = CrossSensorMAE(config, sensors=None if rebands or len(specs) != len(config.sensors) else specs)
    try:
        state = load_file(str(weights), device=str(map_location))
    except Exception as e:  # noqa: BLE001 - SafetensorError and OSError for damaged/foreign files
        raise ValueError(f"{weights} is not a readable safetensors file ({type(e).__name__}: "
                         f"{str(e)[:200]}); re-save the model or restore the folder") from None
    load_weights(model, state, source=str(weights))
    model.to(map_location)
    model.eval()
    return model
