"""Search an index by archive id, by place or by image files.

Query by an archive item (--id, with --sensor saying which of its images), by a place (--at LON,LAT:
the archive item of --sensor whose footprint contains that point, WGS 84 degrees) or by files:
GeoTIFF band files (one per band, named like *_B02.tif / *_VV.tif; 20 m bands are upsampled) or one
.npy/.npz (C, 120, 120) in the model's band order. --target picks the archive sensor (s1, s2 or any).
--sensor s1+s2 (with --id or --at) queries with the fused descriptor of the pair's S1 and S2 items:
the mean of their L2-normalised descriptors, renormalised (csmae.retrieval.fusion).
--geojson writes the query and the hits as a GeoJSON FeatureCollection (footprints; properties
role, rank, score, id, sensor, labels, datetime).

Filters (the true top-k among the archive items that pass; flags repeat for several values):
--label NAME with --label-mode any|all (default any), --exclude-label NAME, --split, --country,
--season, --start/--end YYYY-MM-DD (inclusive, UTC acquisition date), --bbox W S E N (EPSG:4326;
items whose footprint intersects the box; items without a footprint never match; W > E is a box
across the antimeridian, e.g. --bbox 177 -19 -178 -16 around Fiji).

Examples:
  csmae search idx/reben --id S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57 --sensor s1 --target s2
  csmae search idx/reben --file patch_B02.tif patch_B03.tif ... --sensor s2 --k 5 --grid out.png
  csmae search idx/reben --file query.npy --sensor s1 --json
  csmae search idx/reben --id ID --sensor s1 --target s2 --label "Coniferous forest" --country Portugal \
      --start 2018-06-01 --end 2018-08-31 --bbox -9.5 36.9 -6.2 42.2
  csmae search idx/v1 --at 13.72,48.222 --sensor s2 --target s1 --geojson hits.geojson
"""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("index_dir", help="index folder (csmae index)")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--id", help="archive pair id to query with")
    q.add_argument("--file", nargs="+", help="query image file(s): GeoTIFF bands or one .npy/.npz")
    q.add_argument("--at", metavar="LON,LAT", type=_lon_lat,
                   help="query with the archive patch (of --sensor) whose footprint contains this point "
                        "(WGS 84 degrees; write --at=-8.5,53.2 when the longitude is negative)")
    p.add_argument("--sensor", required=True,
                   help="sensor of the query image (s1 or s2), or s1+s2: the fused descriptor of the "
                        "pair's S1 and S2 items (with --id or --at; csmae.retrieval.fusion)")
    p.add_argument("--target", default="any", help="archive sensor to search: s1, s2 or any (default)")
    p.add_argument("--k", type=int, default=10, help="number of results")
    p.add_argument(
        "--keep-self", action="store_true", help="with --id, keep the query item itself in results"
    )
    p.add_argument("--model", help="model folder (default: the one recorded in the index)")
    p.add_argument("--data", nargs="+", help="dataset source(s) for --grid previews (default: recorded)")
    f = p.add_argument_group("filters")
    f.add_argument("--label", action="append", metavar="NAME", help="results with this label (repeat)")
    f.add_argument("--label-mode", choices=("any", "all"), default="any",
                   help="--label: any of them (default) or all of them")
    f.add_argument("--exclude-label", action="append", metavar="NAME", help="results without this label")
    f.add_argument("--split", action="append", choices=("train", "val", "test"), help="results of this split")
    f.add_argument("--country", action="append", metavar="NAME", help="results from this country")
    f.add_argument("--season", action="append", metavar="NAME", help="results of this season")
    f.add_argument("--start", metavar="YYYY-MM-DD", help="acquired on or after this UTC date")
    f.add_argument("--end", metavar="YYYY-MM-DD", help="acquired on or before this UTC date")
    f.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"),
                   help="footprint intersects this lon/lat box (W > E: across the antimeridian)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--grid", help="also draw the query and results into this PNG")
    p.add_argument("--geojson", metavar="PATH",
                   help="also write query + hits as a GeoJSON FeatureCollection (footprints) to PATH")


