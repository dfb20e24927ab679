"""``csmae embed`` touches only its own unfinished ``OUT.partial`` and replaces only embeddings (#21)."""

from __future__ import annotations

import json

import pytest


def _victim(root):
    v = root / "victim"
    v.mkdir()
    (v / "data.txt").write_text("d\n")
    return v


def test_embed_refuses_a_symlinked_or_foreign_partial(tmp_path, tiny_model_dir, v1_sources):
    from csmae.retrieval.embed import embed_dataset

    v = _victim(tmp_path)
    (tmp_path / "emb.partial").symlink_to(v)
    with pytest.raises(FileExistsError, match=r"emb\.partial is a symbolic link.*nothing was deleted"):
        embed_dataset(tiny_model_dir, v1_sources, tmp_path / "emb")
    assert sorted(p.name for p in v.iterdir()) == ["data.txt"]  # no plan.json written into it
    (tmp_path / "emb.partial").unlink()
    v.rename(tmp_path / "emb.partial")
    with pytest.raises(FileExistsError, match="has no .csmae-partial.json"):
        embed_dataset(tiny_model_dir, v1_sources, tmp_path / "emb")
    assert sorted(p.name for p in (tmp_path / "emb.partial").iterdir()) == ["data.txt"]


def test_embed_overwrite_replaces_only_embeddings(tmp_path, tiny_model_dir, v1_sources):
    from csmae.retrieval.embed import embed_dataset

    v = _victim(tmp_path)
    with pytest.raises(FileExistsError, match="victim is not a csmae embeddings"):
        embed_dataset(tiny_model_dir, v1_sources, v, overwrite=True)
    assert sorted(p.name for p in v.iterdir()) == ["data.txt"]
    out = embed_dataset(tiny_model_dir, v1_sources, tmp_path / "emb")
    embed_dataset(tiny_model_dir, v1_sources, out, overwrite=True)  # embeddings are replaced
    assert json.loads((out / "manifest.json").read_text())["kind"] == "csmae-embeddings"
    assert not (tmp_path / "emb.partial").exists()
