"""README "Your own imagery", raw products: scripts/make_example_scene.py -> a zipped L2A + a zipped raw GRD
(+ a DEM) -> ``csmae tile`` -> ``embed`` -> ``index`` -> ``search``, the README's commands exactly (each is
checked to be in README.md, then run from the same working folder, with a tiny model for the demo's)."""

from __future__ import annotations

import glob
import json
import shlex
from pathlib import Path

import numpy as np

from tests.geo.tile_fixtures import store_arrays

ROOT = Path(__file__).resolve().parents[2]
MODEL = "csmae-demo/runs/csmae/model"
COMMANDS = [
    "python scripts/make_example_scene.py scenes",
    "csmae tile --s2 scenes/raw/S2B_MSIL2A_*.SAFE.zip --s1 scenes/raw/S1A_IW_GRDH_*.SAFE.zip "
    "--out stores/raw --max-days 1",
    "csmae tile --s2 scenes/raw/S2B_MSIL2A_*.SAFE.zip --s1 scenes/raw/S1A_IW_GRDH_*.SAFE.zip "
    "--dem scenes/raw/dem.tif --out stores/raw-dem --max-days 1",
    f"csmae embed {MODEL} stores/raw-dem --out emb/raw",
    "csmae index emb/raw --out idx/raw",
    "csmae search idx/raw --id S2B_MSIL2A_20210809T105031_N0301_R051_T31TDK_r001_c002 "
    "--sensor s1 --target s2",
]


def _script():
    from tests.example_scene import example_scene_script

    return example_scene_script()


def _argv(command: str, model: Path) -> list[str]:
    out = []
    for a in shlex.split(command)[1:]:
        a = str(model) if a == MODEL else a
        out += sorted(glob.glob(a)) if "*" in a else [a]
    return out


def test_readme_raw_example(tmp_path, monkeypatch, capsys) -> None:
    from csmae.cli import main
    from csmae.data.scenes.example import synthetic_scene
    from tests.retrieval.conftest import save_tiny
    from tests.scenes.grd_fixtures import _xml_safe

    readme = " ".join((ROOT / "README.md").read_text().replace("\\\n", " ").split())
    for c in COMMANDS:
        assert c in readme, f"not in README.md: {c}"
    model = save_tiny(tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    ex = _script()
    assert ex.main([*_argv(COMMANDS[0], model)[1:], "--grd-xml", str(_xml_safe())]) == 0
    raw = sorted(p.name for p in (tmp_path / "scenes" / "raw").iterdir())
    assert raw == [f"{ex.GRD}.SAFE.zip", f"{ex.S2_RAW}.SAFE.zip", "dem.tif"]
    capsys.readouterr()
    assert main(_argv(COMMANDS[1], model)) == 0
    out = capsys.readouterr().out
    assert "ellipsoid geocoding (no --dem)" in out and "wrote stores/raw: 12 patches, 0 skipped" in out
    assert main(_argv(COMMANDS[2], model)) == 0
    out = capsys.readouterr().out
    assert "ellipsoid geocoding" not in out and "wrote stores/raw-dem: 12 patches, 0 skipped" in out
    man = json.loads(Path("stores/raw-dem/manifest.json").read_text())
    s1 = man["tiling"]["scenes"][0]["s1"][0]
    assert s1["geocoding"]["method"].startswith("terrain (DEM)")
    assert "EPSG:4979" in s1["geocoding"]["dem"]["crs"]
    assert s1["geocoding"]["dem"]["heights"].startswith("WGS 84 ellipsoidal")
    # the backscatter the GRD was made of comes back: per-patch mean power against the synthetic field's
    _, s1_db = synthetic_scene(3, 4, 0)
    want = 10 * np.log10(np.power(10, s1_db / 10).reshape(2, 3, 120, 4, 120).mean(axis=(2, 4)))  # (2, 3, 4)
    for store in ("stores/raw", "stores/raw-dem"):
        arrays, ids = store_arrays(Path(store))
        got = np.zeros_like(want)
        for k, pid in enumerate(ids):
            r, c = (int(t[1:]) for t in pid.split("_")[-2:])
            got[:, r, c] = 10 * np.log10(np.power(10, arrays["s1"][k] / 10).mean(axis=(1, 2)))
        assert np.abs(got - want).max() < 0.3, (store, np.abs(got - want).max())  # measured 0.02 / 0.09 dB
    s2, _ = synthetic_scene(3, 4, 0)
    arrays, ids = store_arrays(Path("stores/raw"))
    np.testing.assert_array_equal(arrays["s2"][ids.index(ids[0].rsplit("_r", 1)[0] + "_r000_c000"), 0],
                                  s2["B02"][:120, :120])
    for c in COMMANDS[3:5]:
        assert main(_argv(c, model)) == 0
    capsys.readouterr()
    assert main([*_argv(COMMANDS[5], model), "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits and all(h["sensor"] == "s2" and h["id"].startswith("S2B_MSIL2A_20210809T105031")
                        for h in hits)
