"""Tiny training configs for the tests (a 2-block ViT with D=48 trains a step in well under a second)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import single_torch_thread

TINY_MODEL = [
    "model.name=csmae_sesd_tiny",
    "model.overrides.embed_dim=48",
    "model.overrides.num_heads=3",
    "model.overrides.private_depth=1",
    "model.overrides.shared_depth=1",
    "model.overrides.decoder_embed_dim=32",
    "model.overrides.decoder_depth=1",
    "model.overrides.decoder_num_heads=2",
]

TINY_TRAINER = [
    "trainer.precision=32",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "data.num_workers=0",
    "schedule.warmup_epochs=1",
    "optim.lr=1e-3",
    "callbacks.recon_pictures=false",
    "callbacks.checkpoint_every_n_steps=null",
]


def tiny_overrides(sources: list[str | Path], *extra: str, batch_size: int = 4, epochs: int = 1) -> list[str]:
    src = "[" + ", ".join(str(s) for s in sources) + "]"
    return [
        *TINY_MODEL,
        *TINY_TRAINER,
        f"data.sources={src}",
        "data.split=null",
        "data.val_split=null",
        f"data.batch_size={batch_size}",
        f"trainer.max_epochs={epochs}",
        *extra,
    ]


@pytest.fixture(scope="session")
def tiny():
    """``tiny(sources, *extra, batch_size=4, epochs=1)`` -> override list of a tiny fast run."""
    return tiny_overrides


@pytest.fixture(scope="session")
def reben_lmdb(reben_dir: Path) -> Path:
    p = reben_dir / "BigEarthNet-V2-LMDB"
    if not p.exists():
        pytest.skip(f"no reBEN LMDB sample at {p}")
    return p


@pytest.fixture(scope="session")
def synth_v1(tmp_path_factory) -> list[Path]:
    """A synthetic archive in the v1 folder format (S2 root, S1 root, tables with splits)."""
    from csmae.data.synth import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("synth") / "v1", n=20, seed=3, format="v1")


@pytest.fixture(scope="session")
def synth_store(tmp_path_factory) -> Path:
    """A synthetic prepared store (12 S2 bands; training picks the model's 10)."""
    from csmae.data.synth import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("synth") / "store", n=24, seed=4, format="store")[0]


@pytest.fixture(scope="session")
def reben_store(tmp_path_factory, reben_lmdb) -> Path:
    """A prepared store made from the real reBEN LMDB sample."""
    from csmae.data.prepare import prepare

    out = tmp_path_factory.mktemp("store") / "reben"
    prepare([reben_lmdb], out)
    return out


one_torch_thread = pytest.fixture(autouse=True)(single_torch_thread)
