"""The house's floors (docs/architecture.md): checked from the source with scripts/import_graph.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_graph.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_layering_rules_hold():
    """No geo -> data import, nothing imports the package face, the index layer names no engine."""
    out = _run("--check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PROBLEM" not in out.stdout


def test_the_check_fails_on_a_broken_rule(tmp_path):
    """The checker sees a violation (a copy of the tree with geo importing data), so it can fail."""
    import shutil

    root = tmp_path / "repo"
    shutil.copytree(SCRIPT.parents[1] / "src", root / "src")
    (root / "scripts").mkdir()
    shutil.copy(SCRIPT, root / "scripts" / SCRIPT.name)
    bad = root / "src" / "csmae" / "geo" / "footprint.py"
    late = "\n\ndef _late():\n    from csmae.data.store import open_store  # noqa\n"
    bad.write_text(bad.read_text() + late)
    copy = root / "scripts" / SCRIPT.name
    out = subprocess.run([sys.executable, str(copy), "--check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "geo imports data" in out.stdout and "csmae.geo.footprint" in out.stdout


def test_module_edges_are_listed():
    out = _run("--modules")
    assert out.returncode == 0
    assert "csmae.data.scenes.run -> csmae.data.store_write" in out.stdout
