"""Geometry across the antimeridian, against references computed in UTM metres or by brute force:
footprints split at +-180 deg (valid, CCW, within [-180, 180], the patch's area), place keys of the
unsplit ground, boxes with W > E in filters and Milvus expressions, extents, GeoJSON bbox members
and areas of interest."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from pyproj import Transformer

from csmae.geo import footprint, place_of, place_polygon, places_of
from csmae.geo.antimeridian import (
    box_geometry,
    crosses_antimeridian,
    lon_extent,
    lonlat_bounds,
    lonlat_centroid,
    lonlat_polygons,
    unwrap,
)

#: (UTM EPSG, latitude) of places on the line: Aleutians, Chukotka (zone 60 N / 1 N), Fiji, Chatham
#: Islands (zone 60 S / 1 S)
SITES = [(32660, 52.0), (32601, 52.0), (32660, 65.5), (32601, 65.5), (32760, -17.0), (32701, -17.0),
         (32760, -44.0), (32701, -44.0)]


def _xy(epsg: int, lon: float, lat: float) -> tuple[float, float]:
    return Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True).transform(lon, lat)


def _meridian_180(epsg: int, lat: float):
    """The 180 deg meridian near ``lat`` as a line in the UTM zone's metres (pyproj, densified)."""
    lats = np.linspace(lat - 0.5, lat + 0.5, 401)
    tr = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    x, y = tr.transform(np.full_like(lats, 180.0), lats)
    return shapely.LineString(np.column_stack([x, y]))


def _to_utm(geom, epsg: int):
    """A lon/lat geometry's vertices projected to the zone (pyproj takes both sides of the line)."""
    tr = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def _patches(epsg: int, lat: float, n: int = 60, seed: int = 0):
    """(transform, UTM box) of ``n`` 1200 m patches on the 10 m lattice within ~3 km of lon 180."""
    rng = np.random.default_rng([seed, epsg, int(lat * 10) % 1000])
    x180, y180 = _xy(epsg, 180.0, lat)
    out = []
    for dx, dy in rng.uniform(-3000, 3000, size=(n, 2)):
        x0, y0 = np.round((x180 + dx) / 10) * 10, np.round((y180 + dy) / 10) * 10
        out.append(((10.0, 0.0, x0, 0.0, -10.0, y0), shapely.box(x0, y0 - 1200, x0 + 1200, y0)))
    return out


def _key_from_utm(epsg: int, x: float, y: float) -> str:
    """Place key of a patch centre given in UTM metres: the zone of its longitude, the centre in that
    zone's metres, snapped to 10 m, floor-divided into 1200 m cells (place.py's definition, applied to
    the centre point instead of a lon/lat polygon)."""
    lon, lat = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True).transform(x, y)
    zone = int(np.floor((lon + 180.0) / 6.0)) % 60 + 1
    target = (32600 if lat >= 0 else 32700) + zone
    px, py = Transformer.from_crs(f"EPSG:{epsg}", f"EPSG:{target}", always_xy=True).transform(x, y)
    col, row = int(np.rint(px / 10)) // 120, int(np.rint(py / 10)) // 120
    return f"{zone:02d}{'N' if lat >= 0 else 'S'}-{col}-{row}"


