"""Shared fixtures: paths to the real BigEarthNet samples in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
ANCHORS = SHARED / "anchors"


def single_torch_thread():
    """Generator for an autouse fixture: one intra-op thread during each test, restored after.

    Tiny tensors gain nothing from intra-op threads, and on a small shared CPU OpenMP threads
    waiting for a descheduled partner made tiny-model tests many times slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared sample data not found at {path}")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def v1_roots(shared_data: Path) -> tuple[Path, Path]:
    """(S2 root, S1 root) of the v1 folder sample."""
    root = shared_data / "bigearthnet-v1"
    return root / "BigEarthNet-v1.0", root / "BigEarthNet-S1-v1.0"


@pytest.fixture(scope="session")
def v1_tables(shared_data: Path) -> Path:
    return shared_data / "bigearthnet-v1" / "tables"


@pytest.fixture(scope="session")
def reben_dir(shared_data: Path) -> Path:
    return shared_data / "reben"


@pytest.fixture(scope="session")
def encoded_lmdb_dir(shared_data: Path) -> Path:
    return shared_data / "bigearthnet-encoded-lmdb"


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return _need(ANCHORS / "reference-parity")


@pytest.fixture(scope="session")
def antimeridian_archive(tmp_path_factory):
    """A tiled, embedded and indexed scene across the antimeridian (tests/geo/antimeridian_fixtures.py),
    built once per session: the geo, retrieval (Milvus) and page tests share it."""
    from tests.geo.antimeridian_fixtures import build_archive

    return build_archive(tmp_path_factory.mktemp("antimeridian"))