def _lon_lat(text: str) -> tuple[float, float]:
    """``"13.72,48.22"`` -> (13.72, 48.22) (longitude first, as in GeoJSON)."""
    parts = text.replace(" ", "").split(",")
    try:
        lon, lat = (float(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected LON,LAT in degrees (e.g. 13.72,48.22), got {text!r}") from None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise argparse.ArgumentTypeError(f"LON,LAT out of range (lon -180..180, lat -90..90): {text!r}")
    return lon, lat


def run(args: argparse.Namespace) -> int:
    import json

    from csmae.retrieval.fusion import FUSED, is_fused
    from csmae.retrieval.retriever import Retriever

    where = filter_from_args(args)
    fused = is_fused(args.sensor)
    if fused and args.file:
        raise ValueError(f"--sensor {FUSED} fuses the S1 and S2 items of an archive pair: query with --id "
                         "or --at, not --file")
    r = Retriever.load(args.index_dir, model_dir=args.model, data=args.data)
    shown = "s2" if fused else args.sensor  # the image shown for a fused query (grid, GeoJSON)
    if args.at:
        args.id = r.locate(*args.at, sensor=shown)
    if args.id:
        hits = r.search_by_id(
            args.id, sensor=args.sensor, target=args.target, k=args.k, exclude_self=not args.keep_self,
            where=where,
        )
    else:
        hits = r.search_by_files(args.file, sensor=args.sensor, target=args.target, k=args.k, where=where)
    if args.grid:
        from csmae.retrieval.report import grid_for_hits

        raw = None
        if args.file:
            from csmae.retrieval.queryfiles import read_query

            raw = read_query(args.file, r.model.sensors[args.sensor])
        grid_for_hits(r, hits, args.grid, query_id=args.id, query_sensor=shown, query_raw=raw)
    if args.geojson:
        from csmae.geo.geojson import feature_collection, write_geojson

        query = {**r.item(args.id, shown), "sensor": args.sensor} if args.id else {"id": None,
                                                                                 "sensor": args.sensor}
        write_geojson(args.geojson, feature_collection(query, hits))
    if args.json:
        query = {"id": args.id, "file": args.file, "sensor": args.sensor, "target": args.target, "k": args.k,
                 "where": where.to_dict(), **({"at": list(args.at)} if args.at else {})}
        print(json.dumps({"query": query, "hits": [h.to_dict() for h in hits]}, indent=2))
        return 0
    if args.at:
        print(f"query: {args.id} ({args.sensor}), its footprint contains lon {args.at[0]}, lat {args.at[1]}")
    if not where.is_empty:
        print(f"filter: {where.to_dict()}: {len(hits)} results")
    print(f"{'rank':>4}  {'score':>7}  {'sensor':<6}  {'id':<60}  labels")
    for h in hits:
        shared = f"  [shared: {len(h.overlap)}]" if args.id else ""
        print(f"{h.rank:>4}  {h.score:7.4f}  {h.sensor:<6}  {h.id:<60}  {'; '.join(h.labels)}{shared}")
    for path in (args.grid, args.geojson):
        if path:
            print(f"wrote {path}")
    return 0


def filter_from_args(args: argparse.Namespace) -> Any:
    """The search Filter of the command-line flags (validated: bad dates/boxes are errors here)."""
    from csmae.retrieval.filters import Filter

    return Filter(
        split=args.split,
        labels_any=args.label if args.label_mode == "any" else None,
        labels_all=args.label if args.label_mode == "all" else None,
        labels_none=args.exclude_label,
        country=args.country,
        season=args.season,
        start=args.start,
        end=args.end,
        bbox=tuple(args.bbox) if args.bbox else None,
    )
