"""BigEarthNet label nomenclatures: the 19 classes (multi-hot order) and the 43 -> 19 mapping."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from csmae.errors import UnknownLabelError as UnknownLabelError

#: The 19-class nomenclature in the conventional (alphabetical) multi-hot order.
LABELS_19: tuple[str, ...] = (
    "Agro-forestry areas",
    "Arable land",
    "Beaches, dunes, sands",
    "Broad-leaved forest",
    "Coastal wetlands",
    "Complex cultivation patterns",
    "Coniferous forest",
    "Industrial or commercial units",
    "Inland waters",
    "Inland wetlands",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Marine waters",
    "Mixed forest",
    "Moors, heathland and sclerophyllous vegetation",
    "Natural grassland and sparsely vegetated areas",
    "Pastures",
    "Permanent crops",
    "Transitional woodland, shrub",
    "Urban fabric",
)

#: Published BigEarthNet 43-class (CLC level 3) -> 19-class mapping; ``None`` = dropped.
LABEL_43_TO_19: dict[str, str | None] = {
    "Continuous urban fabric": "Urban fabric",
    "Discontinuous urban fabric": "Urban fabric",
    "Industrial or commercial units": "Industrial or commercial units",
    "Road and rail networks and associated land": None,
    "Port areas": None,
    "Airports": None,
    "Mineral extraction sites": None,
    "Dump sites": None,
    "Construction sites": None,
    "Green urban areas": None,
    "Sport and leisure facilities": None,
    "Non-irrigated arable land": "Arable land",
    "Permanently irrigated land": "Arable land",
    "Rice fields": "Arable land",
    "Vineyards": "Permanent crops",
    "Fruit trees and berry plantations": "Permanent crops",
    "Olive groves": "Permanent crops",
    "Pastures": "Pastures",
    "Annual crops associated with permanent crops": "Permanent crops",
    "Complex cultivation patterns": "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation": (
        "Land principally occupied by agriculture, with significant areas of natural vegetation"
    ),
    "Agro-forestry areas": "Agro-forestry areas",
    "Broad-leaved forest": "Broad-leaved forest",
    "Coniferous forest": "Coniferous forest",
    "Mixed forest": "Mixed forest",
    "Natural grassland": "Natural grassland and sparsely vegetated areas",
    "Moors and heathland": "Moors, heathland and sclerophyllous vegetation",
    "Sclerophyllous vegetation": "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland/shrub": "Transitional woodland, shrub",
    "Beaches, dunes, sands": "Beaches, dunes, sands",
    "Bare rock": None,
    "Sparsely vegetated areas": "Natural grassland and sparsely vegetated areas",
    "Burnt areas": None,
    "Inland marshes": "Inland wetlands",
    "Peatbogs": "Inland wetlands",
    "Salt marshes": "Coastal wetlands",
    "Salines": "Coastal wetlands",
    "Intertidal flats": None,
    "Water courses": "Inland waters",
    "Water bodies": "Inland waters",
    "Coastal lagoons": "Marine waters",
    "Estuaries": "Marine waters",
    "Sea and ocean": "Marine waters",
}

LABELS_43: tuple[str, ...] = tuple(LABEL_43_TO_19)
_INDEX_19 = {name: i for i, name in enumerate(LABELS_19)}


def map_43_to_19(names: Iterable[str], *, where: str = "") -> list[str]:
    """Map 43-class CLC names to sorted unique 19-class names (dropped classes vanish)."""
    out: set[str] = set()
    for name in names:
        if name not in LABEL_43_TO_19:
            loc = f" in {where}" if where else ""
            raise UnknownLabelError(f"unknown 43-class label {name!r}{loc}")
        target = LABEL_43_TO_19[name]
        if target is not None:
            out.add(target)
    return sorted(out, key=_INDEX_19.__getitem__)


def multi_hot(names: Iterable[str], *, where: str = "") -> np.ndarray:
    """19-d boolean multi-hot vector from 19-class names."""
    vec = np.zeros(len(LABELS_19), dtype=bool)
    for name in names:
        if name not in _INDEX_19:
            loc = f" in {where}" if where else ""
            raise UnknownLabelError(
                f"unknown 19-class label {name!r}{loc}; expected one of the BigEarthNet-19 names"
            )
        vec[_INDEX_19[name]] = True
    return vec


def names_from_multi_hot(vec: np.ndarray) -> list[str]:
    return [LABELS_19[i] for i in np.flatnonzero(np.asarray(vec))]
