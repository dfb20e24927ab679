"""STAC items whose assets are a raw GRD product (stactools / Planetary Computer sentinel-1-grd asset keys):
``csmae tile --stac`` and ``csmae ingest --stac`` give the store of the same product as a ``.SAFE``; items
missing an XML asset, with remote assets, or of another mode are refused naming the item and the asset."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from csmae.errors import DataError
from tests.scenes.grd_fixtures import PRODUCT, make_product
from tests.scenes.test_grd_tile import S2_T

pytest.importorskip("pystac")


def grd_item(path: Path, files: dict[str, Path], *, drop: tuple[str, ...] = (), props: dict | None = None,
             hrefs: dict[str, str] | None = None) -> Path:
    """A raw GRD item as stactools-packages/sentinel1 writes it (``files``: asset key -> file)."""
    from csmae.data.scenes.example import write_stac_item

    assets = {k: v for k, v in files.items() if k not in drop}
    props = {"sar:instrument_mode": "IW", "sar:product_type": "GRD", "sar:polarizations": ["VV", "VH"],
             "start_datetime": "2021-08-09T17:39:53Z", "end_datetime": "2021-08-09T17:40:18Z",
             **(props or {})}
    write_stac_item(path, item_id=PRODUCT, when=datetime(2021, 8, 9, 17, 40, 5, tzinfo=UTC), assets=assets,
                    bbox=[1.5, 44.5, 5.2, 46.5], properties=props)
    d = json.loads(path.read_text())
    d["collection"] = "sentinel-1-grd"
    for k, h in (hrefs or {}).items():
        d["assets"][k]["href"] = h
    path.write_text(json.dumps(d))
    return path


def safe_assets(safe: Path) -> dict[str, Path]:
    """The asset keys of stactools' GRD items over a SAFE folder (grd/metadata_links.py)."""
    out = {"safe-manifest": safe / "manifest.safe"}
    cal = safe / "annotation" / "calibration"
    for pol in ("vv", "vh"):
        out[pol] = next((safe / "measurement").glob(f"*-{pol}-*.tiff"))
        out[f"schema-product-{pol}"] = next((safe / "annotation").glob(f"*-{pol}-*.xml"))
        out[f"schema-calibration-{pol}"] = next(cal.glob(f"calibration-*-{pol}-*"))
        out[f"schema-noise-{pol}"] = next(cal.glob(f"noise-*-{pol}-*"))
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from rasterio.crs import CRS

    from csmae.data.scenes.example import write_band_files
    from tests.geo.tile_fixtures import load_real_mosaic

    root = tmp_path_factory.mktemp("grdstac")
    m = load_real_mosaic()
    s2 = write_band_files(root / "s2", m.s2, crs=CRS.from_epsg(32631), transform=S2_T, tile="31TCJ",
                          stamp="20210809T105031")
    safe = make_product(root / "product").safe
    item = grd_item(root / "items" / "grd.json", safe_assets(safe))
    # Planetary Computer's layout: converted files renamed iw-vv.tiff, annotation XML as iw-vv.xml
    pc = root / "pc" / PRODUCT
    renamed = {}
    for key, f in safe_assets(safe).items():
        pol = key[-2:]
        if key in ("vv", "vh"):
            name = f"measurement/iw-{pol}.tiff"
        elif key.startswith("schema-product"):
            name = f"annotation/iw-{pol}.xml"
        elif key.startswith("schema-"):
            name = f"annotation/calibration/{key.split('-')[1]}-iw-{pol}.xml"
        else:
            name = f.name
        (pc / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, pc / name)
        renamed[key] = pc / name
    pc_item = grd_item(root / "pc" / "item.json", renamed)
    return {"root": root, "s2": [str(p) for p in s2], "safe": str(safe), "item": str(item),
            "pc_item": str(pc_item), "assets": safe_assets(safe)}


def test_grd_item_tiles_as_the_safe(inputs) -> None:
    from csmae.data.scenes import tile_scenes
    from tests.geo.tile_fixtures import store_arrays

    root = inputs["root"]
    tile_scenes(root / "from_safe", s2=inputs["s2"], s1=[inputs["safe"]])
    tile_scenes(root / "from_item", s2=inputs["s2"], stac=[inputs["item"]])
    tile_scenes(root / "from_pc", s2=inputs["s2"], stac=[inputs["pc_item"]])
    want, ids = store_arrays(root / "from_safe")
    assert len(ids) == 6
    for kind in ("from_item", "from_pc"):
        got, got_ids = store_arrays(root / kind)
        assert got_ids == ids
        np.testing.assert_array_equal(got["s1"], want["s1"])
        man = json.loads((root / kind / "manifest.json").read_text())
        s1 = man["tiling"]["scenes"][0]["s1"][0]
        assert s1["kind"] == "S1 GRD (raw)" and s1["ipf_version"] == "003.31"
        assert s1["source"] == inputs["item" if kind == "from_item" else "pc_item"]
        checks = [c for c in man["tiling"]["product_checksums"] if c.get("item")]
        assert len(checks) == 1
        if kind == "from_item":  # the SAFE's own files: checked against its manifest.safe
            assert checks[0]["checked"] and checks[0]["files_checked"] == 8
        else:  # renamed copies are not the manifest's names: recorded, not claimed
            assert not checks[0]["checked"] and len(checks[0]["unlisted"]) == 8


