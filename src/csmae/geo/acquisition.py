"""Which acquisition a scene (or an item) comes from: the third part of "same place, sensor, acquisition".

Two patches are the same ground seen at the same time by the same sensor when they share the place
key (:func:`csmae.geo.place.place_of`), the sensor and the acquisition key of this module. Neighbouring
products of one pass (two MGRS tiles of one Sentinel-2 datatake, two slices of one Sentinel-1
datatake) overlap, and their patches in the overlap are then duplicates. Definition, from the scene
name and its acquisition time (a pure function, computable from what every item carries)::

    1. an S1 product name  S1A_IW_GRDH_1SDV_<start>_<stop>_<abs orbit>_<datatake id>_<crc>
       -> "S1A datatake 049F13": the mission and the datatake id (the slices of one datatake share it,
          though their start times differ)
    2. an S2 product name  S2B_MSIL2A_<datatake sensing start>_[Nxxyy_]Rooo_Txxxxx...
       -> "2023-06-13T10:10:31Z": the datatake sensing start in the name (every tile of one datatake
          carries it, whatever its processing baseline)
    3. any other name (band files T33UUP_20230613T101031_B02_10m.tif, S1 files named by their start
       time, STAC items): the scene's acquisition time, to the second, UTC -> "2023-06-13T10:10:31Z"
       (S2 band files carry the datatake sensing start; an STAC item its ``datetime``)
    4. no time at all -> None: such a scene is never taken for the same acquisition as another

Keys are compared within one sensor only. A datatake of one mission never starts twice in the same
second, and two missions never image the same ground in the same second, so rule 3 does not merge
different passes; it may fail to merge two names of one pass written in different forms (a full S1
product name vs a file named only by its start time), which keeps both: never a wrong merge.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

_S1_PRODUCT = re.compile(r"^(S1[A-D])_[A-Z0-9]{2}_[A-Z0-9_]{4}_[A-Z0-9]{4}_\d{8}T\d{6}_\d{8}T\d{6}_\d{6}_"
                         r"([0-9A-F]{6})(?![0-9A-Za-z])")
_S2_PRODUCT = re.compile(r"^S2[A-D]_MSI(?:L1C|L2A)_(\d{8}T\d{6})_(?:N\d{4}_)?R\d{3}_T\d{2}[A-Z]{3}")


def _utc_second(when: Any) -> datetime | None:
    """A datetime (or ISO string / pandas Timestamp) as UTC, floored to the second; None for none/NaT."""
    if when is None:
        return None
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            return None
    to_py = getattr(when, "to_pydatetime", None)
    if to_py is not None:  # pandas Timestamp (NaT compares unequal to itself)
        if when != when:
            return None
        when = to_py()
    if not isinstance(when, datetime):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).replace(microsecond=0)


def acquisition_of(scene: str | None, when: Any = None) -> str | None:
    """The acquisition key of a scene name and its acquisition time (see the module docstring).

    Args:
        scene: the scene (product) name, as in the store's ``scene_s1``/``scene_s2`` and the items'
            ``scene`` column; may be None.
        when: the scene's acquisition time (datetime, ISO 8601 string or pandas Timestamp), or None.
    """
    name = str(scene or "")
    m = _S1_PRODUCT.match(name)
    if m:
        return f"{m.group(1)} datatake {m.group(2)}"
    m = _S2_PRODUCT.match(name)
    if m:
        when = datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    t = _utc_second(when)
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")
