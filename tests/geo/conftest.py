"""Shared fixtures of the tiling tests: the real v1 mosaic written as an aligned S2 + S1 scene."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.geo.tile_fixtures import load_real_mosaic, write_aligned


@pytest.fixture(scope="module")
def mosaic():
    return load_real_mosaic()


@pytest.fixture(scope="module")
def base(tmp_path_factory, mosaic) -> Path:
    root = tmp_path_factory.mktemp("base")
    write_aligned(root, mosaic)
    return root


@pytest.fixture()
def scene(tmp_path, base) -> Path:
    shutil.copytree(base, tmp_path / "scene")
    return tmp_path / "scene"
