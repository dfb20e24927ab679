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

Run: python scripts/make_example_scene.py OUT [--rows 3] [--cols 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

S2_PRODUCT = "S2B_MSIL2A_20230613T101031_N0509_R022_T33UUP_20230613T141227"
S1_NAME = "S1A_IW_GRDH_1SDV_20230613T165043"


def make(out: Path, rows: int = 3, cols: int = 4, seed: int = 0) -> dict[str, Path]:
    """Write the example scene into ``out``; returns the paths of its parts."""
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
    return {"safe": safe, "s1": out / "s1", "s2_item": s2_item, "s1_item": s1_item}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--rows", type=int, default=3)
    ap.add_argument("--cols", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    parts = make(args.out, args.rows, args.cols, args.seed)
    for k, p in parts.items():
        print(f"{k}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
