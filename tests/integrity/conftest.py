"""Fixtures: one of every artefact kind, written by csmae's own writers (built once per session)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import single_torch_thread

_one_thread = pytest.fixture(autouse=True)(single_torch_thread)
TINY = dict(private_depth=1, shared_depth=1, decoder_depth=1, decoder_embed_dim=32, decoder_num_heads=2)


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory) -> dict[str, Path]:
    """store, model, embeddings, index-exact, index-hnsw folders and a checkpoint file."""
    import torch

    import csmae
    from csmae.data.synth import write_synthetic
    from csmae.retrieval.embed import embed_dataset
    from csmae.retrieval.index import build_index
    from csmae.training.checkpoint import REQUIRED_KEYS, AtomicCheckpointIO

    root = tmp_path_factory.mktemp("artefacts")
    store = write_synthetic(root / "store", n=8, seed=1, format="store")[0]
    torch.manual_seed(0)
    model = csmae.create_model("csmae_sesd_tiny", **TINY)
    model.save_pretrained(root / "model")
    emb = embed_dataset(root / "model", [store], root / "emb", shard_pairs=4, precision="fp32",
                        device="cpu")
    build_index(emb, "exact", root / "index-exact")
    build_index(emb, "hnsw", root / "index-hnsw")
    ckpt = root / "run" / "checkpoints" / "last.ckpt"
    state = {k: 0 for k in REQUIRED_KEYS}
    state.update(state_dict={k: v for k, v in list(model.state_dict().items())[:4]}, csmae={"v": 1})
    AtomicCheckpointIO().save_checkpoint(state, ckpt)
    return {"store": store, "model": root / "model", "embeddings": emb,
            "index-exact": root / "index-exact", "index-hnsw": root / "index-hnsw", "checkpoint": ckpt}


def copy_artefact(src: Path, dst_dir: Path) -> Path:
    """A private copy (tests damage it); a checkpoint is copied with its sidecar."""
    dst = dst_dir / src.name
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
        side = src.with_name(src.name + ".checksum.json")
        if side.exists():
            shutil.copy2(side, dst.with_name(side.name))
    return dst
