"""JSON shapes of the HTTP API (they make the OpenAPI schema at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    detail: str = Field(description="what was wrong with the request and what to change")


class Counts(BaseModel):
    pairs: int = Field(description="distinct archive ids")
    vectors: int = Field(description="indexed (id, sensor) descriptors")
    by_sensor: dict[str, int]
    by_split: dict[str, int]


class Limits(BaseModel):
    max_k: int
    max_page: int
    max_upload_bytes: int
    max_files: int
    upload_formats: list[str]


class HealthOut(BaseModel):
    status: str
    version: str
    counts: Counts
    sensors: list[str] = Field(description="sensors with vectors in the index")
    query_bands: dict[str, list[str]] = Field(description="band order expected for uploaded queries")
    label_names: list[str]
    filters: dict[str, Any] = Field(
        default_factory=dict,
        description="filter keys, and the country/season names, datetime and footprint presence",
    )
    model: dict[str, Any]
    limits: Limits
    geo: dict[str, Any] | None = Field(
        None, description="footprints (count), extent [W, S, E, N], synthetic (demo archive), basemap URL")


class ItemOut(BaseModel):
    id: str
    sensor: str
    split: str | None = None
    labels: list[str]


class ItemsPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[ItemOut]


class ItemInfo(BaseModel):
    id: str
    split: str | None = None
    labels: list[str]
    sensors: list[str]


class HitOut(BaseModel):
    rank: int
    id: str
    sensor: str
    score: float = Field(description="cosine similarity to the query")
    labels: list[str]
    overlap: list[str] = Field(description="labels shared with the query (empty when its labels are unknown)")
    geometry: dict[str, Any] | None = Field(
        None, description="footprint as a GeoJSON geometry (EPSG:4326 lon/lat); null when unknown")
    datetime: str | None = Field(None, description="acquisition time of this image, ISO 8601 UTC")
    place: str | None = Field(None, description="place key: the same ground at any date or sensor "
                                                "(csmae.geo.place_of of the footprint)")


class QueryOut(BaseModel):
    id: str | None = Field(None, description="archive id, or null for an uploaded query")
    sensor: str
    split: str | None = None
    labels: list[str] | None = Field(None, description="query labels when known")
    files: list[str] | None = Field(None, description="uploaded file names")
    preview: str | None = Field(None, description="PNG data URL of an uploaded query")
    geometry: dict[str, Any] | None = Field(None, description="footprint of an archive query (GeoJSON)")
    datetime: str | None = Field(None, description="acquisition time of an archive query, ISO 8601 UTC")
    lon: float | None = Field(None, description="the point of a search by place")
    lat: float | None = Field(None, description="the point of a search by place")


class SearchOut(BaseModel):
    query: QueryOut
    target: str
    k: int
    results: list[HitOut]
    precision_at_k: float | None = Field(
        None,
        description="P@k of this query (mean |Lq & Lr| / |Lr| over the results) when its labels are known",
    )
    took_ms: float


class AcquisitionOut(BaseModel):
    id: str
    sensor: str
    datetime: str | None = Field(None, description="acquisition time, ISO 8601 UTC")
    distance: float | None = Field(
        None, description="cosine distance of its descriptor to the reference (null: no reference)")
    labels: list[str]
    geometry: dict[str, Any] | None = Field(None, description="footprint (GeoJSON, EPSG:4326)")


class TimelineOut(BaseModel):
    place: str = Field(description="place key (csmae.geo.place_of): a 1200 m cell of a fixed UTM grid")
    reference: str = Field(description="first, previous, or item (a given archive item)")
    reference_item: dict[str, Any] | None = Field(
        None, description="id, sensor, datetime, place of the reference (null for previous)")
    count: int
    sensors: list[str]
    acquisitions: list[AcquisitionOut] = Field(description="every acquisition of the place, in time order")
    took_ms: float
