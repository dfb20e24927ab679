"""Fixtures: a tiny saved model, embeddings and indexes of the real samples (built once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TINY = dict(private_depth=1, shared_depth=1, decoder_depth=1, decoder_embed_dim=32, decoder_num_heads=2)


def save_tiny(path: Path, name: str = "csmae_sesd_tiny", seed: int = 0, **overrides) -> Path:
    import torch

    import csmae

    torch.manual_seed(seed)
    model = csmae.create_model(name, **{**TINY, **overrides})
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def reben_sources(reben_dir: Path) -> list[str]:
    return [str(reben_dir / "BigEarthNet-V2-LMDB"), str(reben_dir / "metadata.parquet")]


@pytest.fixture(scope="session")
def v1_sources(v1_roots, v1_tables) -> list[str]:
    return [str(v1_roots[0]), str(v1_roots[1]), str(v1_tables)]


@pytest.fixture(scope="session")
def v1_emb_dir(tmp_path_factory, tiny_model_dir, v1_sources) -> Path:
    from csmae.retrieval.embed import embed_dataset

    return embed_dataset(tiny_model_dir, v1_sources, tmp_path_factory.mktemp("emb") / "v1")


@pytest.fixture(scope="session")
def v1_index_dir(tmp_path_factory, v1_emb_dir) -> Path:
    from csmae.retrieval.index import build_index

    out = tmp_path_factory.mktemp("idx") / "v1"
    build_index(v1_emb_dir, "exact", out)
    return out


def random_embeddings(
    n_pairs: int = 60, d: int = 16, seed: int = 0, n_labels: int = 19, splits=("train", "val", "test")
):
    """In-memory Embeddings of random vectors and labels for both sensors, pair order interleaved."""
    from csmae.retrieval.embeddings import embeddings_from_arrays

    rng = np.random.default_rng(seed)
    ids = [f"p{i:04d}" for i in range(n_pairs)]
    sp = [splits[i % len(splits)] for i in range(n_pairs)]
    lab = rng.random((n_pairs, n_labels)) < 0.2
    vec = rng.normal(size=(n_pairs, 2, d)).astype(np.float32)
    return embeddings_from_arrays(
        ids=[i for i in ids for _ in range(2)],
        sensors=["s1", "s2"] * n_pairs,
        splits=[s for s in sp for _ in range(2)],
        labels=np.repeat(lab, 2, axis=0),
        vectors=vec.reshape(2 * n_pairs, d),
        manifest={"sensors": {"s1": {}, "s2": {}}},
    )


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory) -> str:
    """URI of a real Milvus standalone server (the ``milvus`` package), started once per session.

    Skipped only where the package is not installed (``pip install -e '.[dev]'`` installs it) and
    not in CI (``CI`` set): there a missing package fails."""
    import importlib.util
    import os

    from tests.retrieval.milvus_server import milvus_server

    if importlib.util.find_spec("milvus") is None:
        why = "the Milvus server tests need the `milvus` package: pip install -e '.[dev]'"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    with milvus_server(tmp_path_factory.mktemp("milvus-server")) as uri:
        yield uri


@pytest.fixture(scope="module", params=["lite", "server"])
def milvus_deploy(request, tmp_path_factory):
    """Each Milvus test module runs on Milvus Lite (a fresh ``.db`` per name) and on the server."""
    from itertools import count

    from tests.retrieval.milvus_server import Deployment

    if request.param == "server":
        uri = request.getfixturevalue("milvus_server_uri")
        return Deployment("server", lambda name: uri)
    root, n = tmp_path_factory.mktemp("milvus-lite"), count()
    return Deployment("lite", lambda name: str(root / f"{name}-{next(n)}.db"))


@pytest.fixture(scope="session")
def timeline_index(tmp_path_factory) -> tuple[Path, Path]:
    """A synthetic series archive (6 places, 4 dates, both sensors), tiny model, exact index."""
    import torch

    import csmae
    from csmae.data.synth import write_synthetic
    from csmae.data.synth_time import Series
    from csmae.retrieval import build_index, embed_dataset

    tmp = tmp_path_factory.mktemp("timeline")
    series = Series(dates=("2018-04-08", "2018-05-20", "2018-08-06", "2018-09-25"), change_fraction=0.5)
    store = write_synthetic(tmp / "store", n=6, seed=3, format="store", layout="native", series=series)[0]
    torch.manual_seed(0)
    csmae.create_model("csmae_sesd_tiny").save_pretrained(tmp / "model")
    embed_dataset(tmp / "model", [str(store)], tmp / "emb", precision="fp32", device="cpu", batch_size=16)
    build_index(tmp / "emb", kind="exact", out=tmp / "index")
    return tmp / "index", tmp / "emb"
