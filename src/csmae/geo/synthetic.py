"""Plausible, openly synthetic footprints and acquisition times for the synthetic archive (demo).

Each synthetic tile (64 patches) is placed near the centre of its country with a seeded jitter, on
the WGS 84 / UTM grid of the zone there; patch (row h, column v) of the tile is the 1.2 km cell
``h`` rows down and ``v`` columns right of the tile's corner, like BigEarthNet. Nothing here is a
real acquisition: stores written this way say ``"geo_synthetic": true`` in their manifest.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

#: rough centres (lat, lon) of the BigEarthNet countries
COUNTRY_CENTRES = {
    "Austria": (47.6, 14.1), "Belgium": (50.6, 4.6), "Finland": (62.5, 26.0), "Ireland": (53.2, -8.0),
    "Lithuania": (55.3, 23.9), "Portugal": (39.6, -8.0), "Serbia": (44.0, 20.9), "Switzerland": (46.8, 8.2),
    "Kosovo": (42.6, 20.9), "Luxembourg": (49.8, 6.1),
}
PATCH_M = 1200.0
PIXEL_M = 10.0


@functools.lru_cache(maxsize=64)
def _to_utm(epsg: int) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)


def tile_origin(country: str, seed: int, tile_index: int) -> tuple[str, float, float]:
    """(crs "EPSG:326zz", x0, y0): the upper-left corner of a synthetic tile in its UTM zone."""
    rng = np.random.default_rng([seed, 3, tile_index])
    lat0, lon0 = COUNTRY_CENTRES.get(country, (50.0, 10.0))
    lat = lat0 + float(rng.uniform(-0.8, 0.8))
    lon = lon0 + float(rng.uniform(-1.2, 1.2))
    zone = int((lon + 180) // 6) + 1
    epsg = 32600 + zone if lat >= 0 else 32700 + zone
    x, y = _to_utm(epsg).transform(lon, lat)
    return f"EPSG:{epsg}", float(np.round(x / PATCH_M) * PATCH_M), float(np.round(y / PATCH_M) * PATCH_M)


def patch_geo(origin: tuple[str, float, float], row: int, col: int) -> dict[str, Any]:
    """crs, transform and geometry (WKB EPSG:4326) of cell (row, col) of a tile."""
    from csmae.geo.footprint import footprint_wkb

    crs, x0, y0 = origin
    transform = (PIXEL_M, 0.0, x0 + col * PATCH_M, 0.0, -PIXEL_M, y0 - row * PATCH_M)
    return {"crs": crs, "transform": transform, "geometry": footprint_wkb(crs, transform)}


def crs_wkt(crs: str) -> str:
    """The WKT (GDAL flavour, as in the BigEarthNet v1 JSONs) of a CRS."""
    from pyproj import CRS
    from pyproj.enums import WktVersion

    return str(CRS.from_user_input(crs).to_wkt(WktVersion.WKT1_GDAL))


def sample_geo(name: Mapping[str, Any]) -> dict[str, Any]:
    """The sample geo keys of a placed synthetic pair (see :func:`place`)."""
    from csmae.geo.keys import iso_utc

    scene = f"synthetic_{name['tile']}"
    return {"geometry": name["geometry"], "crs": name["crs"], "transform": tuple(name["transform"]),
            "datetime": {"s1": iso_utc(name["s1_date"]), "s2": iso_utc(name["s2_date"])},
            "scene": {"s1": scene, "s2": scene}}


def place(names: list[dict[str, Any]], seed: int) -> None:
    """Add ``crs``, ``transform``, ``geometry`` to every name dict (grouped by tile), in place."""
    origins: dict[str, tuple[str, float, float]] = {}
    for nm in names:
        if nm["tile"] not in origins:
            origins[nm["tile"]] = tile_origin(nm["country"], seed, len(origins))
        row, col = (int(v) for v in nm["s2"].rsplit("_", 2)[1:])
        nm.update(patch_geo(origins[nm["tile"]], row, col))