def test_grd_item_with_dem(inputs, tmp_path: Path) -> None:
    """--dem with a GRD item: sarsen opens the SAFE folder of its safe-manifest asset."""
    from csmae.data.scenes import tile_scenes
    from csmae.data.scenes.grd_scene import open_grd_scene
    from tests.geo.tile_fixtures import store_arrays
    from tests.scenes.test_grd_dem import write_dem

    dem = tmp_path / "dem.tif"
    write_dem(dem, open_grd_scene(inputs["safe"]).grid.points)
    tile_scenes(tmp_path / "a", s2=inputs["s2"], s1=[inputs["safe"]], dem=str(dem))
    tile_scenes(tmp_path / "b", s2=inputs["s2"], stac=[inputs["item"]], dem=str(dem))
    want, got = store_arrays(tmp_path / "a")[0], store_arrays(tmp_path / "b")[0]
    np.testing.assert_array_equal(got["s1"], want["s1"])
    no_manifest = grd_item(tmp_path / "nm.json", inputs["assets"], drop=("safe-manifest",))
    with pytest.raises(DataError, match="'safe-manifest' asset") as e:
        tile_scenes(tmp_path / "c", s2=inputs["s2"], stac=[str(no_manifest)], dem=str(dem))
    assert str(no_manifest) in str(e.value)


@pytest.mark.parametrize("missing", ["schema-calibration-vh", "schema-noise-vv", "schema-product-vv", "vh"])
def test_grd_item_without_an_xml_asset_refused(inputs, tmp_path: Path, missing: str) -> None:
    from csmae.data.scenes import tile_scenes

    item = grd_item(tmp_path / "item.json", inputs["assets"], drop=(missing,))
    with pytest.raises(DataError, match=f"the S1 GRD item {PRODUCT} has no '{missing}' asset") as e:
        tile_scenes(tmp_path / "out", s2=inputs["s2"], stac=[str(item)])
    assert str(item) in str(e.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_grd_item_bad_kinds_refused(inputs, tmp_path: Path) -> None:
    from csmae.data.scenes import tile_scenes

    ew = grd_item(tmp_path / "ew.json", inputs["assets"], props={"sar:instrument_mode": "EW"})
    with pytest.raises(DataError, match="an EW mode product") as e:
        tile_scenes(tmp_path / "a", s2=inputs["s2"], stac=[str(ew)])
    assert str(ew) in str(e.value)
    hh = grd_item(tmp_path / "hh.json", inputs["assets"], props={"sar:polarizations": ["HH", "HV"]})
    with pytest.raises(DataError, match="VV and VH are both needed"):
        tile_scenes(tmp_path / "b", s2=inputs["s2"], stac=[str(hh)])
    remote = grd_item(tmp_path / "remote.json", inputs["assets"],
                      hrefs={"schema-noise-vv": "https://example.invalid/noise-iw-vv.xml"})
    with pytest.raises(DataError, match="asset 'schema-noise-vv' is remote") as e:
        tile_scenes(tmp_path / "c", s2=inputs["s2"], stac=[str(remote)])
    assert str(remote) in str(e.value)
    assert not any((tmp_path / n).exists() for n in ("a", "b", "c"))


def test_ingest_grd_item(inputs, tmp_path: Path) -> None:
    """``csmae ingest --stac`` with a raw GRD item (and the S2 band files): one scene job, 6 patches."""
    from csmae.cli import main
    from tests.retrieval.conftest import save_tiny

    model = save_tiny(tmp_path / "model")
    args = ["ingest", "--s2", *inputs["s2"], "--stac", inputs["item"], "--model", str(model), "--index",
            str(tmp_path / "idx"), "--precision", "fp32", "--device", "cpu"]
    assert main(args) == 0
    man = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert [r["patches"] for r in man["ingested"]] == [6] and man["rows"] == 12  # 6 places x (S1, S2)
    assert main(args) == 0  # again: already ingested, skipped
    man = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert len(man["ingested"]) == 1 and man["rows"] == 12
