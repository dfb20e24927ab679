"""Cut your own georeferenced Sentinel-2 L2A / Sentinel-1 GRD scenes into a prepared store of
paired 120x120 patches (BigEarthNet-style), which every other command reads like any store.

Inputs. S2: a .SAFE folder, per-band GeoTIFF/COG/JP2 files with the band in the name (or their
folder), or one multi-band GeoTIFF with band descriptions. S1: a raw IW GRD product as downloaded
(.SAFE folder or .SAFE.zip, read in place), or VV and VH GeoTIFF/COG already terrain-corrected (two
files or one 2-band file), linear power or dB. --stac: local STAC Item JSON files instead of paths.
Either sensor may be left out (a single-sensor store).

Raw GRD. DN -> sigma0 (--s1-calibration) with the product's calibration LUT, thermal noise removed
(range and azimuth vectors), negative results and border noise are nodata; geocoded through the
product's GCP grid by GDAL (thin-plate spline; --s1-geocoding poly3), or, with --dem, terrain-
corrected from the orbit and the DEM through sarsen. Without a DEM the command prints the expected
terrain error (dh / tan(incidence)). The manifest records the steps, the IPF version and the
geocoding of every product.

What happens. The S2 10 m grid defines the patches (--stride pixels apart); 20 m bands are cut
from their own grid (60x60) and upsampled as BigEarthNet (bicubic); S1 is reprojected onto each
patch's grid (GDAL warp, bilinear, in linear power) and converted to dB; S2 DN are brought to the
pre-2022 BigEarthNet convention (BOA_ADD_OFFSET read from MTD_MSIL2A.xml or the STAC item).
Patches with less than --min-valid valid pixels (nodata, S1 border, SCL clouds with --scl) are
listed in STORE/skipped.csv. Ids: <scene>_r<row>_c<col>. Interrupted? Run the same command again.
S1 alone: the patches are the 1200 m place cells of the scene's UTM zone (docs/places.md).

Overlapping tiles. Neighbouring tiles of one pass (two MGRS tiles of one S2 datatake, two slices of
one S1 datatake) share ground: a patch of one scene with the same place, sensor and acquisition as a
patch of the other is kept once (more valid pixels, then farther from its scene's edge, then the
scene name: never the argument order); the other is listed in skipped.csv naming the kept patch.

Examples:
  csmae tile --s2 S2A_MSIL2A_20230613T101031_N0509_R022_T33UUP_20230613T141227.SAFE \\
      --s1 S1A_IW_GRDH_1SDV_20230613T165043_VV.tif S1A_IW_GRDH_1SDV_20230613T165043_VH.tif \\
      --out stores/t33uup --scl --max-days 3
  csmae tile --stac items/s2.json items/s1.json --out stores/aoi --workers 2
  csmae tile --s1 s1_scene.tif --s1-units linear --out stores/s1only   # one 2-band file (VV, VH)
  csmae tile --s2 S2B_MSIL2A_...SAFE --s1 S1A_IW_GRDH_1SDV_...SAFE.zip --out stores/raw   # raw GRD
  csmae tile --s2 S2B_MSIL2A_...SAFE --s1 S1A_IW_GRDH_1SDV_...SAFE --dem glo30.tif --out stores/rtc
"""

from __future__ import annotations

import argparse


