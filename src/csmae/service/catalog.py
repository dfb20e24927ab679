"""An in-memory catalogue of the archive items, read once from the retriever at start-up.

The service validates every id from a request against it (ids are never turned into file paths),
looks up a query's labels for P@k, counts items for the health endpoint and draws random queries.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from csmae.service.protocol import row_to_dict

logger = logging.getLogger(__name__)

#: BigEarthNet patch names: letters, digits, ``_`` and ``-``. Requests are matched against the index's
#: own ids (never turned into paths); ids outside this pattern are only logged as unusual.
ID_PATTERN = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")

_PAGE = 5000


@dataclass
class CatalogEntry:
    """One archive pair: the sensors it has vectors for, its split and its labels."""

    id: str
    split: str | None
    labels: list[str]
    sensors: list[str] = field(default_factory=list)


class Catalog:
    """Every (id, sensor) row of a retriever's archive, indexed by id."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows: list[tuple[str, str]] = []  # (id, sensor) in archive order
        self.entries: dict[str, CatalogEntry] = {}
        for row in rows:
            row = row_to_dict(row)
            pid, sensor = row["id"], row["sensor"]
            entry = self.entries.get(pid)
            if entry is None:
                entry = CatalogEntry(id=pid, split=row["split"], labels=row["labels"])
                self.entries[pid] = entry
            if sensor not in entry.sensors:
                entry.sensors.append(sensor)
                self.rows.append((pid, sensor))
        odd = [pid for pid in self.entries if not ID_PATTERN.match(pid)]
        if odd:
            logger.warning("%d archive id(s) have unusual characters, e.g. %r", len(odd), odd[0][:80])
        self.by_sensor = Counter(s for _, s in self.rows)
        self.by_split = Counter(str(e.split) for e in self.entries.values())

    @classmethod
    def from_retriever(cls, retriever: Any) -> Catalog:
        """Page through ``retriever.items()`` once and keep what the service needs."""
        rows: list[dict[str, Any]] = []
        offset = 0
        while True:
            total, page = retriever.items(offset=offset, limit=_PAGE)
            rows.extend(page)
            offset += len(page)
            if not page or offset >= total:
                break
        logger.info("catalogue: %d rows, %d ids", len(rows), len({r['id'] for r in rows}))
        return cls(rows)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, patch_id: str) -> CatalogEntry | None:
        """The entry of ``patch_id`` or ``None``: only exact ids of the index are ever accepted."""
        if not isinstance(patch_id, str) or len(patch_id) > 200:
            return None
        return self.entries.get(patch_id)

    def random_row(
        self, *, sensor: str | None = None, split: str | None = None, rng: random.Random | None = None,
    ) -> tuple[str, str] | None:
        """A random (id, sensor) row matching the filters, or ``None`` when none does."""
        pool = [
            r for r in self.rows
            if (sensor is None or r[1] == sensor) and (split is None or self.entries[r[0]].split == split)
        ]
        if not pool:
            return None
        return (rng or random).choice(pool)
