"""A small in-memory retriever with the interface the service declares (``service/protocol.py``).

Archive vectors are a fixed random projection of block-averaged, normalised pixels, so an uploaded
copy of an item's pixels embeds to exactly that item's vector: search by upload can be checked
against search by id and against a brute-force cosine ranking.
"""

from __future__ import annotations

import io

import numpy as np

from csmae.labels import LABELS_19
from csmae.retrieval.retriever import Hit
from csmae.sensors import IMAGE_SIZE, SENSORS, Sensor, display_rgb


def _image(rng: np.random.Generator, sensor: Sensor) -> np.ndarray:
    """(C, 120, 120) raw pixels with 12x12 blocks of structure."""
    coarse = rng.normal(size=(sensor.num_channels, 12, 12)).astype(np.float32)
    mean = np.asarray(sensor.mean, np.float32)[:, None, None]
    std = np.asarray(sensor.std, np.float32)[:, None, None]
    x = np.kron(coarse, np.ones((10, 10), np.float32)) * std + mean
    if sensor.name == "s2":
        x = np.clip(np.round(x), 0, 10000)
    return x.astype(np.float32)


class FakeRetriever:
    """Exact cosine search over ``n`` random pairs with both sensors."""

    def __init__(self, n: int = 30, *, dim: int = 16, seed: int = 0, with_data: bool = True):
        rng = np.random.default_rng(seed)
        self.label_names = list(LABELS_19)
        self.sensors = ["s1", "s2"]
        self.specs = {s: SENSORS[s] for s in self.sensors}
        self.model_info = {"name": "fake", "embed_dim": dim}
        self.with_data = with_data
        self.dim = dim
        self.proj = {
            s: rng.normal(size=(spec.num_channels * 144, dim)).astype(np.float32)
            for s, spec in self.specs.items()
        }
        self.ids = [f"S2A_MSIL2A_20170613T101031_{i}_{i + 7}" for i in range(n)]
        splits = ["train", "val", "test"]
        self.meta = {}
        self.pixels: dict[tuple[str, str], np.ndarray] = {}
        for i, pid in enumerate(self.ids):
            labels = sorted({self.label_names[j] for j in rng.choice(19, size=rng.integers(1, 4))},
                            key=self.label_names.index)
            self.meta[pid] = {"split": splits[i % 3], "labels": labels, "box": self.box(i)}
            for s, spec in self.specs.items():
                self.pixels[(pid, s)] = _image(rng, spec)
        self.rows = [(pid, s) for pid in self.ids for s in self.sensors]
        self.vectors = np.stack([self.embed(self.pixels[r], r[1]) for r in self.rows])  # (M, D)
        self.calls = 0

    @staticmethod
    def box(i: int) -> tuple[float, float, float, float]:
        """Footprint of pair i: a ~1.2 km square on a 6-column grid near 50 N, 10 E (lon/lat)."""
        x, y = 10 + 0.02 * (i % 6), 50 + 0.02 * (i // 6)
        return (x, y, x + 0.0166, y + 0.0108)

    def geo_of(self, pid: str, sensor: str) -> dict:
        """geometry (GeoJSON polygon, counter-clockwise) and datetime of an archive item."""
        x0, y0, x1, y1 = self.meta[pid]["box"]
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        day = 1 + self.ids.index(pid) % 28
        return {"geometry": {"type": "Polygon", "coordinates": [ring]},
                "datetime": f"2017-06-{day:02d}T{'05' if sensor == 's1' else '10'}:00:00Z"}

    def embed(self, raw: np.ndarray, sensor: str) -> np.ndarray:
        spec = self.specs[sensor]
        x = spec.normalize(raw)  # (C, 120, 120)
        feats = x.reshape(spec.num_channels, 12, 10, 12, 10).mean(axis=(2, 4)).ravel()
        v = feats @ self.proj[sensor]
        return (v / np.linalg.norm(v)).astype(np.float32)

    # --- the Retriever interface ------------------------------------------------------------
    @staticmethod
    def _no_filter(where) -> None:
        """This archive has no filter columns: a filter is refused (a 400 from the service)."""
        if where is not None:
            raise ValueError("this archive cannot be filtered (the retriever takes no filter)")

    def items(self, split=None, sensor=None, label=None, offset=0, limit=50, where=None):
        self._no_filter(where)
        rows = [
            {"id": pid, "sensor": s, "split": self.meta[pid]["split"],
             "labels": list(self.meta[pid]["labels"])}
            for pid, s in self.rows
            if (split is None or self.meta[pid]["split"] == split)
            and (sensor is None or s == sensor)
            and (label is None or label in self.meta[pid]["labels"])
        ]
        return len(rows), rows[offset: offset + limit]

    def _rank(self, q: np.ndarray, target: str, k: int, exclude: str | None, qlabels: list[str] | None):
        self.calls += 1
        scores = self.vectors @ q
        order = np.argsort(-scores, kind="stable")
        hits: list[Hit] = []
        for i in order:
            pid, s = self.rows[i]
            if (target != "any" and s != target) or pid == exclude:
                continue
            labels = self.meta[pid]["labels"]
            overlap = [x for x in labels if qlabels and x in qlabels]
            hits.append(Hit(rank=len(hits) + 1, id=pid, sensor=s, score=float(scores[i]), labels=list(labels),
                            overlap=overlap, **self.geo_of(pid, s)))
            if len(hits) == k:
                break
        return hits

    def search_by_id(self, patch_id, *, sensor, target="any", k=10, exclude_self=True, where=None):
        self._no_filter(where)
        if (patch_id, sensor) not in self.pixels:
            raise KeyError(f"unknown id {patch_id!r} for sensor {sensor}")
        q = self.vectors[self.rows.index((patch_id, sensor))]
        return self._rank(q, target, k, patch_id if exclude_self else None, self.meta[patch_id]["labels"])

    @property
    def geo_info(self):
        boxes = np.array([self.meta[pid]["box"] for pid in self.ids])
        return {"footprints": len(self.rows), "synthetic": True,
                "extent": [boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()]}

    def item(self, patch_id, sensor):
        if (patch_id, sensor) not in self.pixels:
            raise KeyError(f"unknown id {patch_id!r} for sensor {sensor}")
        m = self.meta[patch_id]
        return {"id": patch_id, "sensor": sensor, "split": m["split"], "labels": list(m["labels"]),
                **self.geo_of(patch_id, sensor)}

    def locate(self, lon, lat, *, sensor):
        inside = [pid for pid in self.ids
                  if self.meta[pid]["box"][0] <= lon <= self.meta[pid]["box"][2]
                  and self.meta[pid]["box"][1] <= lat <= self.meta[pid]["box"][3]]
        if not inside:
            raise ValueError(f"no {sensor} patch of the archive contains lon {lon}, lat {lat}")
        return inside[0]

    def search_by_arrays(self, raw, *, sensor, target="any", k=10, where=None):
        self._no_filter(where)
        spec = self.specs[sensor]
        if raw.shape != (spec.num_channels, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"expected {(spec.num_channels, IMAGE_SIZE, IMAGE_SIZE)}, got {raw.shape}")
        return self._rank(self.embed(raw, sensor), target, k, None, None)

    def sample(self, patch_id):
        if patch_id not in self.meta:
            raise KeyError(patch_id)
        return {"id": patch_id, **{s: self.pixels[(patch_id, s)] for s in self.sensors}}

    def preview_png(self, patch_id, sensor):
        from PIL import Image

        if not self.with_data:
            raise RuntimeError("no dataset given: previews need data")
        raw = self.sample(patch_id)[sensor]
        rgb = (display_rgb(raw, self.specs[sensor]) * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        return buf.getvalue()