def _codes(text: str) -> list[int]:
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scl takes comma-separated SCL codes, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from csmae.cli.grd_options import add_grd_options

    p.add_argument("--s2", nargs="+", default=[], metavar="PATH",
                   help="S2 L2A inputs (SAFE, band files, stack)")
    p.add_argument("--s1", nargs="+", default=[], metavar="PATH",
                   help="S1 inputs: raw GRD products (.SAFE folder or .zip, IW VV+VH) or terrain-corrected "
                        "VV/VH files")
    p.add_argument("--stac", nargs="+", default=[], metavar="ITEM.json", help="local STAC Item JSON file(s)")
    p.add_argument("--out", required=True, help="store folder to write")
    p.add_argument("--stride", type=int, default=120, help="pixels between patches on the 10 m grid (default "
                   "120: no overlap; even)")
    p.add_argument("--min-valid", type=float, default=0.9,
                   help="least fraction of valid pixels per patch and sensor (default 0.9)")
    p.add_argument("--scl", nargs="?", const="", default=None, type=str, metavar="CODES",
                   help="drop pixels of these SCL classes (default with no value: 0,1,3,8,9,10,11 = "
                        "nodata, defective, cloud shadow, clouds, cirrus, snow)")
    p.add_argument("--s1-units", choices=["linear", "db"], help="S1 units (default: as the file says, "
                   "else decided from the values)")
    add_grd_options(p)  # --s1-calibration, --s1-geocoding, --dem (the same in csmae ingest)
    area = p.add_mutually_exclusive_group()
    area.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"),
                      help="cut only the patches that intersect this lon/lat box (W > E: across the "
                           "antimeridian)")
    area.add_argument("--aoi", metavar="AREA.geojson",
                      help="cut only the patches that intersect these polygons (GeoJSON, lon/lat)")
    p.add_argument("--max-days", type=float,
                   help="refuse S1/S2 pairs acquired more than this many days apart")
    p.add_argument("--boa-offset", type=float, help="S2 DN offset of every band when the inputs carry no "
                   "MTD_MSIL2A.xml / STAC offset (e.g. -1000 for processing baseline >= 04.00)")
    p.add_argument("--layout", choices=["float32", "native"], default="float32", help="store layout "
                   "(as csmae prepare)")
    p.add_argument("--workers", type=int, default=1, help="strips cut in parallel (threads)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")
    p.add_argument("--no-product-checksums", dest="product_checksums", action="store_false",
                   help="do not check the files of .SAFE products against the checksums in their "
                        "manifest.safe (checked by default; recorded in the store manifest)")
    p.add_argument("--yes", action="store_true",
                   help="go ahead when a scene is larger than any product of its sensor, or the store "
                        "would exceed 64 GiB or store each pixel more than 16 times (never past the disk)")


def run(args: argparse.Namespace) -> int:
    import os

    # GDAL's block cache defaults to 5% of RAM; the strips need the blocks of ~2 block rows per
    # band and thread (~250 MB at 2 threads), so cap it before GDAL starts (set it to override)
    os.environ.setdefault("GDAL_CACHEMAX", "512")
    from tqdm import tqdm

    from csmae.data.scenes import tile_scenes

    bars: list[tqdm] = []  # created once the scenes are checked (errors come before any bar)

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="strip", desc="tile", dynamic_ncols=True))
        bars[0].n = done
        bars[0].refresh()

    from csmae.cli.grd_options import grd_options
    from csmae.data.scenes.aoi import bbox_area, read_aoi

    scl = None if args.scl is None else _codes(args.scl)
    aoi = bbox_area(args.bbox) if args.bbox else read_aoi(args.aoi) if args.aoi else None
    try:
        res = tile_scenes(args.out, s2=args.s2, s1=args.s1, stac=args.stac, stride=args.stride,
                          min_valid=args.min_valid, scl=scl, s1_units=args.s1_units, max_days=args.max_days,
                          layout=args.layout, boa_offset=args.boa_offset, workers=args.workers,
                          overwrite=args.overwrite, product_checksums=args.product_checksums,
                          yes=args.yes, progress=progress, aoi=aoi, **grd_options(args))
    finally:
        for b in bars:
            b.close()
    for m in res.messages:
        print(m)
    for g in res.gaps:
        days = "unknown" if g["days"] is None else f"{g['days']:.2f} days"
        print(f"S2 {g['s2']} / S1 {g['s1']}: acquired {days} apart")
    resumed = f", resumed {res.chunks_resumed} of {res.chunks} strips" if res.chunks_resumed else ""
    same = (f", {res.overlap_dropped:,} of them the same ground, date and sensor as a kept patch of an "
            "overlapping scene" if res.overlap_dropped else "")
    print(f"wrote {res.path}: {res.patches:,} patches, {res.skipped:,} skipped{same} (see skipped.csv)"
          f"{resumed}")
    return 0
