"""Every acquisition of one place, both sensors, in time order, with descriptor distances.

A place is a 1200 m cell of a fixed UTM grid (csmae.geo.place_of of a footprint; docs/places.md):
the same ground at any date, from S1 or S2, from any scene. Give it as --place KEY, as an archive
item (--id ID, or ID@SENSOR when the id has both sensors: its place) or as a point (--at LON,LAT:
the place of the patch whose footprint contains it). Each acquisition gets the cosine distance of
its descriptor to --reference: first (the first acquisition, default), previous (the one before
it), or an archive item ID / ID@SENSOR. Filters: --sensor (repeat), --start/--end YYYY-MM-DD
(inclusive, UTC). Prints a table; --json prints the timeline as JSON; --geojson writes one feature
per acquisition (footprint; properties order, place, id, sensor, datetime, distance, labels).

Examples:
  csmae timeline idx --place 33N-337-4451
  csmae timeline idx --at=13.72,48.222 --reference previous --geojson timeline.geojson
  csmae timeline idx --id S2A_MSIL2A_20170613T101031_87_48@s2 --sensor s1 --start 2018-01-01 --json
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from csmae.cli.search import _lon_lat

    p.add_argument("index_dir", help="index folder (csmae index)")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--place", metavar="KEY", help="place key, e.g. 33N-337-4451")
    q.add_argument("--id", metavar="ID[@SENSOR]", help="the place of this archive item")
    q.add_argument("--at", metavar="LON,LAT", type=_lon_lat,
                   help="the place of the patch whose footprint contains this point (WGS 84 degrees; "
                        "write --at=-8.5,53.2 when the longitude is negative)")
    p.add_argument("--reference", default="first", metavar="first|previous|ID[@SENSOR]",
                   help="distances to the first acquisition (default), the previous one, or an item")
    p.add_argument("--sensor", action="append", metavar="NAME", help="only acquisitions of this sensor")
    p.add_argument("--start", metavar="YYYY-MM-DD", help="acquired on or after this UTC date")
    p.add_argument("--end", metavar="YYYY-MM-DD", help="acquired on or before this UTC date")
    p.add_argument("--json", action="store_true", help="print the timeline as JSON")
    p.add_argument("--geojson", metavar="PATH", help="also write the acquisitions as GeoJSON to PATH")


def run(args: argparse.Namespace) -> int:
    import json

    from csmae.retrieval.filters import Filter
    from csmae.retrieval.index import SearchIndex
    from csmae.retrieval.search_core import SearchCore
    from csmae.retrieval.timeline import parse_reference, place_timeline

    if args.geojson and not str(args.geojson).lower().endswith((".geojson", ".json")):
        raise ValueError(f"{args.geojson}: write the timeline as .geojson")
    where = Filter(sensor=args.sensor, start=args.start, end=args.end)
    core = SearchCore(SearchIndex.load(args.index_dir))
    patch_id, sensor = None, None
    if args.id:
        item = parse_reference(args.id)
        patch_id, sensor = (item, None) if isinstance(item, str) else item
    tl = place_timeline(core, place=args.place, patch_id=patch_id, sensor=sensor,
                        lon=args.at[0] if args.at else None, lat=args.at[1] if args.at else None,
                        reference=parse_reference(args.reference), where=where)
    if args.geojson:
        from csmae.atomic import write_json_atomic

        write_json_atomic(args.geojson, tl.to_geojson())
    if args.json:
        print(json.dumps({**tl.to_dict(), "where": where.to_dict()}, indent=2))
        return 0
    ref = tl.reference_item
    against = "the previous acquisition" if tl.reference == "previous" else \
        f"{ref['id']} ({ref['sensor']}, {ref['datetime']})" if ref else tl.reference
    print(f"place {tl.place}: {len(tl.acquisitions)} acquisitions ({', '.join(tl.to_dict()['sensors'])}); "
          f"distance to {against}")
    print(f"{'#':>3}  {'datetime':<20}  {'sensor':<6}  {'distance':>8}  id")
    for i, a in enumerate(tl.acquisitions):
        d = "-" if a.distance is None else f"{a.distance:8.4f}"
        print(f"{i:>3}  {a.datetime or '-':<20}  {a.sensor:<6}  {d:>8}  {a.id}")
    if args.geojson:
        print(f"wrote {args.geojson}")
    return 0
