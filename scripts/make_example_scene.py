"""Write a small example of "your own imagery" for ``csmae tile`` (README "Your own imagery").

Synthetic land-cover pixels (csmae.data.synth_scene) on the real grid of tile T33UUP, written the
way real products come:

- ``S2B_MSIL2A_20230613T101031_N0509_R022_T33UUP_20230613T141227.SAFE``: an L2A product of processing
  baseline 05.09 (DN carry BOA_ADD_OFFSET -1000, declared in MTD_MSIL2A.xml), JP2 bands in
  GRANULE/*/IMG_DATA/R10m|R20m, an SCL band with one cloudy patch;
- ``s1/S1A_IW_GRDH_1SDV_20230613T165043_VV.tif`` / ``_VH.tif``: gamma0 in linear power (as Planetary
  Computer's sentinel-1-rtc), on another grid: UTM zone 32N at 20 m;
- ``stac/s2.json`` and ``stac/s1.json``: local STAC Items over the same files (Planetary Computer
  style asset keys B02..., vv, vh).

and, in ``raw/``, products as the Copernicus Data Space delivers them (when the real GRD metadata of
``../shared/data/s1-grd`` is there, or ``--grd-xml``):

- ``S2B_MSIL2A_20210809T105031_N0301_R051_T31TDK_20210809T134023.SAFE.zip``: a zipped L2A of processing
  baseline 03.01 (no BOA offset), 3 x 4 patches on the grid of tile T31TDK (UTM 31N), synthetic pixels;
- ``S1A_IW_GRDH_1SDV_20210809T173953_20210809T174018_039156_049F13_6FF8.SAFE.zip``: a zipped raw IW
  GRDH: the real product's manifest, annotation, calibration and noise XMLs, and full-size (26,144 x
  16,676) uint16 measurement TIFFs, sparse, whose DN are written only under the S2 area: the synthetic
  S1 backscatter of the same land cover put into radar geometry through the product's geolocation grid
  and encoded with its real calibration LUT and thermal noise;
- ``dem.tif``: a DEM over that area (~30 m, EPSG:4979 lon/lat with ellipsoidal heights, interpolated
  from the product's geolocation grid) for ``csmae tile --dem``.

Run: python scripts/make_example_scene.py OUT [--rows 3] [--cols 4] [--seed 0] [--grd-xml SAFE]
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

S2_PRODUCT = "S2B_MSIL2A_20230613T101031_N0509_R022_T33UUP_20230613T141227"
S1_NAME = "S1A_IW_GRDH_1SDV_20230613T165043"
#: the raw example: an L2A over the real GRD product of ../shared/data/s1-grd, acquired the same day
S2_RAW = "S2B_MSIL2A_20210809T105031_N0301_R051_T31TDK_20210809T134023"
GRD = "S1A_IW_GRDH_1SDV_20210809T173953_20210809T174018_039156_049F13_6FF8"
GRD_XML = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "s1-grd" / f"{GRD}.SAFE"


def make(out: Path, rows: int = 3, cols: int = 4, seed: int = 0, grd_xml: Path | None = GRD_XML
         ) -> dict[str, Path]:
    """Write the example scene into ``out`` (and ``out/raw`` when ``grd_xml`` exists); returns the paths of
    its parts."""
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform, reproject, transform_bounds

    from csmae.data.scenes.example import post_2022, synthetic_scene, write_s1, write_safe, write_stac_item

    s2, s1_db = synthetic_scene(rows, cols, seed)
    crs = CRS.from_epsg(32633)
    t10 = Affine(10, 0, 399960 + 12000, 0, -10, 5400000 - 12000)  # inside T33UUP
    scl = np.full((rows * 60, cols * 60), 4, np.uint8)
    scl[0:60, 60:120] = 9  # patch (0, 1) under a cloud
    safe = write_safe(out, {b: post_2022(a) for b, a in s2.items()}, crs=crs, transform=t10,
                      product=S2_PRODUCT, baseline="05.09", offset=-1000, scl=scl)
    # S1 on another grid: zone 32N, 20 m, averaged in linear power
    other = CRS.from_epsg(32632)
    h, w = s1_db.shape[1:]
    bounds = (t10.c, t10.f - 10 * h, t10.c + 10 * w, t10.f)
    dt, dw, dh = calculate_default_transform(crs, other, w, h, *bounds, resolution=20)
    lin = np.full((2, dh + 8, dw + 8), np.nan, np.float32)
    dt = dt @ Affine.translation(-4, -4)
    reproject(np.power(10, s1_db / 10).astype(np.float32), lin, src_transform=t10, src_crs=crs,
              dst_transform=dt, dst_crs=other, resampling=Resampling.average, dst_nodata=np.nan)
    s1 = write_s1(out / "s1", 10 * np.log10(lin[0]), 10 * np.log10(lin[1]), crs=other, transform=dt,
                  name=S1_NAME, units="linear", nodata=float("nan"))
    bbox = list(transform_bounds(crs, "EPSG:4326", *bounds))
    img = next((safe / "GRANULE").iterdir()) / "IMG_DATA"
    s2_assets = {p.name.split("_")[2]: p for p in sorted(img.rglob("*.jp2"))}
    s2_item = write_stac_item(out / "stac" / "s2.json", item_id=S2_PRODUCT, bbox=bbox, assets=s2_assets,
                              when=datetime(2023, 6, 13, 10, 10, 31, tzinfo=UTC),
                              properties={"s2:processing_baseline": "05.09"})
    s1_item = write_stac_item(out / "stac" / "s1.json", item_id=S1_NAME, bbox=bbox,
                              assets={"vv": s1[0], "vh": s1[1]},
                              when=datetime(2023, 6, 13, 16, 50, 43, tzinfo=UTC))
    parts = {"safe": safe, "s1": out / "s1", "s2_item": s2_item, "s1_item": s1_item}
    if grd_xml is not None and grd_xml.is_dir():
        parts.update(make_raw(out / "raw", grd_xml, rows, cols, seed))
    return parts


def make_raw(out: Path, grd_xml: Path, rows: int = 3, cols: int = 4, seed: int = 0) -> dict[str, Path]:
    """The raw example (see the module doc) in ``out``: a zipped L2A, a zipped GRD, a DEM."""
    import tempfile

    from affine import Affine
    from rasterio.crs import CRS

    from csmae.data.scenes.example import (
        grd_sigma_from_map,
        synthetic_scene,
        write_grd_product,
        write_safe,
        zip_product,
    )

    s2, s1_db = synthetic_scene(rows, cols, seed)
    crs = CRS.from_epsg(32631)
    t10 = Affine(10, 0, 415000, 0, -10, 4972000)  # inside T31TDK and the GRD's swath (1.93 E, 44.89 N)
    out.mkdir(parents=True, exist_ok=True)
    safe = write_safe(out, s2, crs=crs, transform=t10, product=S2_RAW, baseline="03.01", offset=0,
                      scl=np.full((rows * 60, cols * 60), 4, np.uint8))
    s2_zip = zip_product(safe, out / f"{S2_RAW}.SAFE.zip", remove=True)
    sigma, region = grd_sigma_from_map(grd_xml, np.power(10.0, s1_db / 10.0), crs=crs, transform=t10)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        grd = write_grd_product(Path(tmp), grd_xml, sigma, region=region)
        grd_zip = zip_product(grd, out / f"{GRD}.SAFE.zip")
    dem = write_grid_dem(out / "dem.tif", grd_xml, crs=crs, transform=t10, shape=s1_db.shape[1:])
    return {"raw_s2": s2_zip, "raw_s1": grd_zip, "dem": dem}


def write_grid_dem(path: Path, grd_xml: Path, *, crs: object, transform: object, shape: tuple[int, ...],
                   margin: float = 0.03, res: float = 0.0003) -> Path:
    """A ~30 m lon/lat DEM around a map grid, heights interpolated (linearly) from the product's
    geolocation grid: a stand-in for Copernicus GLO-30, made from the product itself. Its CRS is
    EPSG:4979 (WGS 84 with ellipsoidal heights), as the grid's heights are."""
    import rasterio
    from affine import Affine
    from rasterio.warp import transform_bounds
    from scipy.interpolate import griddata

    from csmae.data.scenes.example import grd_annotation

    pts = grd_annotation(grd_xml).gcps
    t = transform
    h, w = shape
    w0, s0, e0, n0 = transform_bounds(crs, "EPSG:4326", t.c, t.f + t.e * h, t.c + t.a * w, t.f)  # type: ignore
    w0, s0, e0, n0 = w0 - margin, s0 - margin, e0 + margin, n0 + margin
    lon = np.arange(w0, e0, res) + res / 2
    lat = np.arange(n0, s0, -res) - res / 2
    gx, gy = np.meshgrid(lon, lat)
    z = griddata(pts[:, [3, 2]], pts[:, 4], (gx, gy), method="linear")
    with rasterio.open(path, "w", driver="GTiff", width=len(lon), height=len(lat), count=1, dtype="float32",
                       crs="EPSG:4979", transform=Affine(res, 0, w0, 0, -res, n0), compress="deflate") as dst:
        dst.write(z.astype(np.float32), 1)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--rows", type=int, default=3)
    ap.add_argument("--cols", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grd-xml", type=Path, default=GRD_XML,
                    help="the real GRD product's metadata (.SAFE folder of XMLs) for the raw example "
                         "(default: ../shared/data/s1-grd)")
    args = ap.parse_args(argv)
    parts = make(args.out, args.rows, args.cols, args.seed, args.grd_xml)
    if "raw_s1" not in parts:
        print(f"no raw example: {args.grd_xml} not found (the metadata of a real GRD product; see --grd-xml)")
    for k, p in parts.items():
        print(f"{k}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
