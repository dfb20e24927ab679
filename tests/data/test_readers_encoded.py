"""The reference implementation's encoded LMDB: pixels, labels, splits, parity with its pipeline.

Independent decode: the raw band bytes are pulled out of each pickle with ``pickletools.genops``
(the BINBYTES payload that follows a band name) and ``np.frombuffer``; no unpickling involved.
"""

from __future__ import annotations

import pickletools
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from csmae.data import open_dataset
from csmae.data.encoded import decode_record
from csmae.data.reben import shared_env
from csmae.labels import LABELS_19, map_43_to_19
from csmae.sensors import BAND_STATS, REFERENCE_S2_BANDS, get_sensor

BAND_NAME = re.compile(r"^(B0[1-9]|B1[0-2]|B8A|VV|VH)$")
# byte size -> (dtype, side) for the bands stored in the records
SIZES = {120 * 120 * 4: ("<f4", 120), 120 * 120 * 2: ("<u2", 120), 60 * 60 * 2: ("<u2", 60),
         20 * 20 * 2: ("<u2", 20)}


def raw_records(path: Path) -> dict[str, bytes]:
    """Raw key -> value bytes (py-lmdb allows one environment per path per process: share it)."""
    with shared_env(str(path)).begin() as txn:
        return {bytes(k).decode(): bytes(v) for k, v in txn.cursor()}


def bands_by_opcodes(blob: bytes) -> dict[str, np.ndarray]:
    """band name -> native array, from the BINBYTES that follows each band name string."""
    out: dict[str, np.ndarray] = {}
    last_name = None
    for op, arg, _ in pickletools.genops(blob):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE") and BAND_NAME.match(arg):
            last_name = arg
        elif op.name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8") and len(arg) in SIZES:
            dtype, side = SIZES[len(arg)]
            out[last_name] = np.frombuffer(arg, dtype=dtype).reshape(side, side)
    return out


def bicubic(a: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(a.astype(np.float32))[None, None]
    return F.interpolate(t, size=(120, 120), mode="bicubic", align_corners=True)[0, 0].numpy()


@pytest.fixture(scope="module")
def records(encoded_lmdb_dir: Path) -> dict[str, bytes]:
    return raw_records(encoded_lmdb_dir / "BigEarthNetEncoded.lmdb")


def test_pixels_match_raw_pickle_bytes(encoded_lmdb_dir: Path, records: dict[str, bytes]) -> None:
    ds = open_dataset(encoded_lmdb_dir, s2_bands="all")
    assert sorted(ds.ids) == sorted(records)
    s2, s1 = ds.sensors["s2"], ds.sensors["s1"]
    for pid, blob in records.items():
        raw = bands_by_opcodes(blob)
        assert len(raw) == 14, sorted(raw)
        sample = ds.get(pid)
        for b in s2.bands:
            expect = raw[b].astype(np.float32) if raw[b].shape == (120, 120) else bicubic(raw[b])
            np.testing.assert_array_equal(sample["s2"][s2.index(b)], expect, err_msg=f"{pid} {b}")
        for b in s1.bands:
            np.testing.assert_array_equal(sample["s1"][s1.index(b)], raw[b])


def test_reference_parity_band_order_and_upsampling(encoded_lmdb_dir: Path, parity_dir: Path) -> None:
    """Reference input = bicubic-upsampled, transposed, normalised B02..B8A VH VV stack."""
    z = np.load(parity_dir / "cecd" / "expected.npz")
    ds = open_dataset(encoded_lmdb_dir, s2_bands=list(REFERENCE_S2_BANDS))
    bands = [*REFERENCE_S2_BANDS, "VH", "VV"]
    mean = np.array([BAND_STATS[b][0] for b in bands])[:, None, None]
    std = np.array([BAND_STATS[b][1] for b in bands])[:, None, None]
    for n, key in enumerate(z["keys"]):
        s = ds.get(str(key))
        s1 = s["s1"][[ds.sensors["s1"].index("VH"), ds.sensors["s1"].index("VV")]]
        x = ((np.concatenate([s["s2"], s1]) - mean) / std).transpose(0, 2, 1)
        np.testing.assert_allclose(x, z["imgs"][n], atol=1e-5, rtol=0)
        np.testing.assert_array_equal(s["labels"], z["labels"][n].astype(bool))


def test_labels_are_new_labels_and_agree_with_43_mapping(encoded_lmdb_dir: Path,
                                                         records: dict[str, bytes]) -> None:
    ds = open_dataset(encoded_lmdb_dir)
    for pid, blob in records.items():
        rec = decode_record(blob, key=pid, path="x")
        assert rec["labels"] and rec["labels_43"]
        assert sorted(rec["labels"]) == sorted(map_43_to_19(rec["labels_43"]))
        got = [LABELS_19[i] for i in np.flatnonzero(ds.get(pid)["labels"])]
        assert sorted(got) == sorted(rec["labels"])
    # one record checked by hand: a sea patch
    rec = decode_record(records["S2A_MSIL2A_20170613T101031_39_24"], key="k", path="x")
    assert rec["labels_43"] == ["Sea and ocean"] and rec["labels"] == ["Marine waters"]


def test_splits_from_csvs_and_lmdb_path_itself(encoded_lmdb_dir: Path) -> None:
    expected = {}
    for split in ("train", "val", "test"):
        for name in (encoded_lmdb_dir / f"{split}.csv").read_text().split():
            expected[name] = split
    for src in (encoded_lmdb_dir, encoded_lmdb_dir / "BigEarthNetEncoded.lmdb"):
        ds = open_dataset(src)
        assert ds.kind == "encoded-lmdb"
        assert dict(zip(ds.ids, ds.splits())) == expected
        test = open_dataset(src, split="test", sensors=("s2",))
        assert set(test.ids) == {k for k, v in expected.items() if v == "test"}
        assert "s1" not in test[0] and test[0]["split"] == "test"


def test_record_globals_are_only_stubs_and_numpy(records: dict[str, bytes]) -> None:
    """Every global the real records name is one the restricted unpickler resolves."""
    from csmae.data.unpickle import ALLOWED_GLOBALS, STUB_MODULE_PREFIX

    seen = set()
    for blob in records.values():
        pushed: list[object] = []  # value pushed by each op (None for non-strings)
        memo: dict[int, object] = {}
        for op, arg, _ in pickletools.genops(blob):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE"):
                pushed.append(arg)
            elif op.name in ("BINGET", "LONG_BINGET"):
                pushed.append(memo.get(arg))
            elif op.name == "MEMOIZE":
                memo[len(memo)] = pushed[-1]
            elif op.name == "STACK_GLOBAL":
                module, name = pushed[-2], pushed[-1]
                seen.add((module, name))
                pushed.append(None)
            elif op.name not in ("FRAME", "PROTO", "MARK"):
                pushed.append(None)
    assert len(seen) == 10
    for module, name in seen:
        assert module.startswith(STUB_MODULE_PREFIX) or (module, name) in ALLOWED_GLOBALS, (module, name)
    assert ("numpy", "ndarray") in seen and ("numpy", "dtype") in seen


def test_sensor_band_order_any_subset(encoded_lmdb_dir: Path) -> None:
    full = open_dataset(encoded_lmdb_dir, s2_bands="all", sensors=("s2",))
    sub = open_dataset(encoded_lmdb_dir, s2_bands=["B8A", "B02", "B01"], sensors=("s2",))
    a, b = full[3]["s2"], sub[3]["s2"]
    s2 = get_sensor("s2", bands="all")
    for i, band in enumerate(["B8A", "B02", "B01"]):
        np.testing.assert_array_equal(b[i], a[s2.index(band)])
