"""``GET /api/timeline``: every acquisition of a place, both sensors, in time order, with distances.

The route calls the retriever's ``timeline`` (see :class:`csmae.service.protocol.TimelineRetriever`);
a retriever without one answers 400. Unknown places, ids or points without acquisitions are 404s
whose message says what the archive covers; malformed input is a 400/422.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import Depends, FastAPI, Query
from fastapi.responses import JSONResponse

from csmae.geo.geojson import MEDIA_TYPE as GEOJSON_TYPE
from csmae.service.errors import ApiError
from csmae.service.protocol import json_safe
from csmae.service.schemas import ErrorOut, TimelineOut

_ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorOut} for c in (400, 404, 422)}


def install_timeline_route(app: FastAPI, retriever: Any, *, guard: Any, filters: Any) -> None:
    """Add ``GET /api/timeline`` to ``app``.

    Args:
        retriever: the served retriever (its ``timeline`` is called under ``guard``).
        guard: a context manager serialising retriever calls where needed.
        filters: the FastAPI dependency giving the filter query parameters as a plain dict (or None).
    """

    @app.get("/api/timeline", response_model=TimelineOut,
             responses={**_ERRORS, 200: {"content": {GEOJSON_TYPE: {}}}}, tags=["search"])
    def timeline(
        place: str | None = Query(None, max_length=40, description="place key, e.g. 33N-337-4451"),
        id: str | None = Query(None, max_length=200, description="the place of this archive item"),
        sensor: str | None = Query(None, max_length=16, description="the sensor of id (default: any)"),
        lon: float | None = Query(None, ge=-180, le=180, description="the place at this point: longitude"),
        lat: float | None = Query(None, ge=-90, le=90, description="the place at this point: latitude"),
        reference: str = Query("first", max_length=220,
                               description="first, previous, or an archive item ID or ID@SENSOR"),
        sensors: list[str] | None = Query(None, description="only acquisitions of these sensors"),
        format: Literal["json", "geojson"] = Query("json", description="json, or geojson: one feature "
                                                                        "per acquisition"),
        where: dict[str, Any] | None = Depends(filters),
    ) -> Any:
        """Every acquisition of one place (a place key, an archive item's place, or the place of
        the patch containing lon/lat), both sensors, in time order, among the items passing the
        filter; each with the cosine distance of its descriptor to the reference."""
        from csmae.retrieval.filters import Filter

        fn = getattr(retriever, "timeline", None)
        if fn is None:
            raise ApiError(400, "this archive has no timelines")
        if (lon is None) != (lat is None):
            raise ApiError(422, "give both lon and lat for a timeline at a point")
        if sum(x is not None for x in (place, id, lon)) != 1:
            raise ApiError(422, "give exactly one of place, id, or lon and lat")
        try:
            flt = Filter.from_dict({**(where or {}), **({"sensor": sensors} if sensors else {})})
        except ValueError as e:
            raise ApiError(422, str(e)) from None
        t0 = time.perf_counter()
        try:
            with guard:
                tl = fn(place, patch_id=id, sensor=sensor, lon=lon, lat=lat, reference=reference.strip(),
                        where=flt)
        except LookupError as e:
            raise ApiError(404, str(e.args[0] if e.args else e)) from None
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        if format == "geojson":
            return JSONResponse(json_safe(tl.to_geojson()), media_type=GEOJSON_TYPE)
        return json_safe({**tl.to_dict(), "took_ms": round((time.perf_counter() - t0) * 1000, 3)})
