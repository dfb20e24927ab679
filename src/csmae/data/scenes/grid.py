"""The patch grid: 120x120 windows of a 10 m grid at a stride, their ids and footprints."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from csmae.data.base import DataError
from csmae.data.scenes.rasters import GridInfo
from csmae.sensors import IMAGE_SIZE

#: pixel size (m) of the patch grid
PATCH_RES = 10.0


@dataclass(frozen=True)
class PatchGrid:
    """Patches of ``size`` pixels every ``stride`` pixels over a north-up 10 m grid.

    Patch (r, c) covers pixels [r*stride, r*stride+size) x [c*stride, c*stride+size).
    A grid cut out of a scene's grid (``--bbox`` / ``--aoi``) keeps the scene's patch numbering:
    its patch (0, 0) is the scene's (``row_offset``, ``col_offset``), ids use ``id_digits`` digits,
    and readers of the scene's own raster read from pixel (row_offset, col_offset) * stride.
    """

    crs: Any  # rasterio CRS
    transform: Any  # affine.Affine of pixel (0, 0)
    width: int
    height: int
    stride: int = IMAGE_SIZE
    size: int = IMAGE_SIZE
    row_offset: int = 0
    col_offset: int = 0
    id_digits: int = 0  # 0: from this grid's own size

    @property
    def rows(self) -> int:
        return max(0, (self.height - self.size) // self.stride + 1)

    @property
    def cols(self) -> int:
        return max(0, (self.width - self.size) // self.stride + 1)

    @property
    def strip_width(self) -> int:
        """Pixels read per strip: up to the right edge of the last patch column."""
        return (self.cols - 1) * self.stride + self.size if self.cols else 0

    def strip_transform(self, r: int) -> Any:
        from affine import Affine

        return self.transform @ Affine.translation(0, r * self.stride)

    def patch_transform(self, r: int, c: int) -> Any:
        from affine import Affine

        return self.transform @ Affine.translation(c * self.stride, r * self.stride)

    def patch_id(self, scene: str, r: int, c: int) -> str:
        """BigEarthNet-style id: ``<scene>_r012_c034`` (patch row and column at this stride)."""
        d = self.id_digits or max(3, len(str(max(self.rows, self.cols) - 1)))
        return f"{scene}_r{r + self.row_offset:0{d}d}_c{c + self.col_offset:0{d}d}"

    def footprints(self, r: int) -> list[bytes]:
        """WKB polygons (EPSG:4326, lon/lat, counter-clockwise) of the patches of row ``r``; a patch
        across the antimeridian is a MultiPolygon split at +-180 deg (:mod:`csmae.geo.antimeridian`)."""
        import shapely

        from csmae.geo.antimeridian import lonlat_polygons

        t = self.transform
        cols = np.arange(self.cols)
        x0 = t.c + t.a * cols * self.stride
        x1 = x0 + t.a * self.size
        y0 = t.f + t.e * r * self.stride  # top
        y1 = y0 + t.e * self.size  # bottom
        # exterior ring: lower-left, lower-right, upper-right, upper-left, closed (CCW for north-up)
        xs = np.stack([x0, x1, x1, x0, x0], axis=1)  # (C, 5)
        ys = np.stack([np.full_like(x0, y1), np.full_like(x0, y1), np.full_like(x0, y0),
                       np.full_like(x0, y0), np.full_like(x0, y1)], axis=1)
        tr = _to_lonlat(self.crs.to_wkt())
        lon, lat = tr.transform(xs.ravel(), ys.ravel())
        ring = np.stack([np.asarray(lon), np.asarray(lat)], axis=1).reshape(len(cols), 5, 2)
        polys = lonlat_polygons(ring)
        return [bytes(b) for b in shapely.to_wkb(polys)]

    def crs_string(self) -> str:
        epsg = self.crs.to_epsg()
        return f"EPSG:{epsg}" if epsg else self.crs.to_string()

    def to_dict(self) -> dict[str, Any]:
        return {"crs": self.crs_string(), "transform": list(self.transform)[:6], "width": self.width,
                "height": self.height, "stride": self.stride, "size": self.size, "rows": self.rows,
                "cols": self.cols, **({"first_patch": [self.row_offset, self.col_offset]}
                                      if self.row_offset or self.col_offset else {})}


@lru_cache(maxsize=16)
def _to_lonlat(wkt: str) -> Any:
    """A pyproj transformer native CRS -> EPSG:4326 in (lon, lat) order (built once per CRS)."""
    from pyproj import Transformer

    return Transformer.from_crs(wkt, "EPSG:4326", always_xy=True)


def grid_from_s2(g10: GridInfo, stride: int) -> PatchGrid:
    if stride < 1 or stride % 2:
        raise ValueError(f"--stride must be a positive even number of 10 m pixels (20 m bands are cut "
                         f"at half the offset), got {stride}")
    return PatchGrid(crs=g10.crs, transform=g10.transform, width=g10.width, height=g10.height, stride=stride)


def grid_from_s1(g: GridInfo, stride: int) -> PatchGrid:
    """The place grid over an S1 scene (S1 alone defines the patches): 10 m pixels in the UTM zone of
    the scene's centre by the place-key rule (:func:`csmae.geo.place.utm_epsg`: the plain 6-degree
    zone, north if the centre's latitude is >= 0), the grid's corners at multiples of 1200 m around
    the scene's extent. At the default stride each patch is exactly one place cell: patch (r, c) of a
    grid with its north-west corner at (x0, y0) is place ``ZZH-{x0 // 1200 + c}-{y0 // 1200 - 1 - r}``
    (its key, ``place_of`` of its footprint, is that cell where the zone is the scene's own)."""
    if stride < 1:
        raise ValueError(f"--stride must be positive, got {stride}")
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    from csmae.geo.place import PLACE_CELL_M, utm_epsg

    w, s, e, n = transform_bounds(g.crs, "EPSG:4326", *g.bounds(), densify_pts=21)
    if not all(np.isfinite(v) for v in (w, s, e, n)):
        raise DataError("the S1 scene's extent has no lon/lat position (check its CRS)", path=g.path)
    lon = (w + (e if e >= w else e + 360.0)) / 2  # a box across the antimeridian has e < w
    utm = CRS.from_epsg(utm_epsg(lon if lon < 180 else lon - 360, (s + n) / 2))
    left, bottom, right, top = transform_bounds(g.crs, utm, *g.bounds(), densify_pts=21)
    cell, eps = PLACE_CELL_M, 1e-6  # eps: float noise of a reprojected corner never adds a cell
    left, bottom = np.floor(left / cell + eps) * cell, np.floor(bottom / cell + eps) * cell
    right, top = np.ceil(right / cell - eps) * cell, np.ceil(top / cell - eps) * cell
    width = int(round((right - left) / PATCH_RES))
    height = int(round((top - bottom) / PATCH_RES))
    return PatchGrid(crs=utm, transform=Affine(PATCH_RES, 0, float(left), 0, -PATCH_RES, float(top)),
                     width=width, height=height, stride=stride)
