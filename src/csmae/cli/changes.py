"""Rank the places of an index by how far their descriptors moved between two periods.

A place's descriptor in a period is the mean of its unit descriptors there (one sensor), its change
score the cosine distance between the before and after descriptors (csmae.retrieval.change). The
pairing says which sensor is compared before -> after: s2->s2, s1->s1, s2->s1 (S2 before, S1 after:
a cloudy after period), s1->s2, or auto (per place the first of those with acquisitions in both
periods, ranked by a z-score within each pairing; the pairing is recorded per place).

Periods are START/END (ISO dates, UTC, END exclusive). --bbox W S E N keeps the places whose
footprints intersect the lon/lat box (W > E: a box across the antimeridian). --out writes every
ranked place as GeoParquet (.parquet) or GeoJSON (.geojson): the place's 1200 m cell with rank,
place, score, pairing, n_before, n_after.
--like PLACE is the change-like search: the places whose change vector (after minus before
descriptor, centred over the places) resembles PLACE's, with the same --bbox filter on the results.

Examples:
  csmae changes demo/index-series --before 2018-04-01/2018-06-05 --after 2018-07-26/2018-10-01
  csmae changes idx --before 2018-04-01/2018-06-01 --after 2018-08-01/2018-10-01 --pairing 's2->s1' \
      --bbox 13.5 47.5 14.5 48.5 --out changes.parquet --k 20
  csmae changes idx --before 2018-04-01/2018-06-01 --after 2018-08-01/2018-10-01 --pairing s2:s2 \
      --like 33N-337-4451
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from csmae.retrieval.change import PAIRINGS

    p.add_argument("index_dir", help="index folder (csmae index)")
    p.add_argument("--before", required=True, metavar="START/END", help="the first period (ISO dates)")
    p.add_argument("--after", required=True, metavar="START/END", help="the second period (ISO dates)")
    p.add_argument("--pairing", default="auto", type=_pairing, metavar="|".join((*PAIRINGS, "auto")),
                   help="sensor before -> sensor after, quoted in a shell ('s2->s1'; s2:s1 also works); "
                        "default auto")
    p.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"),
                   help="places whose footprint intersects this lon/lat box (W > E: across the antimeridian)")
    p.add_argument("--like", metavar="PLACE",
                   help="change-like search: rank the places whose change resembles this place's "
                        "(needs one --pairing)")
    p.add_argument("--k", type=int, default=20, help="places printed (default 20; --out writes all)")
    p.add_argument("--out", metavar="PATH", help="write the ranked places to PATH (.parquet or .geojson)")
    p.add_argument("--geojson", metavar="PATH", help="also write the ranked places as GeoJSON to PATH")
    p.add_argument("--json", action="store_true", help="print the top --k places as JSON")


def _pairing(text: str) -> str:
    """``s2->s1``, ``s2:s1``, ``s2-s1`` or ``s2,s1`` -> ``"s2->s1"``; ``auto``."""
    from csmae.retrieval.change import PAIRINGS

    t = text.strip().lower()
    for sep in ("->", ":", ",", "-"):
        if sep in t:
            t = "->".join(x.strip() for x in t.split(sep, 1))
            break
    if t != "auto" and t not in PAIRINGS:
        raise argparse.ArgumentTypeError(f"unknown pairing {text!r}; expected one of {[*PAIRINGS, 'auto']}")
    return t


def run(args: argparse.Namespace) -> int:
    import json

    from csmae.retrieval.change import Period
    from csmae.retrieval.change_index import index_changes, write_changes
    from csmae.retrieval.index import SearchIndex

    before, after = Period.parse(args.before), Period.parse(args.after)
    if args.k < 1:
        raise ValueError(f"--k must be at least 1, got {args.k}")
    for path in (args.out, args.geojson):
        if path and not str(path).lower().endswith((".parquet", ".geojson", ".json")):
            raise ValueError(f"{path}: write changes as .parquet (GeoParquet) or .geojson")
    where = {"bbox": tuple(args.bbox)} if args.bbox else None
    index = SearchIndex.load(args.index_dir)
    if args.like:
        return _like(args, index, before, after, where)
    scores = index_changes(index, before=before, after=after, pairing=args.pairing, where=where)
    written = [str(write_changes(scores, p)) for p in (args.out, args.geojson) if p]
    top = scores.top(args.k).to_records()
    if args.json:
        print(json.dumps({"before": str(before), "after": str(after), "pairing": args.pairing,
                          "places": len(scores), "top": top}, indent=2))
        return 0
    print(f"{len(scores)} places seen in both periods ({before} -> {after}, pairing {args.pairing})")
    print(f"{'rank':>4}  {'score':>7}  {'pairing':<7}  {'place':<16}  before  after")
    for r in top:
        print(f"{r['rank']:>4}  {r['score']:7.4f}  {r['pairing']:<7}  {r['place']:<16}  "
              f"{r['n_before']:>6}  {r['n_after']:>5}")
    for path in written:
        print(f"wrote {path}")
    return 0


def _like(args: argparse.Namespace, index: object, before: object, after: object, where: object) -> int:
    import json

    from csmae.geo.place import parse_place
    from csmae.retrieval.change_index import index_similar_changes

    if args.out or args.geojson:
        raise ValueError("--like prints its ranking (--json for JSON); --out/--geojson are for change scores")
    parse_place(args.like)
    found = index_similar_changes(index, place=args.like, before=before, after=after,  # type: ignore[arg-type]
                                  pairing=args.pairing, where=where)  # type: ignore[arg-type]
    top = found[: args.k]
    if args.json:
        print(json.dumps({"like": args.like, "before": str(before), "after": str(after),
                          "pairing": args.pairing, "places": len(found), "top": top}, indent=2))
        return 0
    print(f"places whose change {before} -> {after} ({args.pairing}) resembles {args.like}'s")
    print(f"{'rank':>4}  {'similarity':>10}  place")
    for r in top:
        print(f"{r['rank']:>4}  {r['similarity']:10.4f}  {r['place']}")
    return 0