@pytest.mark.parametrize("epsg, lat", SITES)
def test_footprints_across_the_line_are_split_valid_ccw_and_keep_their_area(epsg, lat):
    meridian = _meridian_180(epsg, lat)
    crossing = 0
    for transform, utm in _patches(epsg, lat):
        fp = footprint(f"EPSG:{epsg}", transform)
        crosses = utm.intersects(meridian) and not utm.touches(meridian)  # in metres, with pyproj only
        coords = shapely.get_coordinates(fp)
        assert fp.is_valid and coords.dtype == np.float64
        assert (np.abs(coords[:, 0]) <= 180).all() and (np.abs(coords[:, 1]) <= 90).all()
        parts = list(fp.geoms) if fp.geom_type == "MultiPolygon" else [fp]
        assert all(p.exterior.is_ccw for p in parts)
        assert (fp.geom_type == "MultiPolygon") == crosses == crosses_antimeridian(fp), (transform, fp)
        if crosses:
            crossing += 1
            edges = {round(p.bounds[0]) for p in parts} | {round(p.bounds[2]) for p in parts}
            assert len(parts) == 2 and edges >= {-180, 180}
        # the same ground in metres. A footprint's edges are straight in lon/lat (GeoParquet planar
        # edges); its cut points at 180 deg lie on those edges, which over 1.2 km run up to ~5 cm off
        # the straight UTM edges (measured: area within 5 m2 of 1.44 km2, outline within 0.1 m)
        back = shapely.union_all([_to_utm(p, epsg) for p in parts])
        if crosses:
            assert back.area == pytest.approx(1200.0 * 1200.0, rel=1e-5)
            assert shapely.hausdorff_distance(back, utm) < 0.1
        else:
            assert back.area == pytest.approx(1200.0 * 1200.0, abs=1e-3)
            assert shapely.hausdorff_distance(back, utm) < 1e-4
    assert crossing >= 5  # the sample does cross the line


def test_footprints_that_do_not_cross_are_the_polygons_of_their_vertices():
    rings = np.array([[[13.0, 48.0], [13.1, 48.0], [13.1, 48.1], [13.0, 48.1], [13.0, 48.0]],
                      [[179.8, 52.0], [179.99, 52.0], [179.99, 52.1], [179.8, 52.1], [179.8, 52.0]],
                      [[-179.99, -17.0], [-179.8, -17.0], [-179.8, -16.9], [-179.99, -16.9],
                       [-179.99, -17.0]]])
    got = lonlat_polygons(rings)
    for g, r in zip(got, rings, strict=True):
        assert shapely.to_wkb(g) == shapely.to_wkb(shapely.Polygon(r))
    # a ring touching the line from one side stays one polygon, whichever sign pyproj gave 180 deg
    ring = [[179.9, 1.0], [-180.0, 1.0], [-180.0, 2.0], [179.9, 2.0], [179.9, 1.0]]
    touch = lonlat_polygons(np.array([ring]))[0]
    assert touch.geom_type == "Polygon" and touch.area == pytest.approx(0.1)


@pytest.mark.parametrize("epsg, lat", SITES)
def test_place_keys_of_split_footprints_are_those_of_the_unsplit_ground(epsg, lat):
    split = []
    for transform, utm in _patches(epsg, lat, n=30, seed=1):
        fp = footprint(f"EPSG:{epsg}", transform)
        c = utm.centroid
        assert place_of(fp) == _key_from_utm(epsg, c.x, c.y)
        if crosses_antimeridian(fp):
            split.append(fp)
    assert split
    keys = places_of(split)
    # the same ground written as one continuous polygon past +180, or past -180, has the same key
    assert places_of([unwrap(g) for g in split]) == keys
    assert places_of([shapely.transform(unwrap(g), lambda xy: xy - [360.0, 0.0]) for g in split]) == keys
    # ... and the same ground from the other zone's metres (UTM 60 <-> 1), through lonlat_polygons
    other = {32660: 32601, 32601: 32660, 32760: 32701, 32701: 32760}[epsg]
    tr_o = Transformer.from_crs(f"EPSG:{epsg}", f"EPSG:{other}", always_xy=True)
    back = Transformer.from_crs(f"EPSG:{other}", "EPSG:4326", always_xy=True)
    for g, key in zip(split, keys, strict=True):
        utm = _to_utm(unwrap(g), epsg).convex_hull
        ring = np.asarray(utm.exterior.coords)
        lon, la = back.transform(*tr_o.transform(ring[:, 0], ring[:, 1]))
        again = lonlat_polygons(np.column_stack([lon, la])[None])[0]
        assert crosses_antimeridian(again) and place_of(again) == key


