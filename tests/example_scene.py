"""scripts/make_example_scene.py as a module (the README's example scenes, built by the tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_example_scene.py"


def example_scene_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_example_scene", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
