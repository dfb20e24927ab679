"""``csmae embed`` in bounded memory (#20): a memory-mapped store's pages are unmapped as the pass
goes, so the store's share of RSS stays at a few batches instead of growing to the store's size;
the descriptors are the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import csmae.retrieval.embed as embed_mod
from csmae.retrieval.embed import embed_dataset
from csmae.retrieval.embeddings import load_embeddings


def mapped_kb(folder: Path) -> int:
    """Resident kB of this process's mappings of files inside ``folder`` (/proc/self/smaps)."""
    total, inside = 0, False
    prefix = str(folder.resolve())
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not line.startswith(("Rss", "Size")):
            inside = len(head) >= 6 and head[-1].startswith(prefix)
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total


def test_store_pages_are_unmapped_during_embed(tmp_path, tiny_model_dir, monkeypatch):
    from csmae.data.synth import write_synthetic

    store = write_synthetic(tmp_path / "store", n=120, seed=1, format="store")[0]
    record_kb = sum(f.stat().st_size for f in store.glob("*.npy")) // 1024 // 120
    want = embed_dataset(tiny_model_dir, [store], tmp_path / "whole", precision="fp32", batch_size=8)
    seen: list[int] = []
    real = embed_mod.EmbedJob.embed

    def measured(self, raw, device):
        seen.append(mapped_kb(store))
        return real(self, raw, device)

    monkeypatch.setattr(embed_mod.EmbedJob, "embed", measured)
    monkeypatch.setattr(embed_mod, "RELEASE_PAIRS", 16)
    got = embed_dataset(tiny_model_dir, [store], tmp_path / "bounded", precision="fp32", batch_size=8)
    # never more than the pairs read since the last unmapping (16 + one batch of 8)
    assert max(seen) <= 24 * record_kb + 1024, (max(seen), record_kb)
    monkeypatch.setattr(embed_mod, "RELEASE_PAIRS", 10**9)  # never unmapped: grows with the store
    seen.clear()
    embed_dataset(tiny_model_dir, [store], tmp_path / "unbounded", precision="fp32", batch_size=8)
    assert max(seen) > 100 * record_kb
    a, b = load_embeddings(want), load_embeddings(got)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert (a.ids == b.ids).all()
