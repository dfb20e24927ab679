"""Export the items, footprints and descriptors of an area of an index as GeoParquet.

Keeps the live items whose footprint intersects --bbox W S E N (EPSG:4326; W > E is a box across the
antimeridian, e.g. --bbox 177 -19 -178 -16 around Fiji) and, with --start/--end
(YYYY-MM-DD, inclusive, UTC), acquired in that period; --sensor (repeat) keeps those sensors. One
row per (id, sensor) item: id, sensor, split, labels, datetime, place, country, season, scene,
descriptor (float32 list of the index's dimension) and the footprint as GeoParquet 1.1 geometry
(geopandas.read_parquet / QGIS open it).

Examples:
  csmae export idx/archive --bbox 13.5 47.5 14.5 48.5 --out roi.parquet
  csmae export idx/archive --bbox 13.5 47.5 14.5 48.5 --start 2018-06-01 --end 2018-08-31 \\
      --sensor s2 --out roi-summer-s2.parquet
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index_dir", help="index folder (csmae index)")
    p.add_argument("--bbox", nargs=4, type=float, required=True, metavar=("W", "S", "E", "N"),
                   help="items whose footprint intersects this lon/lat box (W > E: across the antimeridian)")
    p.add_argument("--start", metavar="YYYY-MM-DD", help="acquired on or after this UTC date")
    p.add_argument("--end", metavar="YYYY-MM-DD", help="acquired on or before this UTC date")
    p.add_argument("--sensor", action="append", metavar="NAME", help="only items of this sensor (repeat)")
    p.add_argument("--out", required=True, help="GeoParquet file to write (.parquet)")


def run(args: argparse.Namespace) -> int:
    from csmae.retrieval.export import export_region
    from csmae.retrieval.filters import Filter
    from csmae.retrieval.index import SearchIndex

    where = Filter(bbox=tuple(args.bbox), start=args.start, end=args.end, sensor=args.sensor)
    if not str(args.out).lower().endswith(".parquet"):
        raise ValueError(f"{args.out}: the export is GeoParquet: give a .parquet path")
    res = export_region(SearchIndex.load(args.index_dir), args.out, where=where)
    per = ", ".join(f"{s}: {n}" for s, n in res.sensors.items())
    print(f"wrote {res.path}: {res.items} items ({per})")
    return 0
