"""Embedding with the device data path (a store's records upsampled/normalised after the transfer)
gives the same descriptors as the host path, bit for bit in fp32."""

from __future__ import annotations

import numpy as np
import pytest

from csmae.retrieval.embed import embed_dataset
from csmae.retrieval.embeddings import load_embeddings


def test_device_transforms_give_identical_descriptors(tmp_path, tiny_model_dir, reben_sources):
    from csmae.data.prepare import prepare

    store = tmp_path / "native"
    prepare(reben_sources, store, layout="native")
    common = dict(batch_size=4, precision="fp32")
    host = load_embeddings(
        embed_dataset(tiny_model_dir, [store], tmp_path / "host", device_transforms=False, **common)
    )
    dev = load_embeddings(
        embed_dataset(tiny_model_dir, [store], tmp_path / "dev", device_transforms=True, workers=1, **common)
    )
    np.testing.assert_array_equal(dev.vectors, host.vectors)
    assert list(dev.ids) == list(host.ids) and np.array_equal(dev.labels, host.labels)
    # the LMDB source has no stored records: the option falls back to the host's dense batches
    lmdb = load_embeddings(
        embed_dataset(tiny_model_dir, reben_sources, tmp_path / "lmdb", device_transforms=True, **common)
    )
    np.testing.assert_array_equal(lmdb.vectors, host.vectors)
    with pytest.raises(ValueError, match="device_transforms"):
        embed_dataset(tiny_model_dir, [store], tmp_path / "bad", device_transforms="yes")