def test_place_polygon_of_a_cell_across_the_line_is_split_and_keyed_back():
    # a latitude where the line runs through the east half of a 1200 m cell of zone 60: the cell
    # crosses it and its centre is west of it (so its ground's key is this zone's)
    lat = next(la for la in np.arange(52.0, 53.0, 0.005) if 700 < _xy(32660, 180.0, la)[0] % 1200 < 1100)
    x180, y180 = _xy(32660, 180.0, lat)
    col, row = int(x180 // 1200), int(y180 // 1200)
    key = f"60N-{col}-{row}"
    cell = place_polygon(key)
    assert cell.geom_type == "MultiPolygon" and cell.is_valid and crosses_antimeridian(cell)
    assert all(p.exterior.is_ccw for p in cell.geoms)
    assert _to_utm(unwrap(cell), 32660).area == pytest.approx(1200.0 ** 2, rel=1e-5)
    assert place_of(cell) == key
    lon, lat = lonlat_centroid(cell)  # the cell's centre, as pyproj gives it from the UTM centre
    clon, clat = Transformer.from_crs("EPSG:32660", "EPSG:4326", always_xy=True).transform((col + 0.5) * 1200,
                                                                                         (row + 0.5) * 1200)
    assert 179.99 < lon < 180 and lon == pytest.approx(clon, abs=1e-6)
    assert lat == pytest.approx(clat, abs=1e-6)
    w, s, e, n = lonlat_bounds(cell)
    assert w > e and 179.9 < w < 180 and -180 < e < -179.9


def _covers(west, east, w, e):
    """Arc [west, west + width] holds interval [w, e] (both W > E-aware), by walking the circle."""
    width = (east - west) % 360 if west > east else east - west
    length = (e - w) % 360 if w > e else e - w
    start = (w - west) % 360
    return start + length <= width + 1e-9


def test_lon_extent_is_the_narrowest_range_holding_every_interval():
    rng = np.random.default_rng(7)
    for trial in range(300):
        n = int(rng.integers(1, 8))
        centre = rng.choice([180.0, 0.0, rng.uniform(-180, 180)])
        mid = centre + rng.normal(0, rng.choice([2.0, 40.0, 120.0]), n)
        half = rng.uniform(0, 3.0, n)
        w = (mid - half + 180) % 360 - 180
        e = (mid + half + 180) % 360 - 180
        got = lon_extent(w, e)
        assert got is not None
        assert all(_covers(got[0], got[1], a, b) for a, b in zip(w, e, strict=True)), (trial, w, e, got)
        # brute force: the narrowest arc starts at some interval's west end
        lengths = np.where(w > e, (e - w) % 360, e - w)
        best = min(max(((a - s) % 360) + ln for a, ln in zip(w, lengths, strict=True)) for s in w)
        width = (got[1] - got[0]) % 360 if got[0] > got[1] else got[1] - got[0]
        assert width == pytest.approx(min(best, 360.0), abs=1e-9), (trial, w, e, got)
        if not (w > e).any() and e.max() - w.min() <= width + 1e-12:
            assert got == (float(w.min()), float(e.max()))  # the plain extent where it is as narrow
    assert lon_extent([np.nan], [np.nan]) is None


def _random_footprints(rng, n):
    """Quadrilaterals around the line, in continuous longitudes, then as stored (split at 180)."""
    cont, stored = [], []
    for _ in range(n):
        cx, cy = 180.0 + rng.normal(0, 0.6), rng.uniform(-60, 60)
        ang = rng.uniform(0, np.pi)
        a, b = rng.uniform(0.01, 0.3, 2)
        corners = np.array([[a, b], [-a, b], [-a, -b], [a, -b]]) @ np.array(
            [[np.cos(ang), np.sin(ang)], [-np.sin(ang), np.cos(ang)]])
        ring = np.vstack([corners, corners[:1]]) + [cx, cy]
        cont.append(shapely.Polygon(ring))
        raw = ring.copy()
        raw[:, 0] = (raw[:, 0] + 180) % 360 - 180  # what a projection gives back: jumps of 360
        stored.append(lonlat_polygons(raw[None])[0])
    return cont, stored


def test_bbox_filter_across_the_line_equals_brute_force():
    import pandas as pd

    from csmae.retrieval.filters import Filter, FilterColumns

    rng = np.random.default_rng(3)
    cont, stored = _random_footprints(rng, 300)
    bounds = shapely.bounds(np.array(stored, dtype=object))
    boxes_cols = {f"bbox_{k}": bounds[:, j] for j, k in enumerate(("xmin", "ymin", "xmax", "ymax"))}
    items = pd.DataFrame({"id": [f"p{i}" for i in range(len(stored))], "sensor": "s2",
                          "labels": [np.zeros(1, bool)] * len(stored),
                          "geometry": [bytes(shapely.to_wkb(g)) for g in stored], **boxes_cols})
    cols = FilterColumns(items, label_names=["L"])
    boxes = [(179.5, -30, -179.5, 30), (179.9, -60, 180, 60), (-180, -60, -179.7, 60), (178, 0, -178, 10),
             (-179.2, -60, 179.2, 60), (0, -60, 10, 60)]
    near = (rng.normal(0, 0.5, (2, 30)) + 360.0) % 360 - 180  # longitudes near the line, either side
    boxes += [tuple(v) for v in zip(near[0], rng.uniform(-60, 50, 30), near[1], rng.uniform(-60, 60, 30),
                                    strict=True)]
    checked = 0
    for w, s, e, n in boxes:
        if s > n:
            s, n = n, s
        got = Filter(bbox=(w, s, e, n)).mask(cols)
        # reference: the continuous footprint against the box in continuous longitudes, its copies at
        # -+360 included (no split, no W > E rule)
        east = e + 360 if w > e else e
        copies = [shapely.box(w + k, s, east + k, n) for k in (-360.0, 0.0, 360.0)]
        want = np.array([any(g.intersects(c) for c in copies) for g in cont])
        np.testing.assert_array_equal(got, want, err_msg=str((w, s, e, n)))
        checked += int(want.sum())
    assert checked > 100


def test_box_geometry_and_filter_form():
    from csmae.retrieval.filters import Filter

    b = box_geometry((177, -19, -178, -16))  # Fiji
    assert b.geom_type == "MultiPolygon" and b.area == pytest.approx(5 * 3)
    assert box_geometry((1, 2, 3, 4)).equals(shapely.box(1, 2, 3, 4))
    f = Filter.from_dict({"bbox": "177,-19,-178,-16"})
    assert f.bbox == (177.0, -19.0, -178.0, -16.0) and Filter.from_dict(f.to_dict()) == f
    bad_boxes = (([177, -16, -178, -19], "min_lat"), ([181, 0, 1, 1], "outside lon"), ([1, 2], "4 numbers"))
    for bad, msg in bad_boxes:
        with pytest.raises(ValueError, match=msg):
            Filter.from_dict({"bbox": bad})


def test_milvus_bbox_expression_is_the_or_of_both_sides():
    from csmae.retrieval.backends.milvus_expr import bbox_expression, filter_expression
    from csmae.retrieval.filters import Filter

    got = filter_expression(Filter(bbox=(177, -19, -178, -16)), label_names=["a"])
    assert got == ("(has_bbox == true and ((bbox_xmax >= 177.0 and bbox_xmin <= 180) or (bbox_xmax >= -180 "
                   "and bbox_xmin <= -178.0)) and bbox_ymax >= -19.0 and bbox_ymin <= -16.0)")
    assert bbox_expression((1, 2, 3, 4)) == (
        "(has_bbox == true and bbox_xmax >= 1.0 and bbox_xmin <= 3.0 and bbox_ymax >= 2.0 "
        "and bbox_ymin <= 4.0)")
    assert bbox_expression((177, -19, -178, -16), nullable=True).startswith("(bbox_xmin is not null and ((")


def test_geojson_features_across_the_line_carry_a_bbox_with_west_greater_than_east():
    import json

    from shapely.geometry import mapping, shape

    from csmae.geo.footprint import wkb_to_geojson
    from csmae.geo.geojson import feature_collection

    x180, y180 = _xy(32760, 180.0, -17.0)
    fp = footprint("EPSG:32760", (10.0, 0.0, round(x180 - 600), 0.0, -10.0, round(y180)))
    plain = footprint("EPSG:32760", (10.0, 0.0, round(x180 - 5000), 0.0, -10.0, round(y180)))
    assert fp.geom_type == "MultiPolygon" and plain.geom_type == "Polygon"
    hit = {"id": "a", "sensor": "s2", "rank": 1, "score": 0.9,
           "geometry": wkb_to_geojson(bytes(shapely.to_wkb(fp)))}
    query = {"id": "q", "sensor": "s2", "geometry": wkb_to_geojson(bytes(shapely.to_wkb(plain)))}
    fc = json.loads(json.dumps(feature_collection(query, [hit])))
    q, h = fc["features"]
    assert "bbox" not in q
    assert h["geometry"]["type"] == "MultiPolygon"
    w, s, e, n = h["bbox"]
    assert w > e and 179.98 < w < 180 and -180 < e < -179.98 and s < -17 < n
    back = shape(h["geometry"])
    assert back.is_valid and back.equals_exact(fp, 1e-7)
    assert [round(v, 7) for v in lonlat_bounds(back)] == h["bbox"]
    assert mapping(back)["type"] == "MultiPolygon"


def test_areas_of_interest_across_the_line(tmp_path):
    import json

    from csmae.data.scenes.aoi import bbox_area, read_aoi

    box = bbox_area((179.5, 51.0, -179.5, 53.0))
    assert box.equals(box_geometry((179.5, 51.0, -179.5, 53.0)))
    # a polygon written with longitudes past 180 (common in other tools) is split there
    p = tmp_path / "past.geojson"
    p.write_text(json.dumps({"type": "Polygon", "coordinates": [[[179.5, 51], [180.5, 51], [180.5, 53],
                                                                  [179.5, 53], [179.5, 51]]]}))
    area = read_aoi(p)
    assert area.geom_type == "MultiPolygon" and area.equals(box)
    # and an RFC 7946 split one stays as it is
    q = tmp_path / "split.geojson"
    q.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(box)}))
    assert read_aoi(q).equals(box)


