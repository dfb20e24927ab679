"""bbox filters across the antimeridian on Milvus (Lite and a real server, ``milvus_deploy``): the
archive of tests/geo/antimeridian_fixtures.py indexed with ``csmae index --backend milvus`` gives
exactly the brute-force answer computed with shapely on the scene's UTM patch polygons, as FAISS
exact does; the bbox expression alone selects the rows whose footprint bounds meet either side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install 'csmae[milvus]')")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (pip install 'csmae[milvus]')")

from csmae.cli import main  # noqa: E402
from csmae.retrieval import Retriever  # noqa: E402
from csmae.retrieval.filters import Filter  # noqa: E402
from tests.geo.test_antimeridian_archive import _boxes, _brute_rows  # noqa: E402


@pytest.fixture(scope="module")
def milvus_index(antimeridian_archive, milvus_deploy, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("am-milvus") / "idx"
    uri = milvus_deploy.uri("antimeridian")
    assert main(["index", str(antimeridian_archive.emb), "--out", str(out), "--backend", "milvus",
                 "--uri", str(uri)]) == 0
    return out


def test_bbox_across_the_line_on_milvus_equals_brute_force_and_faiss(antimeridian_archive, milvus_index):
    a = antimeridian_archive
    rm, rf = Retriever.load(milvus_index), Retriever.load(a.index)
    n = 2 * len(a.cells)
    checked = 0
    for name, bbox in _boxes(a).items():
        want = _brute_rows(a, bbox)
        for query, sensor in ((a.ids_in_col(0)[0], "s2"), (a.ids_in_col(3)[2], "s1")):
            where = {"bbox": list(bbox)}
            got = rm.search_by_id(query, sensor=sensor, k=n, where=where)
            ref = rf.search_by_id(query, sensor=sensor, k=n, where=where)
            assert [(h.id, h.sensor) for h in got] == [(h.id, h.sensor) for h in ref], name
            np.testing.assert_allclose([h.score for h in got], [h.score for h in ref], atol=1e-5)
            expected = {(p, s) for p in want for s in ("s1", "s2")} - {(query, sensor)}
            assert {(h.id, h.sensor) for h in got} == expected, name
            checked += len(got)
    assert checked > 20


def test_bbox_expression_alone_selects_both_sides(antimeridian_archive, milvus_index):
    """The Milvus expression (no allowed rows passed) selects the rows whose footprint bounds meet
    [W, 180] or [-180, E]: the split footprints (bounds -180..180) from either side's box."""
    import shapely

    a = antimeridian_archive
    idx = Retriever.load(milvus_index).index
    be = idx.backend
    items = idx.items
    bounds = np.array([shapely.bounds(shapely.from_wkb(g)) for g in items["geometry"]])
    q = np.ones((1, idx.dim), np.float32) / np.sqrt(idx.dim)
    for name, (w, s, e, n) in _boxes(a).items():
        parts = [(w, 180.0), (-180.0, e)] if w > e else [(w, e)]
        lon = np.zeros(len(items), bool)
        for lo, hi in parts:
            lon |= (bounds[:, 2] >= lo) & (bounds[:, 0] <= hi)
        want = lon & (bounds[:, 3] >= s) & (bounds[:, 1] <= n)
        _, rows = be.search(q, len(items), where=Filter(bbox=(w, s, e, n)))
        got = set(rows[0][rows[0] >= 0].tolist())
        assert got == set(np.flatnonzero(want).tolist()), name
        # the exact filter never returns more than the expression
        assert set(idx.allowed(Filter(bbox=(w, s, e, n))).tolist()) <= got
