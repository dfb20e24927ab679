"""Geospatial metadata carried from readers to search results.

- :mod:`csmae.geo.footprint`: patch footprints (EPSG:4326 WKB) from a native CRS and affine grid.
- :mod:`csmae.geo.keys`: the sample geo keys (see SEAMS / :mod:`csmae.data.base`), acquisition times.
- :mod:`csmae.geo.raster`: georeferencing of a GeoTIFF (rasterio).
- :mod:`csmae.geo.parquet`: GeoParquet 1.1 columns and ``geo`` file metadata.
- :mod:`csmae.geo.geojson`: RFC 7946 FeatureCollections of a query and its hits.
- :mod:`csmae.geo.place`: place keys (the 1200 m UTM cell of a footprint): the same ground, one key.
- :mod:`csmae.geo.acquisition`: acquisition keys (a datatake): the same pass, one key.
"""

from csmae.geo.acquisition import acquisition_of
from csmae.geo.footprint import footprint, footprint_wkb, wkb_to_geojson
from csmae.geo.keys import GEO_KEYS, iso_utc
from csmae.geo.place import place_of, place_polygon, places_of

__all__ = ["GEO_KEYS", "acquisition_of", "footprint", "footprint_wkb", "iso_utc", "place_of", "place_polygon",
           "places_of", "wkb_to_geojson"]
