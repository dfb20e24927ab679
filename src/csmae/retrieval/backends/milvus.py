"""Milvus vector backend (optional extra ``pip install 'csmae[milvus]'``): Lite in-process or a server.

URIs:

* a path ending ``.db`` (or ``file:///abs/path.db``) runs **Milvus Lite** in this process (pymilvus
  starts it; the ``.db`` is a folder; one process at a time may open it);
* ``http(s)://host:19530`` talks to a Milvus **standalone or cluster** server with the same code.
  A token (``user:password``) comes from the ``CSMAE_MILVUS_TOKEN`` environment variable, never
  from the manifest.

The index folder keeps ``manifest.json`` and ``items.parquet`` as for FAISS; the vectors and the
filter columns live in one Milvus collection per build (unique name, recorded in the manifest
entry), so a failed build or ``--overwrite`` never touches the collection an existing index uses.

Collection schema: see :mod:`csmae.retrieval.backends.milvus_expr` (``row`` INT64 primary key = row
of the items table, ``vec`` FLOAT_VECTOR, scalar filter columns). Vectors are L2-normalised and
searched with metric IP, so scores equal the FAISS backend's (cosine).

Exactness: a Filter becomes a Milvus boolean expression (native filtering inside the search). When
the index also passes the allowed rows (``rows``), hits outside them are dropped and, if that
leaves fewer than k, the search is repeated with a larger limit (up to Milvus's topk cap 16384,
then with the allowed rows as an explicit ``row in [...]`` list), so FLAT returns exactly the
brute-force top-k among the allowed rows. Approximate kinds (HNSW, IVF) widen ``ef`` / ``nprobe``
by 1 / selectivity under a filter, and a query whose walk still comes back short of
min(k, allowed) is redone once at the widest setting (ef 4096 / every list).

Crash safety of ``add``: rows are inserted before the index folder's new manifest is written; the
manifest entry records ``next_row``; on load, rows ``>= next_row`` (an interrupted add) are deleted,
so the index loads with its old content. ``remove`` deletes at once; a collection found with fewer
rows than the manifest (an interrupted remove) loads with a warning, one with more is an error.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from csmae.errors import redact_uri
from csmae.retrieval.backends import milvus_archive as A
from csmae.retrieval.backends.base import BackendOption, BackendSpec
from csmae.retrieval.backends.milvus_expr import filter_expression, rows_expression
from csmae.retrieval.backends.milvus_util import (
    MilvusUnavailable,
    MissingExtra,
    NotMilvusLite,
    call,
    check_lite_path,
    guarded,
    redact,
    silence_lite_grpc,
    timed_out,
)

log = logging.getLogger(__name__)

__all__ = [
    "MilvusBackend",
    "MilvusUnavailable",
    "MissingExtra",
    "NotMilvusLite",
    "TOPK_MAX",
    "connect",
    "create",
    "is_lite_uri",
    "load",
]

EXTRA_HINT = "pip install 'csmae[milvus]'  (pymilvus and milvus-lite)"
#: Milvus's per-search limit on topk (and on nq): documented server maximum.
TOPK_MAX = 16384
CONNECT_TIMEOUT_S = 10.0
#: a search or vector read that timed out on a server that answers (not one that is down, whose
#: calls fail within CONNECT_TIMEOUT_S) gets one more try of this long before it is a 503
SLOW_READ_S = 50.0
INSERT_BYTES = 8 << 20  # per insert request: well under the server's 64 MB gRPC message limit
QUERY_BATCH = 256
#: the largest HNSW ef a filtered search widens to
EF_MAX = 4096
#: consistency of searches and vector reads (docs/milvus.md "Consistency"): Bounded does not wait
#: for the server's next time tick (a Strong search on a 2.3 standalone waits ~200 ms for it) ...
SEARCH_CONSISTENCY = "Bounded"
#: ... and for this long after the items snapshot is read or this process writes, Strong: Bounded
#: may miss writes of the server's last ``common.gracefulTime`` (5 s by default); this window
#: makes every item of the snapshot (and a writer's own rows) visible to the first searches
STRONG_WINDOW_S = 10.0
#: how long :meth:`MilvusBackend.wait_indexed` waits for a server's index node (HNSW over 1M x 768
#: covered every row 12-21 min after the insert on 2 cores, bench/README.md "## milvus"); how often
#: it looks and logs
INDEX_WAIT_S = 4 * 3600.0
INDEX_POLL_S = 2.0
INDEX_LOG_S = 60.0
#: how long a remove, or a load that rolled an interrupted add back, waits for count(*) to reflect
#: the delete (a 2.3 server's count(*) was seen lagging it under load)
COUNT_SETTLE_S = 30.0
#: how often count(*) is asked again meanwhile
COUNT_POLL_S = 0.5

#: csmae kind -> Milvus index type; any Milvus index type name is also accepted.
KINDS = {"exact": "FLAT", "flat": "FLAT", "hnsw": "HNSW", "ivf": "IVF_FLAT", "ivf-sq8": "IVF_SQ8"}
INDEX_TYPES = ("FLAT", "HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "DISKANN", "AUTOINDEX")
SCALAR_FIELDS = ("sensor", "split", "labels", "country", "season", "t")
#: one BOOL column per label up to this many labels (Milvus's default limit is 64 fields)
MAX_LABEL_COLUMNS = 32
BBOX_FIELDS = ("bbox_xmin", "bbox_ymin", "bbox_xmax", "bbox_ymax")
#: VARCHAR fields and their max_length (UTF-8 bytes; a longer value makes Milvus refuse the insert)
VARCHAR_BYTES = {"id": 512, "sensor": 64, "split": 64, "country": 256, "season": 64}
#: URI schemes pymilvus connects with (besides a Lite ``.db`` path)
SERVER_SCHEMES = ("http", "https", "tcp", "unix")
#: Milvus's rule for collection names
COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


def _pymilvus() -> Any:
    try:
        import pymilvus
    except ImportError as e:
        raise MissingExtra(f"the Milvus backend needs pymilvus: {EXTRA_HINT}") from e
    return pymilvus


def is_lite_uri(uri: str) -> bool:
    """True for a Milvus Lite URI: a local path ending ``.db`` (optionally ``file://``)."""
    return not re.match(r"^[a-z][a-z0-9+.-]*://", uri, re.I) or uri.lower().startswith("file://")


def _lite_path(uri: str) -> Path:
    path = Path(uri[len("file://") :] if uri.lower().startswith("file://") else uri).expanduser()
    if path.suffix != ".db":
        raise ValueError(
            f"Milvus URI {uri!r}: a Milvus Lite path must end in .db (e.g. ./archive.db), a server "
            "URI looks like http://host:19530"
        )
    check_lite_path(path.absolute())  # before resolving: a symbolic link named x.db is refused too
    return path.resolve()


def normalise_uri(uri: str) -> str:
    """An absolute ``.db`` path for Lite, the URI unchanged for a server."""
    uri = str(uri).strip()
    if not uri:
        raise ValueError("empty Milvus URI")
    if is_lite_uri(uri):
        return str(_lite_path(uri))
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in SERVER_SCHEMES:
        raise ValueError(
            f"Milvus URI {uri!r}: unsupported scheme {scheme!r}; a server URI looks like "
            "http://host:19530 (also https, tcp, unix), a Milvus Lite one like ./archive.db"
        )
    return uri


def connect(uri: str, *, timeout: float = CONNECT_TIMEOUT_S, token: str | None = None) -> Any:
    """A ``MilvusClient`` for ``uri``; a clear error naming the URI when it does not answer in time."""
    pymilvus = _pymilvus()
    uri = normalise_uri(uri)
    if is_lite_uri(uri):
        try:
            import milvus_lite  # noqa: F401
        except ImportError as e:
            raise MissingExtra(
                f"{uri}: a .db URI runs Milvus Lite, which is not installed: {EXTRA_HINT}"
            ) from e
        check_lite_path(Path(uri))  # an existing x.db that is not Milvus Lite's: never touched
        silence_lite_grpc()
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            return pymilvus.MilvusClient(uri, timeout=timeout)
        except Exception as e:
            why = _msg(e)
            if _lite_locked(Path(uri)):
                why = (
                    "another process has it open (Milvus Lite allows one process per .db: stop "
                    "`csmae serve` or the other csmae command using it, or use a Milvus server)"
                )
            raise MilvusUnavailable(f"Milvus Lite could not open {uri}: {why}") from None
    token = token if token is not None else os.environ.get("CSMAE_MILVUS_TOKEN", "")
    try:
        client = pymilvus.MilvusClient(uri=uri, token=token, timeout=timeout)
        client.list_collections(timeout=timeout)
    except Exception as e:
        raise MilvusUnavailable(
            f"Milvus at {redact(uri)} did not answer within {timeout:g} s ({redact(_msg(e))}); is the "
            "server running and is this its gRPC port (default 19530)? See docs/milvus.md"
        ) from None
    return client


def _lite_locked(path: Path) -> bool:
    """True when another process holds Milvus Lite's advisory lock on ``path/LOCK`` (Unix)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    lock = path / "LOCK"
    if not lock.exists():
        return False
    with open(lock, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return False


def _msg(e: BaseException) -> str:
    m = getattr(e, "message", None) or str(e)
    return str(m).splitlines()[0][:300]


def _index_type(kind: str) -> str:
    t = KINDS.get(kind.lower(), kind.upper())
    if t not in INDEX_TYPES:
        raise ValueError(
            f"unknown Milvus index kind {kind!r}; use one of {sorted(KINDS)} or {list(INDEX_TYPES)}"
        )
    return t


def _build_params(index_type: str, n: int, dim: int) -> dict[str, Any]:
    if index_type in ("HNSW", "HNSW_SQ"):
        return {"M": 32, "efConstruction": 200}
    if index_type.startswith("IVF"):
        p: dict[str, Any] = {"nlist": int(max(1, min(65536, 4 * np.sqrt(max(n, 1)))))}
        if index_type == "IVF_PQ":
            p["m"] = next(m for m in (96, 64, 48, 32, 24, 16, 8, 4, 2, 1) if dim % m == 0)
            p["nbits"] = 8
        return p
    return {}


def _collection_name(hint: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", hint)[:40].strip("_") or "index"
    return f"csmae_{base}_{uuid.uuid4().hex[:8]}"


def _schema(pymilvus: Any, dim: int, n_labels: int, archive: bool = False) -> Any:
    dt_ = pymilvus.DataType
    s = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("row", dt_.INT64, is_primary=True)
    s.add_field("vec", dt_.FLOAT_VECTOR, dim=dim)
    s.add_field("id", dt_.VARCHAR, max_length=VARCHAR_BYTES["id"])
    s.add_field("sensor", dt_.VARCHAR, max_length=VARCHAR_BYTES["sensor"])
    s.add_field("split", dt_.VARCHAR, max_length=VARCHAR_BYTES["split"])
    s.add_field("labels", dt_.ARRAY, element_type=dt_.INT64, max_capacity=max(1, n_labels))
    if n_labels <= MAX_LABEL_COLUMNS:
        for i in range(n_labels):
            s.add_field(f"label_{i}", dt_.BOOL)
    # no nullable fields (a Milvus < 2.5 server has none): "" / presence flags (milvus_expr)
    s.add_field("country", dt_.VARCHAR, max_length=VARCHAR_BYTES["country"])
    s.add_field("season", dt_.VARCHAR, max_length=VARCHAR_BYTES["season"])
    s.add_field("t", dt_.INT64)
    s.add_field("has_t", dt_.BOOL)
    for f in BBOX_FIELDS:
        s.add_field(f, dt_.DOUBLE)
    s.add_field("has_bbox", dt_.BOOL)
    if archive:  # the collection is the archive: every other items column, the write's token
        s.add_field("meta", dt_.JSON)
        s.add_field("ingest", dt_.VARCHAR, max_length=64)
    return s


def _column(items: Any, name: str) -> list[Any]:
    import pandas as pd

    if name not in items:
        return [None] * len(items)
    return [
        None if (v is None or (not isinstance(v, (list, np.ndarray)) and pd.isna(v))) else v
        for v in items[name].tolist()
    ]


def _epoch_seconds(items: Any) -> list[int | None]:
    import pandas as pd

    if "datetime" not in items:
        return [None] * len(items)
    t = pd.to_datetime(items["datetime"], utc=True)
    ns = t.to_numpy(dtype="datetime64[ns]").view(np.int64)
    na = t.isna().to_numpy()
    return [None if bad else int(v // 1_000_000_000) for v, bad in zip(ns, na)]


def _bounds(items: Any) -> np.ndarray:
    """(N, 4) float64 bounds of each row's footprint (``geometry`` WKB), NaN where none."""
    out = np.full((len(items), 4), np.nan)
    if "geometry" not in items:
        return out
    import shapely

    wkb = items["geometry"].to_numpy(dtype=object)
    have = np.array([g is not None and not (isinstance(g, float) and np.isnan(g)) for g in wkb], bool)
    if have.any():
        geoms = shapely.from_wkb(list(wkb[have]), on_invalid="ignore")
        out[have] = shapely.bounds(geoms)
    return out


def _records(
    rows: np.ndarray,
    vectors: np.ndarray,
    items: Any,
    label_names: Sequence[str],
    label_columns: bool,
    nullable: bool = False,
) -> list[dict]:
    """Collection rows; ``nullable``: the legacy schema (nulls instead of "" / presence flags)."""
    n = len(rows)
    labels = items["labels"].to_numpy() if "labels" in items else [np.zeros(0, bool)] * n
    country, season = _column(items, "country"), _column(items, "season")
    t = _epoch_seconds(items)
    b = _bounds(items)
    ids = items["id"].astype(str).tolist() if "id" in items else [""] * n
    sensors = items["sensor"].astype(str).tolist()
    splits = [str(s) if s is not None else "" for s in _column(items, "split")]
    out = []
    for i in range(n):
        lab = np.asarray(labels[i])
        lab_ids = np.flatnonzero(lab).tolist() if lab.dtype == bool else [int(x) for x in lab]
        rec: dict[str, Any] = {
            "row": int(rows[i]),
            "vec": vectors[i],
            "id": ids[i],
            "sensor": sensors[i],
            "split": splits[i],
            "labels": lab_ids,
            "country": None if country[i] is None else str(country[i]),
            "season": None if season[i] is None else str(season[i]),
            "t": t[i],
        }
        for j, f in enumerate(BBOX_FIELDS):
            rec[f] = None if np.isnan(b[i, j]) else float(b[i, j])
        if not nullable:
            rec["has_t"], rec["has_bbox"] = rec["t"] is not None, rec["bbox_xmin"] is not None
            for f in ("country", "season"):
                rec[f] = rec[f] or ""
            for f in ("t", *BBOX_FIELDS):
                rec[f] = rec[f] if rec[f] is not None else 0
        if label_columns:
            have = set(lab_ids)
            for j in range(len(label_names)):
                rec[f"label_{j}"] = j in have
        out.append(rec)
    return out


def _check_records(recs: list[dict], collection: str) -> None:
    """What Milvus would refuse, refused before anything is written (ValueError naming row and field)."""
    for rec in recs:
        for field, most in VARCHAR_BYTES.items():
            value = rec.get(field)
            if value is not None and len(value.encode("utf-8")) > most:
                raise ValueError(
                    f"Milvus collection {collection}: row {rec['row']} (id {rec['id'][:60]!r}): {field} "
                    f"is {len(value.encode('utf-8'))} bytes, the collection allows {most}; nothing written"
                )


def _check_lengths(items: Any, collection: str) -> None:
    """:func:`_check_records` over an items table's columns (before any row is built or written)."""
    for field, most in VARCHAR_BYTES.items():
        if field not in items:
            continue
        for i, value in enumerate(items[field].tolist()):
            if isinstance(value, str) and len(value.encode("utf-8")) > most:
                raise ValueError(
                    f"Milvus collection {collection}: item {i} (id {str(items['id'].iloc[i])[:60]!r}): "
                    f"{field} is {len(value.encode('utf-8'))} bytes, the collection allows {most}; "
                    "nothing written"
                )


class MilvusBackend:
    """Vectors by row id in one Milvus collection (see the module docstring).

    Build with :func:`create` (new collection) or :func:`load` (an index folder's manifest entry).
    """

    name = "milvus"
    tombstones = 0  # Milvus deletes rows itself: nothing for `csmae index compact` to do

    def __init__(
        self,
        *,
        client: Any,
        uri: str,
        collection: str,
        dim: int,
        label_names: Sequence[str],
        index_type: str,
        index_params: dict[str, Any],
        search_params: dict[str, Any],
        count: int,
        next_row: int,
        nullable: bool = False,
        archive: bool = False,
    ):
        self.client = client
        self.uri = uri
        self.collection = collection
        self.dim = int(dim)
        self.label_names = list(label_names)
        self.index_type = index_type
        self.index_params = dict(index_params)
        self.search_params = dict(search_params)
        self.count = int(count)
        self.next_row = int(next_row)
        self.label_columns = len(self.label_names) <= MAX_LABEL_COLUMNS
        #: the collection has the legacy nullable schema (no presence flags): milvus_expr
        self.nullable = bool(nullable)
        #: the collection is the archive (milvus_archive): primary keys are item keys, row ids are
        #: positions in the items snapshot read by items(); else row ids are the primary keys
        self.archive = bool(archive)
        #: None: SEARCH_CONSISTENCY, Strong within STRONG_WINDOW_S of a snapshot or write (see
        #: :meth:`read_consistency`); or a Milvus level that every search uses ("Strong", ...)
        self.consistency: str | None = None
        self._strong_until = time.monotonic() + STRONG_WINDOW_S  # a new or just opened collection
        self._keys = np.zeros(0, np.int64)  # archive: row id (position) -> primary key
        self._sorted: np.ndarray | None = None
        self._order: np.ndarray | None = None
        self.column_types: dict[str, str] = {}

    def __len__(self) -> int:
        return self.count

    @property
    def n_rows(self) -> int:
        """Row ids ever given: 0..n_rows-1 (removed rows are not reused)."""
        return self.next_row

    @property
    def approximate(self) -> bool:
        return self.index_type != "FLAT"

    # ------------------------------------------------------------ consistency
    def _strong_for_a_while(self) -> None:
        self._strong_until = time.monotonic() + STRONG_WINDOW_S

    def read_consistency(self) -> str:
        """The consistency level of the next search / vector read: :attr:`consistency` if set, else
        Strong within STRONG_WINDOW_S of reading the snapshot or of this process's last write, and
        SEARCH_CONSISTENCY after (the same results: every row of the snapshot is visible by then)."""
        if self.consistency:
            return self.consistency
        return "Strong" if time.monotonic() < self._strong_until else SEARCH_CONSISTENCY

    # ------------------------------------------------------------------ writes
    def add(self, rows: np.ndarray, vectors: np.ndarray, items: Any = None) -> None:
        """Insert (upsert: re-adding a row replaces it) vectors (R, D) under rows (R,)."""
        rows = np.asarray(rows, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if items is None:
            raise ValueError("the Milvus backend stores the filter columns: add() needs the items rows")
        self._check_add(rows, vectors, items)
        if len(rows) == 0:
            return
        if not self.archive:
            self._write(rows, vectors, items, token="")
            self.count = self._count()
            self.next_row = max(self.next_row, int(rows.max()) + 1)
            return
        if not np.array_equal(rows, np.arange(len(self._keys), len(self._keys) + len(rows))):
            raise ValueError("add: an archive collection's new row ids follow its items table's")
        keys = A.item_keys(items["id"].tolist(), items["sensor"].tolist())
        if not self.column_types:
            self.column_types = A.column_types(items)
        self._write(keys, vectors, items, token="build")
        self._set_keys(np.concatenate([self._keys, keys]))
        self.count += len(rows)
        self.next_row = len(self._keys)

    def _check_add(self, rows: np.ndarray, vectors: np.ndarray, items: Any) -> None:
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or not len(vectors) == len(rows) == len(items):
            raise ValueError(
                f"add: {len(rows)} rows, vectors {vectors.shape}, {len(items)} items; "
                f"the index holds D={self.dim}"
            )
        if len(rows) and not np.isfinite(vectors).all():
            bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
            raise ValueError(f"add: vector of row {int(rows[bad])} is not finite (NaN/inf); nothing written")

    def _write(
        self, pks: np.ndarray, vectors: np.ndarray, items: Any, *, token: str,
        at: tuple[int, int] | None = None, flush: bool = True,
    ) -> None:  # fmt: skip
        """Upsert rows under primary keys ``pks``; every batch is checked before the first is written.

        ``at``: (write time in ms, position of the first row) of a write made in parts (the order
        :meth:`items` lists them in); ``flush``: seal the data now (the last part of a write)."""
        step = max(1, INSERT_BYTES // (4 * self.dim + 2048))
        items = items.reset_index(drop=True)
        metas = A.meta_rows(items, self.column_types) if self.archive else None
        if metas is not None:  # write time and position: items() keeps the order items were written in
            now, first = at if at is not None else (time.time_ns() // 1_000_000, 0)
            for i, meta in enumerate(metas):
                meta["_w"], meta["_i"] = now, first + i
        batches = []
        for lo in range(0, len(pks), step):
            hi = min(len(pks), lo + step)
            recs = _records(
                pks[lo:hi], vectors[lo:hi], items.iloc[lo:hi], self.label_names, self.label_columns,
                self.nullable,
            )  # fmt: skip
            if metas is not None:
                for rec, meta in zip(recs, metas[lo:hi]):
                    rec["meta"], rec["ingest"] = meta, token
            _check_records(recs, self.collection)
            batches.append(recs)
        with guarded(self.uri, "insert"):
            for recs in batches:
                self.client.upsert(self.collection, recs)
            if flush:
                self.client.flush(self.collection)
        self._strong_for_a_while()

    def remove(self, rows: np.ndarray) -> None:
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        pks = self._keys[rows] if self.archive else rows
        self._delete(pks)
        self.count = self.count - len(rows) if self.archive else self._count_settled(self.count - len(rows))

    def _delete(self, pks: np.ndarray) -> None:
        with guarded(self.uri, "delete"):
            for lo in range(0, len(pks), 10_000):
                self.client.delete(self.collection, ids=[int(r) for r in pks[lo : lo + 10_000]])
            self.client.flush(self.collection)
        self._strong_for_a_while()

    def compact(self, live_rows: np.ndarray) -> MilvusBackend:
        """Nothing to rebuild (Milvus compacts deleted rows itself); the same backend."""
        return self

    def _count(self) -> int:
        res = call(
            self.uri, "count", self.client.query, self.collection, filter="", output_fields=["count(*)"]
        )
        return int(res[0]["count(*)"])

    def _count_settled(self, expected: int) -> int:
        """count(*) once it has come down to ``expected`` after a delete, or whatever it says after
        :data:`COUNT_SETTLE_S` (rows that were not there): a 2.3 server's count(*) can lag a delete
        that its row query already sees (seen under load in CI)."""
        count = self._count()
        settle = time.monotonic() + COUNT_SETTLE_S
        while count > expected and time.monotonic() < settle:
            time.sleep(COUNT_POLL_S)
            count = self._count()
        return count

    # ------------------------------------------------------------ the archive
    @property
    def owns_items(self) -> bool:
        """The collection is the archive: the index reads its items table from :meth:`items`."""
        return self.archive

    def _set_keys(self, keys: np.ndarray) -> None:
        self._keys = np.asarray(keys, dtype=np.int64)
        self._order = np.argsort(self._keys, kind="stable")
        self._sorted = self._keys[self._order]

    def _positions(self, pks: np.ndarray) -> np.ndarray:
        """Row ids (positions) of primary keys; -1 for a key outside the snapshot."""
        assert self._sorted is not None and self._order is not None
        pks = np.asarray(pks, dtype=np.int64)
        i = np.clip(np.searchsorted(self._sorted, pks), 0, max(len(self._sorted) - 1, 0))
        ok = (
            (len(self._sorted) > 0) & (self._sorted[i] == pks)
            if len(self._sorted)
            else np.zeros(pks.shape, bool)
        )
        return np.where(ok & (pks >= 0), self._order[i] if len(self._order) else -1, -1)

    def items(self, sensors: Sequence[str] = ()) -> Any:
        """The items table read from the collection now (row i = row id i), rows grouped by
        ``sensors`` order then key; the backend's row ids follow it (a snapshot: reload to see
        later writes)."""
        fields = ["row", "id", "sensor", "labels", "meta"]
        with guarded(self.uri, "read items"):
            total = self._count()
            recs = A.read_rows(self.client, self.collection, fields, total)
        rank = {s: i for i, s in enumerate(sensors)}

        def order(r: dict[str, Any]) -> tuple[Any, ...]:
            m = r.get("meta") or {}
            return (rank.get(str(r["sensor"]), len(rank)), str(r["sensor"]), m.get("_w", 0), m.get("_i", 0),
                    int(r["row"]))  # fmt: skip

        recs.sort(key=order)
        self._strong_for_a_while()  # the snapshot's rows are all seen by the searches after it
        items = A.decode_items(recs, self.column_types, len(self.label_names))
        self._set_keys(np.array([int(r["row"]) for r in recs], dtype=np.int64))
        self.count = self.next_row = len(recs)
        return items

    def facts(self) -> dict[str, Any]:
        """The facts recorded in the collection at build (model, sensors, dim, label names, ...)."""
        with guarded(self.uri, "read facts"):
            return A.read_records(self.client, self.collection, A.FACTS_KEY).get(A.FACTS_KEY, {})

    def record_facts(self, manifest: dict[str, Any]) -> None:
        """Record an index manifest's model facts and the items columns in the collection."""
        keep = ("model", "sensors", "dim", "label_names", "dataset", "embed_precision", "index_kind",
                "factory", "metric", "version")  # fmt: skip
        facts = {k: manifest[k] for k in keep if k in manifest}
        facts["columns"] = self.column_types
        with guarded(self.uri, "record facts"):
            A.write_record(self.client, self.collection, A.FACTS_KEY, facts)

    def upsert_items(
        self, vectors: np.ndarray, items: Any, *, token: str, source: str
    ) -> tuple[int, list[tuple[str, str]]]:
        """Add or replace items by (id, sensor) under ingest ``token`` (a rerun of the same token
        completes it: rows are upserts); returns (added, replaced keys)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._check_add(np.arange(len(items), dtype=np.int64), vectors, items)
        return self.upsert_parts(items, [(np.arange(len(items)), vectors)], token=token, source=source)

    def upsert_parts(
        self, items: Any, parts: Iterable[tuple[np.ndarray, np.ndarray]], *, token: str, source: str
    ) -> tuple[int, list[tuple[str, str]]]:
        """:meth:`upsert_items` with the vectors given in parts: ``(positions in items, (R, D)
        L2-normalised vectors)``, e.g. one per shard of a folder (bounded memory). Every row's
        columns are checked before the first part is written; the parts are written in order."""
        items = items.reset_index(drop=True)
        _check_lengths(items, self.collection)  # what Milvus would refuse, before anything is written
        extra = {c: t for c, t in A.column_types(items.head(1000)).items() if c not in self.column_types}
        if extra:  # a writer whose items carry a new column (e.g. place): recorded for every reader
            self.column_types = {**self.column_types, **extra}
            facts = self.facts()
            facts["columns"] = self.column_types
            with guarded(self.uri, "record facts"):
                A.write_record(self.client, self.collection, A.FACTS_KEY, facts)
        keys = A.item_keys(items["id"].tolist(), items["sensor"].tolist())
        present = self.present(keys)
        replaced = [(str(i), str(s)) for i, s, p in zip(items["id"], items["sensor"], present) if p]
        records = A.read_records(self.client, self.collection, f"ingest:{token}")
        if records.get(f"ingest:{token}", {}).get("state") == "started":
            log.warning("completing the interrupted write %s of %s into %s", token, source, self.collection)
        with guarded(self.uri, "record ingest"):
            A.write_record(
                self.client, self.collection, f"ingest:{token}", A.ingest_record(source, len(keys), "started")
            )
        now, written = time.time_ns() // 1_000_000, 0
        for pos, vectors in parts:
            pos = np.asarray(pos, dtype=np.int64)
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            self._check_add(pos, vectors, items.iloc[pos])
            written += len(pos)
            first = int(pos[0]) if len(pos) else 0
            self._write(keys[pos], vectors, items.iloc[pos], token=token, at=(now, first),
                        flush=written == len(keys))  # fmt: skip
        if written != len(keys):
            raise ValueError(f"upsert_parts: {written} vectors for {len(keys)} items")
        with guarded(self.uri, "record ingest"):
            A.write_record(
                self.client, self.collection, f"ingest:{token}", A.ingest_record(source, len(keys), "done")
            )
        return int((~present).sum()), replaced

    def delete_items(self, keys: np.ndarray) -> int:
        """Delete items by primary key; returns how many were present."""
        present = self.present(keys)
        self._delete(np.asarray(keys, dtype=np.int64)[present])
        return int(present.sum())

    def item_keys(self, ids: Any, sensors: Any) -> np.ndarray:
        """The collection's primary keys of (id, sensor) items."""
        return A.item_keys(list(ids), list(sensors))

    def present(self, keys: np.ndarray) -> np.ndarray:
        """(N,) bool: the primary keys stored in the collection now."""
        found: set[int] = set()
        with guarded(self.uri, "look up keys"):
            for lo in range(0, len(keys), 1000):
                got = self.client.get(self.collection, ids=[int(k) for k in keys[lo : lo + 1000]],
                                      output_fields=["row"])  # fmt: skip
                found.update(int(r["row"]) for r in got)
        return np.array([int(k) in found for k in keys], dtype=bool)

    def ingests(self) -> dict[str, dict[str, Any]]:
        """The recorded writes by token (``state`` ``started`` = interrupted, or running now)."""
        with guarded(self.uri, "read ingests"):
            recs = A.read_records(self.client, self.collection, "ingest:")
        return {k.split(":", 1)[1]: v for k, v in recs.items()}

    # ----------------------------------------------------------------- reads
    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        pks = self._keys[rows] if self.archive else rows
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        uniq = np.unique(pks)
        found: dict[int, Any] = {}
        for lo in range(0, len(uniq), 1000):
            res = self._loaded(
                "get vectors", self._patient, "get vectors", self.client.get, self.collection,
                ids=[int(r) for r in uniq[lo : lo + 1000]], output_fields=["vec"],
                consistency_level=self.read_consistency(),
            )  # fmt: skip
            found.update({int(r["row"]): r["vec"] for r in res})
        missing = [int(r) for r, p in zip(rows, pks) if int(p) not in found]
        if missing:
            raise KeyError(
                f"rows {missing[:10]} are not in Milvus collection {self.collection} at {redact(self.uri)}"
            )
        for i, r in enumerate(pks):
            out[i] = np.asarray(found[int(r)], dtype=np.float32)
        return out

    def _patient(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, timeout=CONNECT_TIMEOUT_S)`` (bounded: a server gone mid-search is a 503, not
        a hang); a call that ran past that deadline on a server that answers (busy with writes,
        starved of CPU) is tried once more for up to SLOW_READ_S."""
        try:
            return fn(*args, **kwargs, timeout=CONNECT_TIMEOUT_S)
        except Exception as e:
            if not timed_out(e):
                raise
            log.warning("Milvus at %s: %s took over %g s: trying once more for up to %g s",
                        redact(self.uri), what, CONNECT_TIMEOUT_S, SLOW_READ_S)  # fmt: skip
            return fn(*args, **kwargs, timeout=SLOW_READ_S)

    def _loaded(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args)``; a server restarted since (its collections not loaded yet) gets them loaded
        and the call repeated once; a server that does not answer is :class:`MilvusUnavailable`."""
        with guarded(self.uri, what):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                if "not loaded" not in str(e):
                    raise
                log.warning("Milvus at %s: %s is not loaded (a restarted server?): loading it",
                            redact(self.uri), self.collection)  # fmt: skip
                for name in (
                    self.collection,
                    *([A.facts_collection(self.collection)] if self.archive else []),
                ):
                    self.client.load_collection(name, timeout=CONNECT_TIMEOUT_S * 6)
                return fn(*args, **kwargs)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        rows: np.ndarray | None = None,
        where: Any = None,
        params: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by inner product, among ``rows`` / the ``where`` filter (module docstring).

        ``params`` overrides the search parameters (``ef`` / ``nprobe``: tuning, benchmarks).
        Returns scores (Q, k) float32 and rows (Q, k) int64, padded with -inf / -1.
        """
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"query vectors have D={q.shape[1]}, the index holds D={self.dim}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if k > TOPK_MAX:
            raise ValueError(f"Milvus returns at most {TOPK_MAX} results per query; asked for k={k}")
        allowed = None if rows is None else np.asarray(rows, dtype=np.int64)
        if self.archive:  # allowed primary keys: the snapshot's (a later write is seen after reload)
            assert self._sorted is not None
            allowed = self._sorted if allowed is None else np.sort(self._keys[allowed])
        if where is not None and not getattr(where, "is_empty", False):
            expr = filter_expression(
                where, label_names=self.label_names, label_columns=self.label_columns, nullable=self.nullable
            )
        elif allowed is not None and not self.archive:
            expr = rows_expression(allowed)
            allowed = None  # the expression is exact
        else:
            expr = ""
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        out = np.full((len(q), k), -1, dtype=np.int64)
        if allowed is not None and len(allowed) == 0:
            return scores, out
        sp = {**self.search_params, **(params or {})}
        if self.approximate and allowed is not None and not params:
            sp = self._widen(sp, len(allowed), k)
        for lo in range(0, len(q), QUERY_BATCH):
            hi = min(len(q), lo + QUERY_BATCH)
            self._loaded(
                "search", self._search_exact, q[lo:hi], k, expr, allowed, scores[lo:hi], out[lo:hi], sp
            )
        if self.archive:
            found = out >= 0
            out[found] = self._positions(out[found])
        return scores, out

    def _widen(self, sp: dict[str, Any], n_allowed: int, k: int) -> dict[str, Any]:
        """Scale ef / nprobe by 1 / selectivity for a filtered approximate search: a graph or list
        walk under a filter meets allowed items in that proportion (capped at EF_MAX / nlist)."""
        share = max(n_allowed, 1) / max(self.count, 1)
        if share >= 1:
            return sp
        out = dict(sp)
        if "ef" in out:
            out["ef"] = int(min(EF_MAX, max(int(out["ef"]), k) / share))
        if "nprobe" in out:
            nlist = int(self.index_params.get("nlist", out["nprobe"]))
            out["nprobe"] = int(min(nlist, np.ceil(int(out["nprobe"]) / share)))
        return out

    def _search_exact(
        self,
        q: np.ndarray,
        k: int,
        expr: str,
        allowed: np.ndarray | None,
        scores: np.ndarray,
        out: np.ndarray,
        sp: dict[str, Any],
        boosted: bool = False,
    ) -> None:
        todo = np.arange(len(q))
        limit = k
        want = k if allowed is None else min(k, len(allowed))
        boosted = boosted or not self.approximate  # approximate and short: redo once, widest
        while len(todo):
            hits = self._raw(q[todo], limit, expr, sp)
            retry, short = [], []
            for j, qi in enumerate(todo):
                h = hits[j]
                rr = np.array([x[0] for x in h], dtype=np.int64)
                ss = np.array([x[1] for x in h], dtype=np.float32)
                exhausted = len(h) < limit
                if allowed is not None and len(rr):
                    at = np.clip(np.searchsorted(allowed, rr), 0, len(allowed) - 1)
                    keep = allowed[at] == rr  # allowed is sorted: O(k log R), not a sort per query
                    rr, ss = rr[keep], ss[keep]
                if exhausted and len(rr) < want and not boosted:
                    short.append(qi)
                elif len(rr) >= k or exhausted:
                    m = min(k, len(rr))
                    out[qi, :m], scores[qi, :m] = rr[:m], ss[:m]
                else:
                    retry.append(qi)
            if short:  # the graph / list walk ran dry under the filter: redo at the widest setting
                sub_s = np.full((len(short), k), -np.inf, dtype=np.float32)
                sub_r = np.full((len(short), k), -1, dtype=np.int64)
                self._search_exact(q[short], k, expr, allowed, sub_s, sub_r, self._widest(sp), boosted=True)
                scores[short], out[short] = sub_s, sub_r
            todo = np.asarray(retry, dtype=np.int64)
            if len(todo) == 0:
                break
            if limit >= TOPK_MAX:  # the expression admits many rows the index excludes: list them
                assert allowed is not None
                expr = f"({expr}) and {rows_expression(allowed)}" if expr else rows_expression(allowed)
                limit, allowed = k, None
            else:
                limit = min(TOPK_MAX, limit * 4)

    def _widest(self, sp: dict[str, Any]) -> dict[str, Any]:
        out = dict(sp)
        if self.index_type.startswith("HNSW"):
            out["ef"] = EF_MAX
        if "nlist" in self.index_params:
            out["nprobe"] = int(self.index_params["nlist"])
        return out

    def _raw(self, q: np.ndarray, limit: int, expr: str, sp: dict[str, Any]) -> list[list[tuple[int, float]]]:
        params: dict[str, Any] = {"metric_type": "IP"}
        if sp:
            params["params"] = dict(sp)
        res = self._patient(
            "search",
            self.client.search,
            self.collection,
            data=[v for v in q],
            limit=limit,
            filter=expr,
            output_fields=["row"],
            search_params=params,
            anns_field="vec",
            consistency_level=self.read_consistency(),
        )
        return [[(int(h["row"]), float(h["distance"])) for h in hits] for hits in res]

    def wait_indexed(self, timeout: float = INDEX_WAIT_S) -> None:
        """On a server, return once the vector index covers every row of the collection.

        A server builds an approximate index (HNSW, IVF) in its index node after the data is sealed,
        segment by segment, minutes after the insert returns (1M x 768 HNSW: 12-21 min on 2 cores);
        until then its query node serves the unindexed segments without that index, so an ``ef`` /
        ``nprobe`` tuned then (:meth:`tune`) is not measured on the index it is for. Milvus Lite
        builds on the first search and FLAT has nothing to build: no wait. Raises
        :class:`TimeoutError` naming the collection and the rows indexed so far after ``timeout``
        seconds."""
        if not self.approximate or is_lite_uri(self.uri):
            return
        t0 = last_log = time.monotonic()
        told = False
        while True:
            info = call(
                self.uri, "describe index", self.client.describe_index, self.collection, index_name="vec"
            )
            total, done = int(info.get("total_rows", 0)), int(info.get("indexed_rows", 0))
            if done >= total:
                return
            now = time.monotonic()
            if now - t0 > timeout:
                raise TimeoutError(
                    f"Milvus at {redact_uri(self.uri)}: the {self.index_type} index of collection "
                    f"{self.collection!r} covers {done:,} of {total:,} rows after {timeout:.0f} s; "
                    "the server's index node is still building (tune again once it is done)"
                )
            if not told:  # once, where a CLI user sees it: the wait can be minutes
                log.warning("waiting for the Milvus server to index collection %s before tuning: %s covers "
                            "%d of %d rows (HNSW over 1M x 768: 12-21 min on 2 cores; -v shows progress)",
                            self.collection, self.index_type, done, total)  # fmt: skip
                told = True
            elif now - last_log >= INDEX_LOG_S:
                log.info("Milvus %s: %s index covers %d of %d rows (%.0f s)", self.collection,
                         self.index_type, done, total, now - t0)  # fmt: skip
                last_log = now
            time.sleep(INDEX_POLL_S)

    def tune(
        self,
        vectors: np.ndarray | None,
        *,
        target: float,
        n_queries: int = 500,
        seed: int = 0,
        truth: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> float | None:
        """Smallest ``ef`` (HNSW) / ``nprobe`` (IVF) reaching recall@10 ``target`` against exact
        search over ``vectors`` (rows 0..N-1 of this backend, L2-normalised), on sampled rows as
        queries; stored in ``search_params``. On a server it first waits for the index to cover
        every row (:meth:`wait_indexed`). Returns the measured recall (None for FLAT)."""
        if not self.approximate:
            return None
        self.wait_indexed()
        if self.index_type.startswith("HNSW"):
            name, values = "ef", [64, 96, 128, 192, 256, 384, 512]  # never below Lite's default 64
        elif self.index_type.startswith("IVF"):
            nlist = int(self.index_params.get("nlist", 1))
            name, values = "nprobe", [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256) if p <= nlist] or [nlist]
        else:
            return None
        if truth is not None:  # (queries, their exact top-k row ids), e.g. computed shard by shard
            tq, tr = np.ascontiguousarray(truth[0], dtype=np.float32), np.asarray(truth[1])
            recall, best = 0.0, values[-1]
            for val in values:
                _, got = self.search(tq, tr.shape[1], params={name: val})
                recall, best = float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, tr)])), val
                if recall >= target:
                    break
            self.search_params[name] = best
            return recall
        assert vectors is not None
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        n = len(v)
        if n < 2:
            return 1.0
        kk = min(10, n - 1)
        rng = np.random.default_rng(seed)
        qi = np.sort(rng.choice(n, size=min(n_queries, n), replace=False))
        sims = v[qi] @ v.T  # (Q, N)
        sims[np.arange(len(qi)), qi] = -np.inf
        exact = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        recall, best = 0.0, values[-1]
        for val in values:
            _, got = self.search(v[qi], kk + 1, params={name: val})
            hits = sum(len(set(exact[j]) & set(got[j][got[j] != qi[j]][:kk])) for j in range(len(qi)))
            recall, best = hits / (kk * len(qi)), val
            if recall >= target:
                break
        if recall < target:
            log.warning(
                "Milvus %s reaches recall@10 %.3f < %.3f at %s=%d",
                self.index_type,
                recall,
                target,
                name,
                best,
            )
        self.search_params[name] = best
        log.info("Milvus %s: %s=%d gives recall@10 %.3f", self.index_type, name, best, recall)
        return recall

    # ------------------------------------------------------------- metadata
    @property
    def kind(self) -> str:
        return self.index_type

    @property
    def factory(self) -> str:
        """What the index manifest shows as the index type (FAISS: its factory string)."""
        return f"Milvus {self.index_type}"

    @property
    def params(self) -> dict[str, Any]:
        """The search parameters (``ef`` / ``nprobe``), as FaissBackend.params."""
        return self.search_params

    def set_params(self, params: Mapping[str, Any]) -> None:
        """Update the search parameters (``ef`` / ``nprobe``)."""
        self.search_params.update(params)

    @classmethod
    def load(
        cls, folder: Path | None, entry: dict[str, Any], *, params: dict[str, Any] | None = None, **_: Any
    ) -> MilvusBackend:
        """:func:`load` as a classmethod (the FaissBackend shape)."""
        return load(folder, entry, params=params)

    def save(self, folder: Path, **_: Any) -> dict[str, Any]:
        """Nothing to write into the index folder (the vectors live in Milvus); the manifest entry."""
        self.client.flush(self.collection)
        return self.entry()

    def files(self) -> list[str]:
        """No files in the index folder: the vectors and filter columns live in the collection."""
        return []

    def relocate(self, folder: Path) -> None:
        """Nothing in the index folder moves."""

    def discard(self) -> None:
        """Drop the collection of a build that failed."""
        self.drop()

    def entry(self) -> dict[str, Any]:
        archive = {"archive": True, "facts": A.facts_collection(self.collection)} if self.archive else {}
        return {
            "backend": self.name,
            "uri": self.uri,
            "lite": is_lite_uri(self.uri),
            "collection": self.collection,
            **archive,
            "dim": self.dim,
            "metric": "IP",
            "index_type": self.index_type,
            "index_params": self.index_params,
            "search_params": self.search_params,
            "count": self.count,
            "next_row": self.next_row,
            "label_names": self.label_names,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "uri": redact_uri(self.uri),
            "deployment": "Milvus Lite (in-process)" if is_lite_uri(self.uri) else "Milvus server",
            "collection": self.collection,
            "archive": self.archive,
            "index_type": self.index_type,
            "index_params": self.index_params,
            "search_params": self.search_params,
            "consistency": self.consistency
            or f"{SEARCH_CONSISTENCY} (Strong for {STRONG_WINDOW_S:g} s after a load, reload or write)",
            "count": self.count,
            "dim": self.dim,
        }

    def drop(self) -> None:
        """Drop the collection (used when a build fails or an overwritten index is replaced)."""
        for name in (self.collection, A.facts_collection(self.collection)):
            if self.client.has_collection(name):
                self.client.drop_collection(name)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # pragma: no cover - best effort
            pass


def create(
    uri: str,
    *,
    dim: int,
    label_names: Sequence[str],
    kind: str = "exact",
    n_hint: int = 0,
    collection: str | None = None,
    name_hint: str = "index",
    search_params: dict[str, Any] | None = None,
    timeout: float = CONNECT_TIMEOUT_S,
    archive: bool = False,
) -> MilvusBackend:
    """Create a new, empty, loaded collection (fails if ``collection`` exists) and its backend.

    Args:
        uri: ``path.db`` (Milvus Lite) or ``http://host:19530``.
        dim: vector dimension.
        label_names: the index's label names (labels are stored as indices into this list).
        kind: ``exact`` (FLAT), ``hnsw``, ``ivf`` (IVF_FLAT), ``ivf-sq8`` or a Milvus index type.
        n_hint: expected number of vectors (sizes IVF lists).
        collection: name; default a unique ``csmae_<hint>_<hex>``.
        search_params: per-search parameters (``ef`` for HNSW, ``nprobe`` for IVF).
        archive: the collection is the archive (:mod:`milvus_archive`: item keys, every items
            column, a facts collection); False: row ids as keys, the items table kept by the index.
    """
    pymilvus = _pymilvus()
    index_type = _index_type(kind)
    name = collection or _collection_name(name_hint)
    if not COLLECTION_NAME.fullmatch(name) or (archive and len(A.facts_collection(name)) > 255):
        raise ValueError(
            f"Milvus collection name {name!r}: Milvus allows letters, digits and underscores, a letter "
            "or underscore first, at most 255 characters"
        )
    client = connect(uri, timeout=timeout)
    uri = normalise_uri(uri)
    for taken in (name, A.facts_collection(name)) if archive else (name,):
        if client.has_collection(taken):
            raise FileExistsError(
                f"Milvus collection {taken!r} already exists at {redact(uri)}; choose another name"
            )
    ip = client.prepare_index_params()
    bparams = _build_params(index_type, n_hint, dim)
    ip.add_index("vec", index_type=index_type, metric_type="IP", params=bparams)
    # Strong by default: counts, item reads and writers' checks see every write acknowledged
    # before them; searches choose their own level (read_consistency)
    client.create_collection(
        name,
        schema=_schema(pymilvus, dim, len(label_names), archive),
        index_params=ip,
        consistency_level="Strong",
    )
    client.load_collection(name)
    if archive:
        A.create_facts(client, pymilvus, name)
    if search_params is None:
        search_params = {"ef": 128} if index_type.startswith("HNSW") else {}
        if index_type.startswith("IVF"):
            search_params = {"nprobe": min(bparams["nlist"], 32)}
    log.info("created Milvus collection %s at %s (%s, IP, D=%d)", name, redact_uri(uri), index_type, dim)
    return MilvusBackend(
        client=client,
        uri=uri,
        collection=name,
        dim=dim,
        label_names=label_names,
        index_type=index_type,
        index_params=bparams,
        search_params=search_params,
        count=0,
        next_row=0,
        archive=archive,
    )


def load(
    folder: Path | None,
    entry: dict[str, Any],
    *,
    params: dict[str, Any] | None = None,
    timeout: float = CONNECT_TIMEOUT_S,
) -> MilvusBackend:
    """Open the collection an index folder's manifest entry names; roll back an interrupted add.

    ``params`` override the recorded search parameters."""
    uri = str(entry["uri"])
    client = connect(uri, timeout=timeout)
    name = str(entry["collection"])
    where = f" (index {folder})" if folder is not None else ""
    if not client.has_collection(name):
        raise ValueError(
            f"Milvus collection {name!r} is missing at {redact_uri(uri)}{where}: was it dropped?")
    client.load_collection(name)
    fields = {f["name"] for f in client.describe_collection(name).get("fields", [])}
    if entry.get("archive"):
        return _load_archive(client, uri, name, entry, params, where)
    be = _from_entry(
        client, uri, name, entry, params, count=int(entry.get("count", 0)),
        next_row=int(entry.get("next_row", 0)), nullable="has_t" not in fields,
    )  # fmt: skip
    rolled_back = 0
    while stale := client.query(name, filter=f"row >= {be.next_row}", output_fields=["row"], limit=TOPK_MAX):
        log.warning(
            "Milvus collection %s holds %d rows from an interrupted add%s: removing them",
            name,
            len(stale),
            where,
        )
        be._delete(np.array([int(r["row"]) for r in stale], dtype=np.int64))  # not counted in the entry
        rolled_back += len(stale)
    count = be._count_settled(be.count) if rolled_back else be._count()
    if count > be.count:
        raise ValueError(
            f"Milvus collection {name!r} at {redact_uri(uri)} holds {count} vectors, the index manifest says "
            f"{be.count}{where}: the collection was changed outside csmae (rebuild the index)"
        )
    if count < be.count:  # an interrupted remove (rows deleted, manifest not yet written)
        log.warning(
            "Milvus collection %s at %s holds %d vectors, the index manifest says %d%s: %d rows were "
            "deleted by an interrupted remove (or outside csmae) and will not be found",
            name,
            redact_uri(uri),
            count,
            be.count,
            where,
            be.count - count,
        )
    return be


def _from_entry(
    client: Any, uri: str, name: str, entry: dict[str, Any], params: dict[str, Any] | None, **kw: Any
) -> MilvusBackend:
    """The backend of a manifest entry's collection (``params`` override its search parameters)."""
    return MilvusBackend(
        client=client,
        uri=normalise_uri(uri),
        collection=name,
        dim=int(entry["dim"]),
        label_names=entry.get("label_names") or [],
        index_type=str(entry.get("index_type", "FLAT")),
        index_params=entry.get("index_params") or {},
        search_params={**(entry.get("search_params") or {}), **(params or {})},
        **kw,
    )


def _load_archive(
    client: Any, uri: str, name: str, entry: dict[str, Any], params: dict[str, Any] | None, where: str
) -> MilvusBackend:
    """An archive collection's backend (its items are read by ``items()``; facts from the collection)."""
    if not client.has_collection(A.facts_collection(name)):
        raise ValueError(
            f"Milvus collection {name!r} at {redact(uri)}{where} has no facts collection "
            f"{A.facts_collection(name)!r}: it is not a csmae archive (or it was damaged)"
        )
    client.load_collection(A.facts_collection(name))
    be = _from_entry(client, uri, name, entry, params, count=0, next_row=0, archive=True)
    facts = be.facts()
    if not facts:
        raise ValueError(f"Milvus collection {name!r} at {redact(uri)}{where} records no csmae facts")
    be.dim = int(facts.get("dim", be.dim))
    be.label_names = list(facts.get("label_names") or be.label_names)
    be.label_columns = len(be.label_names) <= MAX_LABEL_COLUMNS
    be.column_types = dict(facts.get("columns") or {})
    be.count = be._count()
    return be


# ------------------------------------------------------------------ registration
def _create(
    kind: str,
    *,
    dim: int,
    n_hint: int,
    label_names: list[str],
    uri: str,
    collection: str | None = None,
    train: np.ndarray | None = None,
    name_hint: str = "index",
) -> MilvusBackend:
    return create(
        uri,
        dim=dim,
        label_names=label_names,
        kind=kind,
        n_hint=n_hint,
        collection=collection,
        name_hint=name_hint,
        archive=True,  # an index built through the registry: the collection is the archive
    )


def _load(
    folder: Path, entry: dict[str, Any], *, params: dict[str, Any], legacy: bool = False
) -> MilvusBackend:
    return load(folder, entry, params=params)


BACKEND = BackendSpec(
    name="milvus",
    create=_create,
    load=_load,
    options=(
        BackendOption(
            "uri",
            help="path ending .db (Milvus Lite) or http://host:19530",
            required=(
                "a path ending .db (Milvus Lite, in this process) or http://host:19530 (a Milvus server)"
            ),
            locates=True,
        ),
        BackendOption("collection", help="collection name (default: new, unique)"),
    ),
    home="keeps its vectors in a Milvus collection at --uri",
)
