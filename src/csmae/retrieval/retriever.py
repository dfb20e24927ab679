"""The one retrieval core behind the CLI, the Python API, the HTTP service and the demo."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from csmae.retrieval.filters import Filter
from csmae.retrieval.index import SearchIndex

log = logging.getLogger(__name__)

Where = Filter | Mapping[str, Any] | None


@dataclass
class Hit:
    """One search result."""

    rank: int
    id: str
    sensor: str
    score: float
    labels: list[str]
    overlap: list[str] = field(default_factory=list)
    #: footprint as a GeoJSON geometry mapping (EPSG:4326 lon/lat), None when the archive has none
    geometry: dict[str, Any] | None = None
    #: acquisition time of this item's sensor, ISO 8601 UTC ("2017-06-13T10:10:31Z"), or None
    datetime: str | None = None
    #: place key (:func:`csmae.geo.place_of` of the footprint): the same ground, any date or sensor
    place: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Retriever:
    """Search an index by archive id, raw arrays, image files or vectors.

    Build with :meth:`load`. The model is loaded on first use (needed only for arrays/files), the
    dataset only for :meth:`sample` / :meth:`preview_png`.
    """

    def __init__(
        self,
        index: SearchIndex,
        *,
        model_dir: str | os.PathLike[str] | None = None,
        data: Sequence[str | os.PathLike[str]] | None = None,
        model: Any = None,
    ):
        self.model_dir = Path(model_dir) if model_dir else None
        self.data = [str(d) for d in data] if data else []
        self._model = model
        self._model_ok = False  # model_dir checked against the index manifest
        self._dataset: Any = None
        self._use(index)

    def _use(self, index: SearchIndex) -> None:
        """Point the retriever at a (re)loaded index."""
        self.index = index
        items = index.items
        cols = index.columns
        self._ids = items["id"].to_numpy(dtype=object)
        self._sensors = cols.sensor
        self._splits = cols.split
        self._labels = cols.labels
        self._live = cols.live
        self._row = {
            (i, s): r for r, (i, s, ok) in enumerate(zip(self._ids, self._sensors, self._live)) if ok
        }
        self._geom, self._bbox, self._times = _item_geo(items)
        self._places = _item_places(items, self._geom)

    def reload(self) -> dict[str, Any]:
        """Load the index folder again (after ``csmae index add/remove``); returns the new counts.

        The new index is loaded completely before it replaces the old one, so a failed reload
        leaves the retriever serving the old index.
        """
        if self.index.path is None:
            raise ValueError("this retriever's index was not loaded from a folder: nothing to reload")
        before = int(self.index.manifest.get("count", 0))
        self._use(SearchIndex.load(self.index.path))
        return {"count_before": before, "count": int(self.index.manifest.get("count", 0)),
                "generation": int(self.index.manifest.get("generation", 0))}

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        index_dir: str | os.PathLike[str],
        *,
        model_dir: str | os.PathLike[str] | None = None,
        data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    ) -> Retriever:
        """Load an index folder; ``model_dir`` defaults to the model recorded in the index manifest
        (checked against the recorded sha256); ``data`` defaults to the recorded dataset sources."""
        index = SearchIndex.load(index_dir)
        man_model = index.manifest.get("model") or {}
        checked = model_dir is not None
        if checked:
            _check_model(Path(str(model_dir)), man_model, index.dim)
        elif man_model.get("dir") and Path(man_model["dir"]).exists():
            model_dir = man_model["dir"]
        if data is None:
            srcs = (index.manifest.get("dataset") or {}).get("sources") or []
            data = [s for s in srcs if Path(s).exists()] or None
        elif isinstance(data, (str, os.PathLike)):
            data = [data]
        r = cls(index, model_dir=model_dir, data=data)
        r._model_ok = checked
        return r

    @property
    def label_names(self) -> list[str]:
        names = self.index.manifest.get("label_names")
        if names:
            return list(names)
        from csmae.labels import LABELS_19

        return list(LABELS_19)

    @property
    def sensors(self) -> list[str]:
        return self.index.sensors

    @property
    def model_info(self) -> dict[str, Any]:
        m = self.index.manifest
        return {
            **(m.get("model") or {}),
            "index_kind": m.get("index_kind"),
            "factory": m.get("factory"),
            "count": m.get("count"),
            "recall_at_10": m.get("recall_at_10"),
            "search_params": m.get("search_params"),
            "model_dir": str(self.model_dir or ""),
        }

    @property
    def model(self) -> Any:
        if self._model is None:
            if self.model_dir is None:
                raise ValueError(
                    "this search needs the model: pass model_dir (the index manifest "
                    "records none that exists on this machine)"
                )
            from csmae.models import from_pretrained

            if not self._model_ok:
                _check_model(self.model_dir, self.index.manifest.get("model") or {}, self.index.dim)
            self._model = from_pretrained(self.model_dir)
        return self._model

    @property
    def dataset(self) -> Any:
        if self._dataset is None:
            if not self.data:
                raise ValueError("previews need the dataset: pass data=<dataset source path(s)>")
            from csmae.data import open_dataset

            self._dataset = open_dataset(*self.data, sensors=tuple(self.sensors))
        return self._dataset

    # ------------------------------------------------------------------ browse
    def _label_list(self, row: np.ndarray) -> list[str]:
        names = self.label_names
        return [names[j] for j in np.flatnonzero(row)]

    def items(
        self,
        split: str | None = None,
        sensor: str | None = None,
        label: str | None = None,
        offset: int = 0,
        limit: int = 50,
        where: Where = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Filtered archive rows: (total matching, rows[offset:offset + limit])."""
        m = self.index.filter_for(where).mask(self.index.columns)
        if split is not None:
            m &= self._splits == split
        if sensor is not None:
            m &= self._sensors == sensor
        if label is not None:
            if label not in self.label_names:
                raise ValueError(f"unknown label {label!r}; labels: {self.label_names}")
            m &= self._labels[:, self.label_names.index(label)]
        rows = np.flatnonzero(m)
        page = rows[max(0, offset) : max(0, offset) + max(0, limit)]
        return len(rows), [
            {
                "id": self._ids[r],
                "sensor": self._sensors[r],
                "split": self._splits[r],
                "labels": self._label_list(self._labels[r]),
            }
            for r in page
        ]

    # ------------------------------------------------------------------ search
    def _hits(
        self,
        scores: np.ndarray,
        rows: np.ndarray,
        k: int,
        query_labels: np.ndarray | None,
        skip_row: int | None = None,
    ) -> list[Hit]:
        hits: list[Hit] = []
        for s, r in zip(scores, rows):
            if r < 0 or r == skip_row:
                continue
            lab = self._labels[r]
            overlap = self._label_list(lab & query_labels) if query_labels is not None else []
            geometry, when = self._geo_row(int(r))
            hits.append(
                Hit(
                    rank=len(hits) + 1,
                    id=str(self._ids[r]),
                    sensor=str(self._sensors[r]),
                    score=float(s),
                    labels=self._label_list(lab),
                    overlap=overlap,
                    geometry=geometry,
                    datetime=when,
                    place=None if self._places is None else self._places[int(r)],
                )
            )
            if len(hits) == k:
                break
        return hits

    def _check_target(self, target: str) -> None:
        if target != "any" and target not in self.sensors:
            raise ValueError(
                f"target must be 'any' or one of the index sensors {self.sensors}, got {target!r}"
            )

    def row_of(self, patch_id: str, sensor: str) -> int:
        if sensor not in self.sensors:
            raise ValueError(f"the index has no {sensor!r} items; it holds {self.sensors}")
        r = self._row.get((patch_id, sensor))
        if r is None:
            raise KeyError(f"no patch {patch_id!r} with sensor {sensor!r} in the index")
        return r

    def labels_of(self, patch_id: str, sensor: str) -> list[str]:
        return self._label_list(self._labels[self.row_of(patch_id, sensor)])

    def vector_of(self, patch_id: str, sensor: str) -> np.ndarray:
        return self.index.reconstruct(self.row_of(patch_id, sensor))

    def search_by_id(
        self,
        patch_id: str,
        *,
        sensor: str,
        target: str = "any",
        k: int = 10,
        exclude_self: bool = True,
        where: Where = None,
    ) -> list[Hit]:
        """Query with an archive item's own descriptor (its (id, sensor) row left out if exclude_self)
        among the items that pass ``where`` (a :class:`Filter` or its plain-dict form)."""
        self._check_target(target)
        row = self.row_of(patch_id, sensor)
        vec = self.index.reconstruct(row)
        scores, rows = self.index.search(vec[None], k + int(exclude_self), target=target, where=where)
        return self._hits(scores[0], rows[0], k, self._labels[row], row if exclude_self else None)

    # ----------------------------------------------------------------- places
    def _geo_row(self, row: int) -> tuple[dict[str, Any] | None, str | None]:
        from csmae.geo.footprint import wkb_to_geojson

        geom = self._geom[row] if self._geom is not None else None
        when = self._times[row] if self._times is not None else None
        return wkb_to_geojson(geom), when

    def item(self, patch_id: str, sensor: str) -> dict[str, Any]:
        """An archive item as a dict: id, sensor, split, labels, geometry (GeoJSON), datetime."""
        row = self.row_of(patch_id, sensor)
        geometry, when = self._geo_row(row)
        split = self._splits[row]
        return {"id": str(patch_id), "sensor": sensor, "split": split if isinstance(split, str) else None,
                "labels": self._label_list(self._labels[row]), "geometry": geometry, "datetime": when}

    @property
    def geo_info(self) -> dict[str, Any]:
        """Footprints known (count), their extent [W, S, E, N], and whether they are synthetic (demo)."""
        ext = self.extent()
        n = 0 if self._bbox is None else int(np.isfinite(self._bbox[:, 0]).sum())
        dataset = self.index.manifest.get("dataset") or {}
        return {"footprints": n, "extent": list(ext) if ext else None,
                "synthetic": bool(dataset.get("geo_synthetic", False))}

    def extent(self, sensor: str | None = None) -> tuple[float, float, float, float] | None:
        """(min lon, min lat, max lon, max lat) of the footprints (of one sensor), None without any."""
        if self._bbox is None:
            return None
        m = np.isfinite(self._bbox[:, 0])
        if sensor is not None:
            m &= self._sensors == sensor
        if not m.any():
            return None
        b = self._bbox[m]
        return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())

    def locate(self, lon: float, lat: float, *, sensor: str) -> str:
        """Id of the archive item of ``sensor`` whose footprint contains (lon, lat).

        Where several do (neighbouring patches share edges, S2 tiles overlap), the one whose
        footprint centre is nearest to the point.

        Raises:
            ValueError: bad coordinates, an archive without footprints, or no footprint contains the
                point (the message gives the archive's extent).
        """
        import shapely

        if sensor not in self.sensors:
            raise ValueError(f"the index has no {sensor!r} items; it holds {self.sensors}")
        if not (np.isfinite(lon) and np.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
            raise ValueError(f"lon, lat must be degrees within [-180, 180] x [-90, 90], got {lon}, {lat}")
        ext = self.extent(sensor)
        if ext is None or self._geom is None:
            raise ValueError(
                f"the archive's {sensor} items have no footprints (the indexed source had no "
                "georeferencing, e.g. an LMDB): search by place needs a georeferenced archive"
            )
        b = self._bbox
        assert b is not None  # extent() is None without boxes
        cand = np.flatnonzero(self._live & (self._sensors == sensor) & (b[:, 0] <= lon) & (b[:, 2] >= lon)
                              & (b[:, 1] <= lat) & (b[:, 3] >= lat))
        if len(cand):
            geoms = shapely.from_wkb([self._geom[r] for r in cand])
            inside = shapely.covers(geoms, shapely.points(lon, lat))
            cand, geoms = cand[inside], geoms[inside]
        if not len(cand):
            raise ValueError(
                f"no {sensor} patch of the archive contains lon {lon:.6f}, lat {lat:.6f}; its {sensor} "
                f"footprints span lon {ext[0]:.4f} to {ext[2]:.4f}, lat {ext[1]:.4f} to {ext[3]:.4f}"
            )
        dist = shapely.distance(shapely.centroid(geoms), shapely.points(lon, lat))
        return str(self._ids[cand[int(np.argmin(dist))]])

    def search_by_point(
        self, lon: float, lat: float, *, sensor: str, target: str = "any", k: int = 10,
        exclude_self: bool = True, where: Where = None,
    ) -> list[Hit]:
        """Query with the archive item of ``sensor`` whose footprint contains (lon, lat) (:meth:`locate`)."""
        return self.search_by_id(self.locate(lon, lat, sensor=sensor), sensor=sensor, target=target, k=k,
                                 exclude_self=exclude_self, where=where)

    def search_by_vectors(
        self, vectors: np.ndarray, *, target: str = "any", k: int = 10, where: Where = None
    ) -> list[list[Hit]]:
        """Batch search with descriptors (N, D) (L2-normalised here) among items passing ``where``."""
        self._check_target(target)
        scores, rows = self.index.search(np.atleast_2d(vectors), k, target=target, where=where)
        return [self._hits(s, r, k, None) for s, r in zip(scores, rows)]

    def embed_arrays(self, raw: np.ndarray, *, sensor: str) -> np.ndarray:
        """Descriptors (N, D) of raw images (C, 120, 120) or (N, C, 120, 120) in the model's band order."""
        import torch

        from csmae.models import normalize_batch

        model = self.model
        if sensor not in model.sensors:
            raise ValueError(f"the model has no sensor {sensor!r}; it embeds {list(model.sensors)}")
        spec = model.sensors[sensor]
        x = np.asarray(raw, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != (spec.num_channels, 120, 120):
            raise ValueError(
                f"a {sensor} query must be raw ({spec.num_channels}, 120, 120) in band order "
                f"{list(spec.bands)}; got shape {tuple(np.shape(raw))}"
            )
        if not np.isfinite(x).all():
            raise ValueError("the query array has NaN/inf values")
        # same precision as the archive descriptors, so a file query of an archive image gives its vector
        bf16 = self.index.manifest.get("embed_precision") == "bf16"
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            vec = model.embed(normalize_batch({sensor: x}, {sensor: spec}))[sensor].float().numpy()
        if not np.isfinite(vec).all():  # else FAISS silently returns no neighbours
            raise ValueError(f"the model gives a non-finite descriptor for this {sensor} query; are its "
                             "values in the sensor's units (S1 dB, S2 reflectance x 10000)?")
        return vec

    def search_by_arrays(
        self, raw: np.ndarray, *, sensor: str, target: str = "any", k: int = 10, where: Where = None
    ) -> list[Hit]:
        """Query with a raw image (C, 120, 120) in ``model.sensors[sensor]`` band order."""
        self._check_target(target)
        vec = self.embed_arrays(raw, sensor=sensor)
        scores, rows = self.index.search(vec, k, target=target, where=where)
        return self._hits(scores[0], rows[0], k, None)

    def search_by_files(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        sensor: str,
        target: str = "any",
        k: int = 10,
        where: Where = None,
    ) -> list[Hit]:
        """Query with GeoTIFF band files or one .npy/.npz (see ``queryfiles.read_query``)."""
        from csmae.retrieval.queryfiles import read_query

        model = self.model
        if sensor not in model.sensors:
            raise ValueError(f"the model has no sensor {sensor!r}; it embeds {list(model.sensors)}")
        return self.search_by_arrays(
            read_query(paths, model.sensors[sensor]), sensor=sensor, target=target, k=k, where=where
        )

    # ---------------------------------------------------------------- previews
    def sample(self, patch_id: str) -> dict[str, Any]:
        """The raw sample of an archive pair (needs ``data``)."""
        return self.dataset.get(patch_id)

    def preview_rgb(self, patch_id: str, sensor: str) -> np.ndarray:
        from csmae.sensors import display_rgb

        smp = self.sample(patch_id)
        if sensor not in smp:
            raise ValueError(f"patch {patch_id!r} has no {sensor!r} image in the dataset")
        return display_rgb(smp[sensor], self.dataset.sensors[sensor])

    def preview_png(self, patch_id: str, sensor: str) -> bytes:
        """PNG bytes of an archive image (S2 true colour, S1 VV/VH/ratio false colour)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        plt.imsave(buf, self.preview_rgb(patch_id, sensor), format="png")
        return buf.getvalue()


def _item_geo(items: Any) -> tuple[list[Any] | None, np.ndarray | None, list[str | None] | None]:
    """(WKB per row, (N, 4) bbox, ISO datetime per row) of an items table; None parts when absent."""
    from csmae.geo.parquet import bounds_array, iso_list

    geom = items["geometry"].tolist() if "geometry" in items.columns else None
    if geom is not None and not any(g is not None for g in geom):
        geom = None
    bbox = None
    if geom is not None:
        cols = [f"bbox_{f}" for f in ("xmin", "ymin", "xmax", "ymax")]
        if all(c in items.columns for c in cols):
            bbox = items[cols].to_numpy(dtype=np.float64)
        else:
            bbox = bounds_array(geom)
    times = iso_list(items["datetime"]) if "datetime" in items.columns else None
    return geom, bbox, times


def _item_places(items: Any, geom: list[Any] | None) -> list[str | None] | None:
    """Place key per row: the items' ``place`` column, else computed from the footprints (old indexes)."""
    if "place" in items.columns:
        return [None if v is None or v != v else str(v) for v in items["place"].tolist()]
    if geom is None:
        return None
    from csmae.geo.place import places_of

    return places_of(geom)


def _check_model(model_dir: Path, recorded: dict[str, Any], dim: int) -> None:
    """Refuse a model that did not make the index (sha256 of model.safetensors, or D)."""
    from csmae.retrieval.artifacts import sha256_file

    weights = model_dir / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{model_dir} is not a model folder (no model.safetensors)")
    want = recorded.get("sha256")
    if want:
        got = sha256_file(weights)
        if got != want:
            raise ValueError(
                f"the index was built with another model (sha256 {want[:12]}..., "
                f"{recorded.get('name')}); {model_dir} has sha256 {got[:12]}...: rebuild the index "
                "with this model or pass the right model_dir"
            )
    import json

    cfg = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").exists() else {}
    d = (cfg.get("config") or {}).get("embed_dim")
    if d is not None and int(d) != dim:
        raise ValueError(f"{model_dir} makes D={d} descriptors but the index holds D={dim}")
