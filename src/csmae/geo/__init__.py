"""Geospatial: footprints, scenes, GeoParquet."""
