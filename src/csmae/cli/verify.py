"""Check an artefact's files against the sizes and SHA-256 digests recorded when it was written.

The kind is detected: a prepared store, an embeddings folder, an index, a model folder, an
evaluation report, a training checkpoint (``X.ckpt``, checked against ``X.ckpt.checksum.json``) or
a run folder (its checkpoints and model). One line per file: ``OK`` or ``FAIL`` and why. A store is
also checked for structure (record files' shapes and sizes, table rows).

Exit status: 0 every file verified; 1 something is damaged or missing; 3 the artefact records no
checksums (written by an older csmae): nothing to verify against.

Examples::

    csmae verify stores/ben
    csmae verify idx/reben
    csmae verify runs/sesd/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OK, DAMAGED, UNVERIFIED = 0, 1, 3


@dataclass
class Report:
    """What ``csmae verify`` found for one artefact (or a part of a run folder)."""

    path: Path
    kind: str
    checks: list[Any] | None = None  # FileCheck per file; None = no checksums recorded
    error: str | None = None  # a structural problem found before/besides the digests
    parts: list[Report] = field(default_factory=list)

    @property
    def status(self) -> int:
        """DAMAGED if anything failed, else UNVERIFIED if anything had no checksums, else OK."""
        return _worst([self._own(), *(p.status for p in self.parts)])

    def _own(self) -> int:
        if self.error or (self.checks and not all(c.ok for c in self.checks)):
            return DAMAGED
        return UNVERIFIED if self.checks is None and not self.parts else OK


def _worst(codes: list[int]) -> int:
    return DAMAGED if DAMAGED in codes else UNVERIFIED if UNVERIFIED in codes else OK


def _manifest(path: Path) -> dict[str, Any] | None:
    m = path / "manifest.json"
    if not m.is_file():
        return None
    try:
        d = json.loads(m.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{m} is damaged (not valid JSON: {e})") from None
    return d if isinstance(d, dict) else None


def verify_artefact(path: str | Path) -> Report:
    """Detect what ``path`` is and check it (see the module docstring)."""
    from csmae.data.base import DataError
    from csmae.integrity import check_file, recorded, verify_files

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file():
        if path.suffix != ".ckpt":
            raise ValueError(f"{path} is a file but not a training checkpoint (.ckpt); pass an "
                             "artefact folder (store, embeddings, index, model, run)")
        from csmae.training.checkpoint import _read_sidecar

        side = _read_sidecar(path)
        if side is None:
            return Report(path, "checkpoint")
        check = check_file(path, side["checksums"][path.name])
        prev = side.get("previous")
        if not check.ok and isinstance(prev, dict) and check_file(path, prev).ok:
            check = type(check)(check.name, True, "", check.bytes)
        return Report(path, "checkpoint", [check])
    man = _manifest(path)
    kind = (man or {}).get("kind")
    if man is None and (path / "config.json").is_file():
        kind = "csmae-model"
    if kind == "csmae-run":
        rep = Report(path, "run folder")
        for ck in sorted((path / "checkpoints").glob("*.ckpt")):
            rep.parts.append(verify_artefact(ck))
        if (path / "model").is_dir():
            rep.parts.append(verify_artefact(path / "model"))
        return rep
    if kind == "csmae-store":
        from csmae.data.store_check import verify_store

        try:
            return Report(path, "store", verify_store(path, man or {}))
        except DataError as e:
            return Report(path, "store", [], error=str(e))
    names = {"csmae-embeddings": "embeddings", "csmae-index": "index", "csmae-model": "model folder",
             "csmae-evaluation": "evaluation report"}
    if kind not in names:
        raise ValueError(f"{path} is not a csmae artefact folder (manifest kind {kind!r}); expected a "
                         "store, embeddings, index, model or run folder, or a .ckpt file")
    sums = recorded(man or {})
    if sums is None:
        return Report(path, names[kind])
    rep = Report(path, names[kind], verify_files(path, sums))
    if kind == "csmae-embeddings":  # every listed shard must be covered
        missing = [sh["file"] for sh in (man or {}).get("shards") or [] if sh["file"] not in sums]
        if missing:
            rep.error = f"shard(s) {missing} have no checksum in manifest.json"
    return rep


def _print(rep: Report, indent: str = "") -> None:
    print(f"{indent}{rep.path} ({rep.kind})")
    if rep.error:
        print(f"{indent}  FAIL {rep.error}")
    if rep.checks is None and not rep.parts:
        print(f"{indent}  no checksums recorded (written by an older csmae): nothing to verify "
              "against; rewrite the artefact to get them")
    for c in rep.checks or []:
        print(f"{indent}  {'OK  ' if c.ok else 'FAIL'} {c.name}" + ("" if c.ok else f": {c.reason}"))
    for p in rep.parts:
        _print(p, indent + "  ")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="artefact folder(s) or .ckpt file(s)")


def run(args: argparse.Namespace) -> int:
    import csmae.data.store_check  # noqa: F401 - imported before the clock starts

    codes = []
    for p in args.paths:
        t0 = time.perf_counter()
        rep = verify_artefact(p)
        _print(rep)
        codes.append(rep.status)
        word = {OK: "verified", DAMAGED: "DAMAGED", UNVERIFIED: "unverified"}[codes[-1]]
        gb = _bytes(rep) / 1e9
        print(f"{word}: {gb:.3g} GB checked in {time.perf_counter() - t0:.1f} s")
    return _worst(codes)


def _bytes(rep: Report) -> int:
    return sum(c.bytes for c in rep.checks or []) + sum(_bytes(p) for p in rep.parts)
