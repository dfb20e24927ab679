"""The search core: k-nearest neighbours over one loaded index, by archive item or by descriptor.

:class:`SearchCore` owns everything that needs only the index (no model, no dataset): the row table
((id, sensor) -> row, labels, splits, "live" rows), browsing with filters, searches by an archive
item's own vector or by query descriptors, restricted to a target sensor and to the items passing
a ``where`` filter (a :class:`~csmae.retrieval.filters.Filter` or its plain-dict form), and turning
index answers into :class:`Hit` records (labels, labels shared with the query, footprint, time).
Places come from its :class:`~csmae.retrieval.places.ArchivePlaces`.

Later query kinds (timelines, change detection) build on :meth:`SearchCore.search_by_vectors` and
:meth:`SearchCore.search_by_id`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from csmae.retrieval.filters import Filter
from csmae.retrieval.index import SearchIndex
from csmae.retrieval.places import ArchivePlaces

log = logging.getLogger(__name__)

#: A search filter: a :class:`Filter`, its plain-dict form, or None (every item).
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


class SearchCore:
    """Searches and lookups over one loaded :class:`SearchIndex` (read-only)."""

    def __init__(self, index: SearchIndex):
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
        self.places = ArchivePlaces(
            items, ids=self._ids, sensors=self._sensors, live=self._live, index_sensors=index.sensors,
            dataset=index.manifest.get("dataset") or {},
        )

    # ------------------------------------------------------------------ the archive
    @property
    def sensors(self) -> list[str]:
        """The sensors the index holds."""
        return self.index.sensors

    @property
    def label_names(self) -> list[str]:
        """Label names of the index (the 19 BigEarthNet classes when the manifest records none)."""
        names = self.index.manifest.get("label_names")
        if names:
            return list(names)
        from csmae.labels import LABELS_19

        return list(LABELS_19)

    def label_list(self, row: np.ndarray) -> list[str]:
        """Names of the labels set in a multi-hot row."""
        names = self.label_names
        return [names[j] for j in np.flatnonzero(row)]

    def row_of(self, patch_id: str, sensor: str) -> int:
        """Index row of the live (id, sensor) vector; ValueError for a sensor, KeyError for an id."""
        if sensor not in self.sensors:
            raise ValueError(f"the index has no {sensor!r} items; it holds {self.sensors}")
        r = self._row.get((patch_id, sensor))
        if r is None:
            raise KeyError(f"no patch {patch_id!r} with sensor {sensor!r} in the index")
        return r

    def id_of_row(self, row: int) -> str:
        return str(self._ids[row])

    def sensor_of_row(self, row: int) -> str:
        return str(self._sensors[row])

    def labels_of_row(self, row: int) -> list[str]:
        return self.label_list(self._labels[row])

    def labels_of(self, patch_id: str, sensor: str) -> list[str]:
        return self.label_list(self._labels[self.row_of(patch_id, sensor)])

    def vector_of(self, patch_id: str, sensor: str) -> np.ndarray:
        return self.index.reconstruct(self.row_of(patch_id, sensor))

    def item(self, patch_id: str, sensor: str) -> dict[str, Any]:
        """An archive item as a dict: id, sensor, split, labels, geometry (GeoJSON), datetime."""
        row = self.row_of(patch_id, sensor)
        geometry, when = self.places.geo_of_row(row)
        split = self._splits[row]
        return {"id": str(patch_id), "sensor": sensor, "split": split if isinstance(split, str) else None,
                "labels": self.label_list(self._labels[row]), "geometry": geometry, "datetime": when}

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
                "labels": self.label_list(self._labels[r]),
            }
            for r in page
        ]

    # ------------------------------------------------------------------ searches
    def check_target(self, target: str) -> None:
        """Refuse a result sensor that is neither ``"any"`` nor one the index holds."""
        if target != "any" and target not in self.sensors:
            raise ValueError(
                f"target must be 'any' or one of the index sensors {self.sensors}, got {target!r}"
            )

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
        among the items that pass ``where``; hits report the labels they share with the query."""
        self.check_target(target)
        row = self.row_of(patch_id, sensor)
        vec = self.index.reconstruct(row)
        scores, rows = self.index.search(vec[None], k + int(exclude_self), target=target, where=where)
        return self.hits(scores[0], rows[0], k, self._labels[row], row if exclude_self else None)

    def search_by_vectors(
        self, vectors: np.ndarray, *, target: str = "any", k: int = 10, where: Where = None
    ) -> list[list[Hit]]:
        """Batch search with descriptors (N, D) (L2-normalised by the index) among items passing ``where``."""
        self.check_target(target)
        scores, rows = self.index.search(np.atleast_2d(vectors), k, target=target, where=where)
        return [self.hits(s, r, k, None) for s, r in zip(scores, rows)]

    def hits(
        self,
        scores: np.ndarray,
        rows: np.ndarray,
        k: int,
        query_labels: np.ndarray | None,
        skip_row: int | None = None,
    ) -> list[Hit]:
        """At most ``k`` :class:`Hit` of one query's (score, row) answer, ranked from 1.

        Rows < 0 (no neighbour) and ``skip_row`` are left out; with ``query_labels`` (multi-hot),
        each hit lists the labels it shares with the query.
        """
        hits: list[Hit] = []
        for s, r in zip(scores, rows):
            if r < 0 or r == skip_row:
                continue
            lab = self._labels[r]
            overlap = self.label_list(lab & query_labels) if query_labels is not None else []
            geometry, when = self.places.geo_of_row(int(r))
            hits.append(
                Hit(
                    rank=len(hits) + 1,
                    id=str(self._ids[r]),
                    sensor=str(self._sensors[r]),
                    score=float(s),
                    labels=self.label_list(lab),
                    overlap=overlap,
                    geometry=geometry,
                    datetime=when,
                    place=self.places.place_of_row(int(r)),
                )
            )
            if len(hits) == k:
                break
        return hits
