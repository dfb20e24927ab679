"""The FastAPI application: a JSON API under ``/api`` and the search page at ``/``.

``create_app(retriever)`` builds the app around one loaded, read-only retriever (the same core as
the CLI and the Python API). Handlers are plain functions run in Starlette's thread pool; calls
into the retriever are serialised by a lock unless the settings say the retriever is thread-safe.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from csmae.geo.geojson import MEDIA_TYPE as GEOJSON_TYPE
from csmae.geo.geojson import feature_collection
from csmae.service.admin import SwapLock, check_state_change, public_paths, reload_index
from csmae.service.catalog import Catalog
from csmae.service.errors import ApiError, install_error_handlers
from csmae.service.middleware import BodyLimitMiddleware, HostGuardMiddleware, SecurityHeadersMiddleware
from csmae.service.protocol import (
    filter_query,
    filter_vocabulary,
    geo_info,
    hit_to_dict,
    json_safe,
    precision_at_k,
    query_geo,
    query_sensors,
    row_to_dict,
    sensor_names,
)
from csmae.service.render import PngCache, png_data_url
from csmae.service.schemas import ErrorOut, HealthOut, ItemInfo, ItemOut, ItemsPage, SearchOut
from csmae.service.timeline_api import install_timeline_route
from csmae.service.uploads import ALLOWED_SUFFIXES, UploadedFile, decode_upload, safe_name
from csmae.version import __version__

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
UPLOAD_PATH = "/api/search/upload"
Split = Literal["train", "val", "test"]
Format = Literal["json", "geojson"]
_ERRORS: dict[int | str, dict[str, Any]] = {
    c: {"model": ErrorOut} for c in (400, 404, 413, 415, 422)
}


@dataclass(frozen=True)
class ServiceSettings:
    """Limits and behaviour of the service.

    Attributes:
        max_k: largest number of results a search may ask for.
        max_page: largest page of the item listing.
        max_upload_bytes: largest upload request body.
        max_files: most files in one upload.
        thread_safe: searches by id and listings may run in several threads at once (FAISS and
            numpy reads release the GIL); otherwise every retriever call is serialised. Previews and
            uploads (lazy dataset/model loading, plotting) are always serialised.
        allowed_hosts: accepted Host headers (DNS-rebinding guard); ``None`` accepts any.
        preview_cache: number of preview PNGs kept in memory.
        basemap: tile URL template ("https://host/{z}/{x}/{y}.png") the page's map draws under the
            footprints; None (default): no base map, the page loads nothing from outside.
        admin_token: the token ``POST /api/reload`` needs (``Authorization: Bearer``); None:
            reload is disabled (see :mod:`csmae.service.admin`).
        allow_unverified_reload: reload an index that records no checksums (off: refused).
    """

    max_k: int = 100
    max_page: int = 500
    max_upload_bytes: int = 16 * 1024 * 1024
    max_files: int = 16
    thread_safe: bool = False
    allowed_hosts: tuple[str, ...] | None = None
    preview_cache: int = 1024
    basemap: str | None = None
    admin_token: str | None = None
    allow_unverified_reload: bool = False


def _origins(url: str | None) -> tuple[str, ...]:
    """The origin of a tile URL template (``https://{s}.tile.example.org`` -> ``https://*.tile.example.org``)."""
    if not url:
        return ()
    from urllib.parse import urlsplit

    parts = urlsplit(url.replace("{s}", "*"))
    return (f"{parts.scheme}://{parts.netloc}",)


def _filter_params(
    split: list[str] | None = Query(None, description="splits (repeat the key for several)"),
    labels_any: list[str] | None = Query(None, description="results have at least one of these labels"),
    labels_all: list[str] | None = Query(None, description="results have all of these labels"),
    labels_none: list[str] | None = Query(None, description="results have none of these labels"),
    country: list[str] | None = Query(None, description="countries"),
    season: list[str] | None = Query(None, description="seasons"),
    start: str | None = Query(None, max_length=40, description="acquired on or after (ISO date, UTC)"),
    end: str | None = Query(None, max_length=40, description="acquired on or before (ISO date, UTC)"),
    bbox: str | None = Query(None, max_length=200, description="west,south,east,north (EPSG:4326); "
                             "west > east: a box across the antimeridian (RFC 7946 5.2)"),
) -> dict[str, Any] | None:
    return filter_query(split, labels_any, labels_all, labels_none, country, season, start, end, bbox)


def _where(params: dict[str, Any] | None) -> Any:
    """The Filter of the query parameters; a malformed one is a 422 naming the problem."""
    if params is None:
        return None
    from csmae.retrieval.filters import Filter

    try:
        return Filter.from_dict(params)
    except ValueError as e:
        raise ApiError(422, str(e)) from None


def create_app(retriever: Any, *, settings: ServiceSettings | None = None) -> Any:
    """Build the FastAPI app over a loaded retriever.

    Args:
        retriever: a ``csmae.retrieval.Retriever`` (or any object with the same methods).
        settings: limits; defaults to :class:`ServiceSettings`.

    Returns:
        The ``FastAPI`` application (serve it with uvicorn, or test it with ``TestClient``).
    """
    cfg = settings or ServiceSettings()
    catalog = Catalog.from_retriever(retriever)
    sensors = sensor_names(retriever)
    specs = query_sensors(retriever)
    label_names = [str(x) for x in retriever.label_names]
    swap = SwapLock()  # request handlers read; a reload swaps the index under the write side
    io_guard = threading.Lock()  # previews and uploads: lazy loads, matplotlib, torch
    search_guard: Any = contextlib.nullcontext() if cfg.thread_safe else io_guard
    previews = PngCache(cfg.preview_cache)
    places = geo_info(retriever)
    has_timeline = bool(places.get("footprints")) and callable(getattr(retriever, "timeline", None))

    app = FastAPI(
        title="csmae search",
        version=__version__,
        description="Sensor-agnostic retrieval of Sentinel-1 / Sentinel-2 patches over a csmae index.",
    )
    app.state.retriever = retriever
    app.state.catalog = catalog
    app.state.settings = cfg
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=64 * 1024, upload_max_bytes=cfg.max_upload_bytes,
                       upload_prefix=UPLOAD_PATH)
    app.add_middleware(SecurityHeadersMiddleware, img_origins=_origins(cfg.basemap))
    if cfg.allowed_hosts:
        app.add_middleware(HostGuardMiddleware, allowed_hosts=cfg.allowed_hosts)

    def check_sensor(sensor: str, *, allow_any: bool = False, what: str = "sensor", status: int = 422) -> str:
        valid = sensors + (["any"] if allow_any else [])
        if sensor not in valid:
            raise ApiError(status, f"unknown {what} {sensor!r}; expected one of {valid}")
        return sensor

    def check_id(patch_id: str) -> Any:
        entry = catalog.get(patch_id)
        if entry is None:
            raise ApiError(404, f"unknown archive id {patch_id[:200]!r}")
        return entry

    def call(fn: Any, *args: Any, guard: Any = search_guard, **kwargs: Any) -> Any:
        """Call the retriever under a guard; its lookup/value errors become 404/400."""
        try:
            with guard:
                return fn(*args, **kwargs)
        except LookupError as e:
            raise ApiError(404, str(e.args[0] if e.args else e)) from None
        except ValueError as e:
            raise ApiError(400, str(e)) from None

    def clamp_k(k: int) -> int:
        return max(1, min(k, len(catalog.rows)))

    def finish(hits: list[Any], query: dict[str, Any], target: str, k: int, t0: float,
               fmt: str = "json") -> Any:
        results = [hit_to_dict(h) for h in hits]
        if fmt == "geojson":  # RFC 7946 FeatureCollection: the query, then the hits by rank
            body = json_safe(feature_collection(query, results))
            return JSONResponse(body, media_type=GEOJSON_TYPE)
        lq = query.get("labels")
        if lq:
            for r in results:  # same definition as the retriever's: labels shared with the query
                r["overlap"] = [lbl for lbl in r["labels"] if lbl in lq]
        return {
            "query": query, "target": target, "k": k, "results": results,
            "precision_at_k": precision_at_k(lq or [], results),
            "took_ms": round((time.perf_counter() - t0) * 1000, 3),
        }

    @app.get("/api/health", response_model=HealthOut, tags=["info"])
    @swap.reader
    def health() -> dict[str, Any]:
        """Service status, archive counts, sensors, labels, model and limits."""
        return {
            "status": "ok",
            "version": __version__,
            "counts": {
                "pairs": len(catalog), "vectors": len(catalog.rows),
                "by_sensor": dict(catalog.by_sensor), "by_split": dict(catalog.by_split),
            },
            "sensors": sensors,
            "query_bands": {name: list(specs[name].bands) for name in sensors if name in specs},
            "label_names": label_names,
            "filters": filter_vocabulary(retriever),
            "model": public_paths(json_safe(dict(retriever.model_info or {}))),  # the model now used
            "geo": {**places, "basemap": cfg.basemap, "timeline": has_timeline},
            "limits": {
                "max_k": cfg.max_k, "max_page": cfg.max_page, "max_upload_bytes": cfg.max_upload_bytes,
                "max_files": cfg.max_files, "upload_formats": list(ALLOWED_SUFFIXES),
            },
        }

    @app.get("/api/items", response_model=ItemsPage, responses=_ERRORS, tags=["archive"])
    @swap.reader
    def list_items(
        sensor: str | None = Query(None, max_length=16, description="keep only this sensor"),
        label: str | None = Query(None, max_length=200, description="keep items with this label"),
        offset: int = Query(0, ge=0, le=10**9),
        limit: int = Query(50, ge=1, le=cfg.max_page),
        filters: dict[str, Any] | None = Depends(_filter_params),
    ) -> dict[str, Any]:
        """A page of archive items, one row per (id, sensor), in archive order (filter keys as in search)."""
        if sensor is not None:
            check_sensor(sensor)
        if label is not None and label not in label_names:
            raise ApiError(422, f"unknown label {label[:200]!r}; see label_names in /api/health")
        where = _where(filters)  # validates (422) before anything else
        split = None
        if filters is not None and list(filters) == ["split"] and len(filters["split"]) == 1:
            split, where = filters["split"][0], None  # the plain listing filter every retriever has
        total, rows = call(retriever.items, split=split, sensor=sensor, label=label, offset=offset,
                           limit=limit, where=where)
        items = [row_to_dict(r) for r in rows]
        return {"total": int(total), "offset": offset, "limit": limit, "items": items}

    @app.get("/api/items/random", response_model=ItemOut, responses=_ERRORS, tags=["archive"])
    @swap.reader
    def random_item(
        sensor: str | None = Query(None, max_length=16), split: Split | None = Query(None),
    ) -> dict[str, Any]:
        """One random archive item (optionally of one sensor and split)."""
        if sensor is not None:
            check_sensor(sensor)
        row = catalog.random_row(sensor=sensor, split=split)
        if row is None:
            raise ApiError(404, "no archive item matches these filters")
        entry = catalog.entries[row[0]]
        return {"id": entry.id, "sensor": row[1], "split": entry.split, "labels": entry.labels}

    @app.get("/api/items/{patch_id}", response_model=ItemInfo, responses=_ERRORS, tags=["archive"])
    @swap.reader
    def item_info(patch_id: str = PathParam(..., max_length=200)) -> dict[str, Any]:
        """Split, labels and indexed sensors of one archive id."""
        e = check_id(patch_id)
        return {"id": e.id, "split": e.split, "labels": e.labels, "sensors": e.sensors}

    @app.get(
        "/api/items/{patch_id}/preview/{sensor}", responses={**_ERRORS, 200: {"content": {"image/png": {}}}},
        response_class=Response, tags=["archive"],
    )
    @swap.reader
    def preview(patch_id: str = PathParam(..., max_length=200), sensor: str = PathParam(..., max_length=16)):
        """PNG preview of one item: S2 true colour, S1 false colour (VV, VH, VV-VH)."""
        check_id(patch_id)
        if sensor not in specs:
            raise ApiError(404, f"unknown sensor {sensor[:16]!r}; expected one of {sorted(specs)}")
        key = (patch_id, sensor)
        png = previews.get(key)
        if png is None:
            try:
                with io_guard:
                    png = retriever.preview_png(patch_id, sensor)
            except (LookupError, ValueError, FileNotFoundError, RuntimeError) as e:
                logger.info("no preview for %s/%s: %s", patch_id, sensor, e)
                from csmae.data.base import DataError

                if isinstance(e, DataError) and e.path:  # integrity: the dataset is damaged
                    logger.warning("the dataset behind previews is damaged: %s", e)
                    raise ApiError(404, f"no {sensor} image for {patch_id}: the server's dataset is "
                                   f"damaged ({Path(e.path).name}: {e.reason}); see the server log"
                                   ) from None
                raise ApiError(
                    404, f"no {sensor} image for {patch_id} (was the server started with --data?)"
                ) from None
            previews.put(key, png)
        return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/api/search", response_model=SearchOut, responses={
        **_ERRORS, 200: {"content": {GEOJSON_TYPE: {}}}}, tags=["search"])
    @swap.reader
    def search(
        id: str | None = Query(None, max_length=200, description="archive id of the query"),
        sensor: str = Query(..., max_length=16, description="sensor of the query image, or s1+s2 (fused)"),
        target: str = Query("any", max_length=16, description="sensor of the results: s1, s2 or any"),
        k: int = Query(10, ge=1, le=cfg.max_k),
        exclude_self: bool = Query(True, description="leave the query's own pair out of the results"),
        lon: float | None = Query(None, ge=-180, le=180, description="search by place: longitude (WGS 84)"),
        lat: float | None = Query(None, ge=-90, le=90, description="search by place: latitude (WGS 84)"),
        format: Format = Query("json", description="json, or geojson: a FeatureCollection of query + hits"),
        filters: dict[str, Any] | None = Depends(_filter_params),
    ) -> Any:
        """Search the archive with an archive item as the query: by its id, or by a place (lon, lat:
        the item of ``sensor`` whose footprint contains the point), among the items passing the filter.
        ``sensor=s1+s2``: the fused descriptor of the pair's S1 and S2 items (csmae.retrieval.fusion)."""
        parts = sensor.split("+")
        if len(parts) == 2 and sorted(parts) == sorted(sensors) and parts[0] != parts[1]:
            shown = parts[1]  # a fused query: the image whose footprint/time stand for the query
        else:
            shown = check_sensor(sensor)
        check_sensor(target, allow_any=True, what="target")
        if (lon is None) != (lat is None):
            raise ApiError(422, "give both lon and lat for a search by place")
        if (id is None) == (lon is None):
            raise ApiError(422, "give either id, or lon and lat (not both)")
        if lon is not None and lat is not None:
            if getattr(retriever, "locate", None) is None:
                raise ApiError(400, "this archive has no footprints: search by place is not available")
            id = call(retriever.locate, lon, lat, sensor=shown)
        assert id is not None
        entry = check_id(id)
        for s in parts if len(parts) == 2 else [sensor]:
            if s not in entry.sensors:
                raise ApiError(404, f"archive id {id} has no {s} vector; it has {entry.sensors}"
                               + (f" (a fused {sensor} query needs both)" if len(parts) == 2 else ""))
        where = _where(filters)
        t0 = time.perf_counter()
        hits = call(retriever.search_by_id, id, sensor=sensor, target=target, k=clamp_k(k),
                    exclude_self=exclude_self, where=where)
        query = {"id": id, "sensor": sensor, "split": entry.split, "labels": entry.labels,
                 **call(query_geo, retriever, id, shown), "lon": lon, "lat": lat}
        return finish(hits, query, target, k, t0, format)

    @app.post(UPLOAD_PATH, response_model=SearchOut, responses=_ERRORS, tags=["search"])
    @swap.reader
    def search_upload(
        files: list[UploadFile] = File(..., description="GeoTIFF band files, or one .npy/.npz (C,120,120)"),
        sensor: str = Form(..., max_length=16, description="sensor of the uploaded image"),
        target: str = Form("any", max_length=16, description="sensor of the results: s1, s2 or any"),
        k: int = Form(10, ge=1, le=cfg.max_k),
        format: Format = Form("json", description="json, or geojson: a FeatureCollection of query + hits"),
        filters: dict[str, Any] | None = Depends(_filter_params),
    ) -> Any:
        """Search the archive with uploaded image files as the query (filter keys as query parameters)."""
        check_sensor(sensor)
        check_sensor(target, allow_any=True, what="target")
        if len(files) > cfg.max_files:
            raise ApiError(422, f"too many files: {len(files)}, at most {cfg.max_files}")
        uploads = [UploadedFile(name=safe_name(f.filename), data=f.file.read()) for f in files]
        raw = decode_upload(uploads, specs[sensor])  # (C, 120, 120)
        where = _where(filters)
        t0 = time.perf_counter()
        hits = call(retriever.search_by_arrays, raw, sensor=sensor, target=target, k=clamp_k(k),
                    guard=io_guard, where=where)
        query = {"id": None, "sensor": sensor, "labels": None, "files": [u.name for u in uploads],
                 "preview": png_data_url(raw, specs[sensor])}
        return finish(hits, query, target, k, t0, format)

    install_timeline_route(app, retriever, guard=search_guard, filters=_filter_params)

    @app.post("/api/reload", responses=_ERRORS, tags=["info"])
    def reload(request: Request) -> dict[str, Any]:
        """Load the index folder again (after ``csmae index add/remove``, or a swapped folder) with
        the model it names; the old index keeps serving until the new one is completely loaded,
        and stays if loading fails. Needs the admin token (see :mod:`csmae.service.admin`)."""
        check_state_change(request, token=cfg.admin_token, action="reload")

        def prepare(view: Any) -> Any:  # the new catalogue, built while the old index serves
            return Catalog.from_retriever(view) if view is not None else None

        def apply(ready: Any) -> None:  # what the handlers read of the archive and the model
            nonlocal catalog, places, sensors, specs, label_names
            catalog = ready if ready is not None else Catalog.from_retriever(retriever)
            places = geo_info(retriever)
            sensors, specs = sensor_names(retriever), query_sensors(retriever)
            label_names = [str(x) for x in retriever.label_names]
            app.state.catalog = catalog

        info = reload_index(retriever, swap, prepare=prepare, apply=apply,
                            require_checksums=not cfg.allow_unverified_reload)
        return json_safe({"status": "reloaded", **info})

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
