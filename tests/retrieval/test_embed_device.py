"""Embedding with the device data path (a store's records upsampled/normalised after the transfer)
gives the same descriptors as the host path, bit for bit in fp32."""

from __future__ import annotations

import numpy as np
import pytest

from csmae.retrieval.embed import embed_dataset
from csmae.retrieval.embeddings import load_embeddings


def test_device_transforms_give_identical_descriptors(tmp_path, tiny_model_dir, reben_sources, monkeypatch):
    import csmae.retrieval.embed as embed_mod
    from csmae.data.prepare import prepare

    compact: list[bool] = []
    real = embed_mod.device_layout
    monkeypatch.setattr(embed_mod, "device_layout", lambda *a: (r := real(*a), compact.append(r[1]))[0])

    store = tmp_path / "native"
    prepare(reben_sources, store, layout="native")
    common = dict(batch_size=4, precision="fp32")
    host = load_embeddings(
        embed_dataset(tiny_model_dir, [store], tmp_path / "host", device_transforms=False, **common)
    )
    from csmae.cli import main

    args = ["embed", str(tiny_model_dir), str(store), "--out", str(tmp_path / "dev"), "--batch-size", "4"]
    assert main([*args, "--precision", "fp32", "--workers", "1", "--device-transforms", "true"]) == 0
    dev = load_embeddings(tmp_path / "dev")
    assert compact == [False, True]  # the host run, then the store's raw records
    np.testing.assert_array_equal(dev.vectors, host.vectors)
    assert list(dev.ids) == list(host.ids) and np.array_equal(dev.labels, host.labels)
    # the LMDB source has no stored records: the option falls back to the host's dense batches
    lmdb = load_embeddings(
        embed_dataset(tiny_model_dir, reben_sources, tmp_path / "lmdb", device_transforms=True, **common)
    )
    np.testing.assert_array_equal(lmdb.vectors, host.vectors)
    assert compact[-1] is False
    with pytest.raises(ValueError, match="device_transforms"):
        embed_dataset(tiny_model_dir, [store], tmp_path / "bad", device_transforms="yes")


def test_bf16_embedding_equals_autocast_over_fp32_weights(tmp_path, tiny_model_dir, reben_sources):
    """embed_dataset holds bf16 Linear/Conv weights in bf16 mode: the descriptors must not change."""
    import torch

    import csmae
    from csmae.data import open_dataset
    from csmae.models import normalize_batch

    emb = load_embeddings(
        embed_dataset(tiny_model_dir, reben_sources, tmp_path / "e", batch_size=4, precision="bf16")
    )
    assert emb.manifest["precision"] == "bf16"
    model = csmae.from_pretrained(tiny_model_dir).eval()  # fp32 weights, cast by autocast
    ds = open_dataset(*reben_sources)
    want = []
    for lo in range(0, len(ds), 4):
        smp = [ds[i] for i in range(lo, min(len(ds), lo + 4))]
        raw = {s: np.stack([x[s] for x in smp]) for s in model.sensors}
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.embed(normalize_batch(raw, model.sensors))
        want += [out[s][i].float().numpy() for i in range(len(smp)) for s in model.sensors]
    np.testing.assert_array_equal(emb.vectors, np.stack(want))
