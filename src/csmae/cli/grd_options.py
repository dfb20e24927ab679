"""The options of raw Sentinel-1 GRD products, defined once for ``csmae tile`` and ``csmae ingest``.

Not a subcommand (``csmae.cli.COMMANDS`` lists those): both commands call :func:`add_grd_options`
on their parser and hand :func:`grd_options` of the parsed arguments to the library, so the two
commands take the same flags with the same defaults and help.
"""

from __future__ import annotations

import argparse
from typing import Any

#: backscatter conventions of the calibration (csmae.data.scenes.grd_tables.CALIBRATIONS)
CALIBRATIONS = ("sigma0", "gamma0", "beta0")
#: GCP geocodings without a DEM (csmae.data.scenes.grd_geocode.GEOCODINGS)
GEOCODINGS = ("tps", "poly3")


def add_grd_options(p: argparse.ArgumentParser) -> None:
    """``--s1-calibration``, ``--s1-geocoding`` and ``--dem`` on a command's parser."""
    g = p.add_argument_group("raw S1 GRD products (.SAFE folder, .SAFE.zip or STAC GRD item)")
    g.add_argument("--s1-calibration", choices=CALIBRATIONS, default="sigma0",
                   help="backscatter convention of the calibration (default sigma0)")
    g.add_argument("--s1-geocoding", choices=GEOCODINGS, default="tps",
                   help="without --dem: GCP warp by thin-plate spline (default) or 3rd-order polynomial")
    g.add_argument("--dem", metavar="DEM.tif", help="terrain-correct with this DEM (GeoTIFF/COG/VRT, WGS 84; "
                   "e.g. Copernicus GLO-30) through sarsen (pip install 'csmae[sar]')")


def grd_options(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed GRD options as the keyword arguments of ``tile_scenes`` / ``ingest_scenes``."""
    return {"s1_calibration": args.s1_calibration, "s1_geocoding": args.s1_geocoding, "dem": args.dem}
