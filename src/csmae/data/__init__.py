"""Reading BigEarthNet in every form (v1 folders, reBEN folders/LMDB, encoded LMDB, prepared store)."""

from csmae.data.base import DataError, PairedDataset
from csmae.data.open import open_dataset

__all__ = ["DataError", "PairedDataset", "open_dataset"]