def test_an_s1_product_outline_across_the_line_is_split():
    """A GRD's geolocation grid (lon/lat of its GCPs, longitudes jumping at 180 deg) -> its footprint
    split there; the same ground as the outline in continuous longitudes."""
    from csmae.data.scenes.grd_geocode import GcpGrid

    lines, pixels = np.meshgrid(np.arange(0, 10_000, 2_000.0), np.arange(0, 25_000, 5_000.0), indexing="ij")
    lon = 179.0 + 2.5 * pixels / 25_000 + 0.2 * lines / 10_000  # continuous: 179.0 .. 181.7
    lat = 51.0 + 1.6 * lines / 10_000 - 0.1 * pixels / 25_000
    pts = np.column_stack([lines.ravel(), pixels.ravel(), lat.ravel(), (lon.ravel() + 180) % 360 - 180,
                           np.zeros(lon.size), np.full(lon.size, 35.0)])
    fp = GcpGrid(pts).outline()
    assert fp.geom_type == "MultiPolygon" and fp.is_valid and crosses_antimeridian(fp)
    assert all(p.exterior.is_ccw for p in fp.geoms) and np.abs(shapely.get_coordinates(fp)[:, 0]).max() <= 180
    cont = shapely.Polygon(np.column_stack([[lon[0, 0], lon[0, -1], lon[-1, -1], lon[-1, 0]],
                                            [lat[0, 0], lat[0, -1], lat[-1, -1], lat[-1, 0]]]))
    assert unwrap(fp).symmetric_difference(cont).area < 1e-9 * cont.area
