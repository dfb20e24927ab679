"""The demo's recipe as data: archive size, model size, training budget, evaluation settings.

Two recipes: ``FULL`` (the default run, a few minutes on a 2-core CPU) and ``QUICK`` (a ~1 minute
smoke run used by the tests). The three models are trained at the same size and budget: the same
width, the same number of encoder blocks on each sensor's path, the same decoder, batch, steps,
learning rate, schedule, precision and seed. CSMAE (SESD) shares its last ``shared_depth`` encoder
blocks between the sensors; a uni-modal MAE is one sensor's ``depth`` blocks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

#: model key -> (registry preset, human title). Order = order in tables and charts.
MODELS: dict[str, tuple[str, str]] = {
    "csmae": ("csmae_sesd_tiny", "CSMAE (SESD)"),
    "mae_s1": ("mae_s1_tiny", "MAE S1-only"),
    "mae_s2": ("mae_s2_tiny", "MAE S2-only"),
}


@dataclass(frozen=True)
class Recipe:
    """Everything that sets the demo's cost and result (recorded in the report and metrics.json)."""

    name: str
    n_pairs: int
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    embed_dim: int = 96
    num_heads: int = 3
    depth: int = 3  # encoder blocks on each sensor's path
    shared_depth: int = 1  # CSMAE: of those, blocks shared by S1 and S2 (SESD)
    decoder_embed_dim: int = 64
    decoder_depth: int = 1
    decoder_num_heads: int = 4
    mask_ratio: float = 0.5
    batch_size: int = 64
    steps: int = 120  # the knee on a 2-core CPU: 40 steps gave cross-modal mAP@10 ~0.66, 120 ~0.73, 200 ~0.75
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 10
    #: trainer.precision; "auto": bf16-mixed where the CPU runs bf16 matmuls natively (AVX512-BF16,
    #: AMX), 32 elsewhere (AVX2-only CPUs emulate bf16, 8x slower); embedding and search follow it
    precision: str = "auto"
    ks: tuple[int, ...] = (5, 10)
    grid_queries: int = 3
    grid_k: int = 5
    recon_samples: int = 4
    embed_batch: int = 128
    series_places: int = 200  # held-out places of the places-through-time part (6 dates each)

    def model_overrides(self, key: str) -> dict[str, Any]:
        """ModelConfig overrides of model ``key`` (see :data:`MODELS`)."""
        common: dict[str, Any] = {
            "embed_dim": self.embed_dim, "num_heads": self.num_heads, "mask_ratio": self.mask_ratio,
            "decoder_embed_dim": self.decoder_embed_dim, "decoder_depth": self.decoder_depth,
            "decoder_num_heads": self.decoder_num_heads,
        }
        if key == "csmae":
            return {**common, "private_depth": self.depth - self.shared_depth,
                    "shared_depth": self.shared_depth}
        if key in ("mae_s1", "mae_s2"):
            return {**common, "private_depth": 0, "shared_depth": self.depth}
        raise KeyError(f"unknown demo model {key!r}; expected one of {list(MODELS)}")

    def fit_dict(self, key: str, *, store: str, seed: int) -> dict[str, Any]:
        """The training config (``csmae fit`` YAML sections) of model ``key``."""
        return {
            "description": f"csmae demo ({self.name}): {MODELS[key][1]}",
            "model": {"name": MODELS[key][0], "overrides": self.model_overrides(key)},
            "data": {"sources": [store], "split": "train", "val_split": None, "batch_size": self.batch_size,
                     "num_workers": 0, "persistent_workers": False},
            "optim": {"lr": self.lr, "weight_decay": self.weight_decay},
            "schedule": {"warmup_steps": self.warmup_steps},
            "trainer": {"max_steps": self.steps, "max_epochs": 10_000, "precision": self.precision,
                        "accelerator": "cpu", "devices": 1, "seed": seed, "log_every_n_steps": 5,
                        "enable_progress_bar": False},
            "callbacks": {"checkpoint_every_n_steps": None, "checkpoint_every_n_epochs": 0,
                          "recon_pictures": False, "retrieval_every_n_epochs": 0},
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FULL = Recipe(name="full", n_pairs=2000)
QUICK = Recipe(
    name="quick", n_pairs=240, embed_dim=64, num_heads=2, depth=2, shared_depth=1, decoder_embed_dim=32,
    decoder_num_heads=2, batch_size=24, steps=6, lr=1e-3, warmup_steps=1, grid_queries=2, grid_k=4,
    recon_samples=2, embed_batch=64, series_places=48,
)


def get_recipe(quick: bool, n_pairs: int | None = None) -> Recipe:
    """``QUICK`` or ``FULL``, with ``n_pairs`` replacing the archive size when given."""
    base = QUICK if quick else FULL
    if n_pairs is None:
        return base
    if n_pairs < 50:
        raise ValueError(f"--n-pairs must be at least 50 (the train, val and test splits need pairs), "
                         f"got {n_pairs}")
    return dataclasses.replace(base, n_pairs=int(n_pairs))
