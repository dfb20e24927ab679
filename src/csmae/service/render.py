"""PNG previews of raw sensor arrays (for uploaded queries; archive previews come from the
retriever), and the service's small cache of preview PNGs."""

from __future__ import annotations

import base64
import io
import threading
from collections import OrderedDict

import numpy as np

from csmae.sensors import Sensor, display_rgb


def png_bytes(raw: np.ndarray, sensor: Sensor) -> bytes:
    """PNG of a raw ``(C, H, W)`` image: S2 true colour, S1 false colour (:func:`display_rgb`)."""
    from PIL import Image

    rgb = (display_rgb(raw, sensor) * 255.0 + 0.5).astype(np.uint8)  # (H, W, 3)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def png_data_url(raw: np.ndarray, sensor: Sensor) -> str:
    """The preview as a ``data:image/png;base64,...`` URL."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(raw, sensor)).decode("ascii")


class PngCache:
    """A small thread-safe LRU of preview PNGs."""

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> bytes | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key: tuple[str, str], value: bytes) -> None:
        with self._lock:
            self._data[key] = value
            while len(self._data) > self.size:
                self._data.popitem(last=False)
