"""The on-disk vector store: both read paths (map, preadv) against the vectors as written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import csmae.retrieval.backends.vectorstore as vs


def _store_of(tmp_path: Path, dtype: str, sizes: list[int], d: int = 24):
    rng = np.random.default_rng(3)
    st = vs.VectorStore(tmp_path / "vec", dim=d, dtype=dtype, chunks=[])
    parts = []
    for n in sizes:
        x = rng.standard_normal((n, d)).astype(np.float32)
        st.append(st.n_rows, x)
        parts.append(x.astype(vs._DTYPES[dtype]).astype(np.float32))  # what the file holds
    return st, np.concatenate(parts)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_gather_by_map_and_by_pread_equal_the_written_rows(tmp_path, monkeypatch, dtype):
    """Rows in any order, repeated, across chunk boundaries, runs of consecutive rows and single ones:
    the map path and the preadv path both return exactly the rows written (brute force: indexing)."""
    st, ref = _store_of(tmp_path, dtype, [50, 1, 70, 33])
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, len(ref), 300), np.arange(40, 60), [153, 153, 0, len(ref) - 1]])
    rng.shuffle(rows)
    monkeypatch.setattr(vs, "PREAD_ROWS", 10**9)  # map
    by_map = st.gather(rows)
    monkeypatch.setattr(vs, "PREAD_ROWS", 1)  # preadv
    by_read = st.gather(rows)
    np.testing.assert_array_equal(by_map, ref[rows])
    np.testing.assert_array_equal(by_read, ref[rows])
    native = st.gather(rows, stored=True)
    assert native.dtype == vs._DTYPES[dtype]
    np.testing.assert_array_equal(native.astype(np.float32), ref[rows])
    with pytest.raises(IndexError):
        st.gather(np.array([len(ref)]))


def mapped_kb(folder: Path) -> int:
    """RSS (kB) of this process's mappings of files in ``folder`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and ":" not in head[0]:
            inside = len(head) >= 6 and head[-1].startswith(str(folder))
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_a_large_scattered_gather_maps_nothing(tmp_path):
    """A gather of PREAD_ROWS rows or more (a batch re-rank) reads without the map: the store's
    pages are not counted in RSS (through the map, fault-around brought in most of the file)."""
    st, ref = _store_of(tmp_path, "float16", [20_000], d=256)  # 10 MB, 512 B a row
    rows = np.arange(0, 20_000, 5)  # 4,000 scattered rows
    before = mapped_kb(st.folder)
    assert len(rows) < vs.PREAD_ROWS
    np.testing.assert_array_equal(st.gather(rows), ref[rows])
    via_map = mapped_kb(st.folder) - before
    st2, _ = _store_of(tmp_path / "b", "float16", [20_000], d=256)
    rows2 = np.arange(0, 20_000, 4)  # 5,000 rows: the pread path
    assert len(rows2) >= vs.PREAD_ROWS
    np.testing.assert_array_equal(st2.gather(rows2), ref[rows2])
    assert mapped_kb(st2.folder) == 0
    assert via_map > 1000  # the map path does map pages (so the check above can fail)
