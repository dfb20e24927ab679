"""Ingest new acquisitions into an index: tile, embed and add in one resumable, idempotent command.

SCENES are inputs as `csmae tile` takes them (an S2 L2A .SAFE or .SAFE.zip, S2 band files or their
folder, a raw S1 GRD .SAFE or .SAFE.zip, S1 VV/VH files or their folder, local STAC Item .json
files); the sensor of each is told from its name (--s2/--s1 say it explicitly). Each S2 scene, with
the S1 scenes paired onto it, is one scene job: tiled into a store, embedded with --model (the
index's model: another one is refused, the index unchanged) and added to --index, its record (scene,
SHA-256 of every product file) written into the index manifest in the same atomic step. Patches that
repeat the same place, sensor and acquisition as items already in the index (the overlap of a
neighbouring tile of the same pass) are not added again; the scene's record counts them. A scene
already ingested is skipped and said so; killed (even kill -9)? Run the same command again: it ends
with the same index as an uninterrupted run.
Intermediate stores and descriptors live in INDEX.ingest-partial/ (removed at the end). An index
that does not exist yet is built (--kind) from the first scene.

Raw GRD products go through calibration, noise removal and geocoding as in `csmae tile`
(--s1-calibration, --s1-geocoding, --dem); the record keeps that processing (with the DEM's
SHA-256). A scene ingested before with another processing is refused before anything is done (the
index unchanged, the command fails: a cron job's mail says so), never silently re-done, and so is a
new scene calibrated otherwise than the index's raw GRD scenes: run with the recorded options, or
ingest into another index.

Examples:
  csmae ingest scenes/S2B_MSIL2A_*.SAFE scenes/s1 --model runs/csmae/model --index idx/archive
  csmae ingest --stac items/*.json --model runs/csmae/model --index idx/archive --max-days 3
  csmae ingest incoming/*.SAFE.zip --dem glo30.vrt --model runs/csmae/model --index idx/archive
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from csmae.cli.grd_options import add_grd_options
    from csmae.cli.tile import _codes

    p.add_argument("scenes", nargs="*", metavar="SCENES", help="scene inputs (sensor told from the name)")
    p.add_argument("--s2", nargs="+", default=[], metavar="PATH", help="S2 L2A inputs")
    p.add_argument("--s1", nargs="+", default=[], metavar="PATH",
                   help="S1 inputs: raw GRD products (.SAFE folder or .zip) or terrain-corrected VV/VH files")
    p.add_argument("--stac", nargs="+", default=[], metavar="ITEM.json", help="local STAC Item JSON file(s)")
    p.add_argument("--model", required=True, help="model folder (the one the index was built with)")
    p.add_argument("--index", required=True, help="index folder to grow (built when missing)")
    p.add_argument("--kind", default="exact", help="index kind of a new index (as csmae index)")
    p.add_argument("--stride", type=int, default=120, help="pixels between patches (as csmae tile)")
    p.add_argument("--min-valid", type=float, default=0.9, help="least valid fraction (as csmae tile)")
    p.add_argument("--scl", nargs="?", const="", default=None, type=_codes, metavar="CODES",
                   help="drop pixels of these SCL classes (as csmae tile)")
    p.add_argument("--s1-units", choices=["linear", "db"], help="S1 units (as csmae tile)")
    p.add_argument("--max-days", type=float, help="refuse S1/S2 pairs acquired further apart")
    p.add_argument("--boa-offset", type=float, help="S2 DN offset without metadata (as csmae tile)")
    add_grd_options(p)  # --s1-calibration, --s1-geocoding, --dem: as csmae tile
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto", help="as csmae embed")
    p.add_argument("--batch-size", type=int, default=64, help="pairs per forward pass")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--no-product-checksums", dest="product_checksums", action="store_false",
                   help="do not check Sentinel products against their manifest.safe (as csmae tile)")
    p.add_argument("--json", action="store_true", help="print what was done as JSON")


def run(args: argparse.Namespace) -> int:
    import json
    import os

    os.environ.setdefault("GDAL_CACHEMAX", "512")
    from csmae.cli.grd_options import grd_options
    from csmae.data.scenes.readers import sensor_of_input
    from csmae.retrieval.ingest import ingest_scenes

    paths: dict[str, list[str]] = {"s2": list(args.s2), "s1": list(args.s1)}
    stac = list(args.stac)
    for p in args.scenes:
        sensor = sensor_of_input(p)
        (stac if sensor == "stac" else paths.setdefault(sensor, [])).append(p)
    if not stac and not any(paths.values()):
        raise ValueError("no scene given: pass SCENES..., --s2 PATH..., --s1 PATH... or --stac ITEM.json...")
    lines: list[str] = []
    res = ingest_scenes(args.index, model_dir=args.model, paths=paths, stac=stac, stride=args.stride,
                        min_valid=args.min_valid, scl=args.scl, s1_units=args.s1_units,
                        max_days=args.max_days,
                        boa_offset=args.boa_offset, precision=args.precision, batch_size=args.batch_size,
                        device=args.device, kind=args.kind, product_checksums=args.product_checksums,
                        say=lines.append, **grd_options(args))
    if args.json:
        print(json.dumps({"index": str(res.index), "skipped": res.skipped,
                          "ingested": [{**{k: r[k] for k in ("scene", "patches", "digest")},
                                        "duplicates": r["duplicates"]["count"]} for r in res.ingested],
                          "seconds": res.seconds}, indent=2))
        return 0
    for line in lines:
        print(line)
    print(f"{res.index}: {len(res.ingested)} scenes ingested, {len(res.skipped)} already there "
          f"({', '.join(f'{k} {v:.1f} s' for k, v in res.seconds.items())})")
    return 0
