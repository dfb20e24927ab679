"""reBEN folders take footprints from their GeoTIFF georeferencing (real georeferenced v1 band files
laid out as a reBEN tree); without georeferencing (the LMDB) the geometry stays null."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

shapely = pytest.importorskip("shapely")
pyproj = pytest.importorskip("pyproj")


def _reben_from_v1(v1_roots, out: Path) -> Path:
    import pandas as pd

    s2_root, s1_root = v1_roots
    rows = []
    for d2 in sorted(p for p in s2_root.iterdir() if p.is_dir()):
        doc = json.loads((d2 / f"{d2.name}_labels_metadata.json").read_text())
        d1 = next(p for p in s1_root.iterdir()
                  if json.loads((p / f"{p.name}_labels_metadata.json").read_text())
                  ["corresponding_s2_patch"] == d2.name)
        for src, top in ((d2, "BigEarthNet-S2"), (d1, "BigEarthNet-S1")):
            shutil.copytree(src, out / top / "group" / src.name)
        rows.append({"patch_id": d2.name, "labels": ["Arable land"], "split": "test",
                     "country": "Austria", "s1_name": d1.name, "doc": doc})
    meta = pd.DataFrame([{k: v for k, v in r.items() if k != "doc"} for r in rows])
    meta.to_parquet(out / "metadata.parquet")
    return out


def test_reben_folder_footprints_from_geotiff(v1_roots, tmp_path):
    from csmae.data import open_dataset

    root = _reben_from_v1(v1_roots, tmp_path / "reben")
    ds = open_dataset(root)
    assert ds.kind == "reben-folders" and len(ds) == 6
    for i in range(len(ds)):
        s = ds[i]
        doc = json.loads((v1_roots[0] / s["id"] / f"{s['id']}_labels_metadata.json").read_text())
        c = doc["coordinates"]
        t = pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(doc["projection"]), "EPSG:4326", always_xy=True)
        xs, ys = [c["ulx"], c["lrx"], c["lrx"], c["ulx"]], [c["uly"], c["uly"], c["lry"], c["lry"]]
        lon, lat = t.transform(xs, ys)
        ref = np.column_stack([lon, lat])
        got = np.asarray(shapely.from_wkb(s["geometry"]).exterior.coords)[:-1]
        assert np.abs(got[:, None] - ref[None]).max(axis=2).min(axis=1).max() < 1e-6
        assert s["datetime"]["s1"] is not None and s["crs"].startswith("EPSG:326")
