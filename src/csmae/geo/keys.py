"""The sample geo keys and acquisition-time parsing.

Every reader of a georeferenced source adds to its samples (SEAMS "Sample geo keys")::

    "geometry":  bytes | None      WKB of the patch polygon in EPSG:4326 (x = lon, y = lat)
    "crs":       str | None        native CRS of the patch grid, "EPSG:32633"-style
    "transform": tuple[6] | None   affine (a, b, c, d, e, f) of the 120x120 grid
    "datetime":  {"s1": str | None, "s2": str | None}   ISO 8601 UTC, "2017-06-13T10:10:31Z"
    "scene":     {"s1": str | None, "s2": str | None}   scene / product id per sensor

Sources without georeferencing (LMDBs) give ``geometry``/``crs``/``transform`` None: never invented.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

GEO_KEYS = ("geometry", "crs", "transform", "datetime", "scene")
SENSORS = ("s1", "s2")
#: 8-digit date, T, then 6 digits. Some v1 S2 names carry 5 digits, which are not a reliable time
#: (S2B_MSIL2A_20180204T94161: its JSON says 09:41:56), so those give None, never a guess.
_NAME_TIME = re.compile(r"(?<!\d)(\d{8})T(\d{6})(?!\d)")


def iso_utc(value: Any) -> str | None:
    """An acquisition time as ``"YYYY-MM-DDTHH:MM:SSZ"`` (UTC), or None when absent/unreadable.

    Accepts datetimes (naive = UTC), ISO strings with or without zone (``"2017-06-13 10:10:31"``,
    ``"2017-06-13T16:50:43"``, ``"...Z"``, ``"...+02:00"``) and Sentinel name stamps
    (``"20170613T101031"``; 5-digit v1 stamps are ambiguous and give None).
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        text = str(value).strip()
        if not text:
            return None
        m = _NAME_TIME.fullmatch(text)
        if m:
            return stamp_to_iso(m.group(1), m.group(2))
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp_to_iso(day: str, clock: str) -> str | None:
    """``("20170924", "093020")`` -> ``"2017-09-24T09:30:20Z"`` (None if not a valid time)."""
    try:
        dt = datetime.strptime(day + clock, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def time_from_name(name: str | None) -> str | None:
    """The acquisition time stamped in a Sentinel product/patch name, or None."""
    if not name:
        return None
    m = _NAME_TIME.search(name)
    return stamp_to_iso(m.group(1), m.group(2)) if m else None


def per_sensor(values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"s1": ..., "s2": ...}`` with missing sensors None."""
    values = values or {}
    return {s: values.get(s) for s in SENSORS}


def no_geo() -> dict[str, Any]:
    """The geo keys of a sample whose source has no georeferencing."""
    return {"geometry": None, "crs": None, "transform": None, "datetime": per_sensor(),
            "scene": per_sensor()}


def to_datetime(iso: str | None) -> datetime | None:
    """Parse an :func:`iso_utc` string back to an aware datetime."""
    return None if iso is None else datetime.fromisoformat(iso.replace("Z", "+00:00"))
