"""The one retrieval core behind the CLI, the Python API, the HTTP service and the demo.

:class:`Retriever` composes four parts, each in its own module:

- :class:`~csmae.retrieval.search_core.SearchCore`: searches over the loaded index (by archive id,
  by descriptors, with ``where`` filters and a target sensor), browsing and item lookups;
- :class:`~csmae.retrieval.query_encoder.QueryEncoder`: the model the index names, loaded lazily,
  and the embedding of query images (arrays, or files read by :mod:`csmae.retrieval.queryfiles`);
- :class:`~csmae.retrieval.places.ArchivePlaces` (the core's ``places``): footprints, extents and
  the item at a lon/lat;
- :class:`~csmae.retrieval.previews.ArchivePreviews`: samples and pictures from the dataset;
- :func:`~csmae.retrieval.timeline.place_timeline`: the time series of a place, over the core.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csmae.retrieval.index import SearchIndex
from csmae.retrieval.previews import ArchivePreviews
from csmae.retrieval.query_encoder import QueryEncoder, check_model_matches_index
from csmae.retrieval.search_core import Hit, SearchCore, Where
from csmae.retrieval.timeline import Timeline, place_timeline

log = logging.getLogger(__name__)

__all__ = ["Hit", "ReloadPlan", "Retriever", "Where"]


@dataclass(frozen=True)
class ReloadPlan:
    """A loaded index with its query encoder and search core, ready to be swapped in."""

    index: SearchIndex
    encoder: QueryEncoder
    core: SearchCore  # also what a caller may read (items, ...) before the swap


class Retriever:
    """Search an index by archive id, place, raw arrays, image files or vectors.

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
        self.encoder = QueryEncoder(index, model_dir=model_dir, model=model)
        self.previews = ArchivePreviews(data, sensors=index.sensors)
        self.source = index.path  # the folder reload() reads again (a symlink stays a symlink)
        self._use(index)

    def _use(self, index: SearchIndex, *, core: SearchCore | None = None) -> None:
        """Point the retriever (and its parts) at a (re)loaded index."""
        self.index = index
        self.core = core if core is not None else SearchCore(index)
        self.encoder.use_index(index)
        self.previews.sensors = list(index.sensors)  # used when the dataset is first opened

    def prepare_reload(self, *, require_checksums: bool = False) -> ReloadPlan:
        """Load the index folder again, and the model it names, without changing what is served.

        The folder is resolved once (a symlink swapped to another index folder is read as one
        snapshot). ``require_checksums``: refuse an index that records none (a server's reload).

        Raises:
            ValueError / FileNotFoundError: the new index (or its model) cannot be used; the
                retriever still serves the old one.
        """
        source = self.source or self.index.path  # an index saved after the retriever was made
        if source is None:
            raise ValueError("this retriever's index was not loaded from a folder: nothing to reload")
        index = SearchIndex.load(Path(os.path.realpath(source)), require_checksums=require_checksums)
        return ReloadPlan(index=index, encoder=self.encoder.for_index(index), core=SearchCore(index))

    def commit_reload(self, plan: ReloadPlan) -> dict[str, Any]:
        """Serve what :meth:`prepare_reload` loaded (a few assignments); returns the new counts."""
        before = int(self.index.manifest.get("count", 0))
        self.encoder = plan.encoder
        self._use(plan.index, core=plan.core)
        return {"count_before": before, "count": int(plan.index.manifest.get("count", 0)),
                "generation": int(plan.index.manifest.get("generation", 0))}

    def reload(self, *, require_checksums: bool = False) -> dict[str, Any]:
        """Load the index folder again (after ``csmae index add/remove``); returns the new counts.

        The new index (and the model it names, when it is another one) is loaded completely before
        it replaces the old one, so a failed reload leaves the retriever serving the old index.
        """
        return self.commit_reload(self.prepare_reload(require_checksums=require_checksums))

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
            check_model_matches_index(Path(str(model_dir)), man_model, index.dim)
        elif man_model.get("dir") and Path(man_model["dir"]).exists():
            model_dir = man_model["dir"]
        if data is None:
            srcs = (index.manifest.get("dataset") or {}).get("sources") or []
            data = [s for s in srcs if Path(s).exists()] or None
        elif isinstance(data, (str, os.PathLike)):
            data = [data]
        r = cls(index, model_dir=model_dir, data=data)
        r.encoder.checked = checked
        return r

    @property
    def model_dir(self) -> Path | None:
        return self.encoder.model_dir

    @property
    def data(self) -> list[str]:
        """The dataset sources previews read."""
        return self.previews.sources

    @property
    def label_names(self) -> list[str]:
        return self.core.label_names

    @property
    def sensors(self) -> list[str]:
        return self.core.sensors

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
            "model_loaded": self.encoder.loaded,
        }

    @property
    def model(self) -> Any:
        return self.encoder.model

    @property
    def dataset(self) -> Any:
        return self.previews.dataset

    # ------------------------------------------------------------------ browse
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
        return self.core.items(split, sensor, label, offset, limit, where)

    def row_of(self, patch_id: str, sensor: str) -> int:
        return self.core.row_of(patch_id, sensor)

    def labels_of(self, patch_id: str, sensor: str) -> list[str]:
        return self.core.labels_of(patch_id, sensor)

    def vector_of(self, patch_id: str, sensor: str) -> np.ndarray:
        return self.core.vector_of(patch_id, sensor)

    def item(self, patch_id: str, sensor: str) -> dict[str, Any]:
        """An archive item as a dict: id, sensor, split, labels, geometry (GeoJSON), datetime."""
        return self.core.item(patch_id, sensor)

    # ------------------------------------------------------------------ search
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
        among the items that pass ``where`` (a :class:`Filter` or its plain-dict form).

        ``sensor="s1+s2"``: the fused descriptor of the pair's S1 and S2 items
        (:mod:`csmae.retrieval.fusion`); both are left out if exclude_self.
        """
        from csmae.retrieval.fusion import is_fused, search_fused_by_id

        if is_fused(sensor):
            return search_fused_by_id(self.core, patch_id, target=target, k=k, exclude_self=exclude_self,
                                      where=where)
        return self.core.search_by_id(patch_id, sensor=sensor, target=target, k=k,
                                      exclude_self=exclude_self, where=where)

    def search_by_vectors(
        self, vectors: np.ndarray, *, target: str = "any", k: int = 10, where: Where = None
    ) -> list[list[Hit]]:
        """Batch search with descriptors (N, D) (L2-normalised here) among items passing ``where``."""
        return self.core.search_by_vectors(vectors, target=target, k=k, where=where)

    def embed_arrays(self, raw: np.ndarray, *, sensor: str) -> np.ndarray:
        """Descriptors (N, D) of raw images (C, 120, 120) or (N, C, 120, 120) in the model's band order."""
        return self.encoder.embed_arrays(raw, sensor=sensor)

    def search_by_arrays(
        self, raw: np.ndarray, *, sensor: str, target: str = "any", k: int = 10, where: Where = None
    ) -> list[Hit]:
        """Query with a raw image (C, 120, 120) in ``model.sensors[sensor]`` band order."""
        self.core.check_target(target)
        vec = self.encoder.embed_arrays(raw, sensor=sensor)
        return self.core.search_by_vectors(vec, target=target, k=k, where=where)[0]

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

        spec = self.encoder.query_sensor(sensor)
        return self.search_by_arrays(read_query(paths, spec), sensor=sensor, target=target, k=k, where=where)

    # ----------------------------------------------------------------- places
    @property
    def geo_info(self) -> dict[str, Any]:
        """Footprints known (count), their extent [W, S, E, N], and whether they are synthetic (demo)."""
        return self.core.places.geo_info

    def extent(self, sensor: str | None = None) -> tuple[float, float, float, float] | None:
        """(min lon, min lat, max lon, max lat) of the footprints (of one sensor), None without any."""
        return self.core.places.extent(sensor)

    def locate(self, lon: float, lat: float, *, sensor: str) -> str:
        """Id of the archive item of ``sensor`` whose footprint contains (lon, lat) (nearest centre
        among several); ValueError naming the archive's extent when none does."""
        return self.core.places.locate(lon, lat, sensor=sensor)

    def search_by_point(
        self, lon: float, lat: float, *, sensor: str, target: str = "any", k: int = 10,
        exclude_self: bool = True, where: Where = None,
    ) -> list[Hit]:
        """Query with the archive item of ``sensor`` whose footprint contains (lon, lat) (:meth:`locate`)."""
        return self.search_by_id(self.locate(lon, lat, sensor=sensor), sensor=sensor, target=target, k=k,
                                 exclude_self=exclude_self, where=where)

    # ----------------------------------------------------------------- time
    def timeline(
        self,
        place: str | None = None,
        *,
        patch_id: str | None = None,
        sensor: str | None = None,
        lon: float | None = None,
        lat: float | None = None,
        reference: str | tuple[str, str] = "first",
        where: Where = None,
    ) -> Timeline:
        """Every acquisition of a place (a place key, an archive item's place, or the place at
        lon/lat), both sensors, in time order, each with its descriptor distance to ``reference``
        ("first", "previous", or an archive item): :func:`csmae.retrieval.timeline.place_timeline`."""
        return place_timeline(self.core, place=place, patch_id=patch_id, sensor=sensor, lon=lon, lat=lat,
                              reference=reference, where=where)

    # ---------------------------------------------------------------- previews
    def sample(self, patch_id: str) -> dict[str, Any]:
        """The raw sample of an archive pair (needs ``data``)."""
        return self.previews.sample(patch_id)

    def preview_rgb(self, patch_id: str, sensor: str) -> np.ndarray:
        return self.previews.preview_rgb(patch_id, sensor)

    def preview_png(self, patch_id: str, sensor: str) -> bytes:
        """PNG bytes of an archive image (S2 true colour, S1 VV/VH/ratio false colour)."""
        return self.previews.preview_png(patch_id, sensor)
