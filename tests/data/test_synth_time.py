"""``csmae synth`` with time: places at several dates, known change events, clouds, nothing else changed."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest

from csmae.data.synth_time import Series

SERIES = Series(dates=("2018-04-08", "2018-05-28", "2018-08-06", "2018-09-25"), change_fraction=0.5,
                cloud_prob=0.3)


@pytest.fixture(scope="module")
def series_store(tmp_path_factory):
    from csmae.data.synth import write_synthetic

    out = tmp_path_factory.mktemp("series") / "store"
    write_synthetic(out, n=20, seed=3, format="store", layout="native", series=SERIES)
    return out


def test_every_place_is_seen_at_every_date_with_one_key_and_split(series_store):
    from csmae.data.store import StoreDataset
    from csmae.geo.place import place_of

    ds = StoreDataset(series_store)
    assert len(ds) == 20 * 4 and len(set(ds.ids)) == len(ds)
    by_place: dict[str, list[dict]] = {}
    for i in range(len(ds)):
        m = ds.metadata(i)
        by_place.setdefault(place_of(m["geometry"]), []).append({**m, "split": ds.get(ds.ids[i])["split"]})
    assert len(by_place) == 20
    for rows in by_place.values():
        days = sorted(r["datetime"]["s2"][:10] for r in rows)
        assert days == list(SERIES.dates)
        assert len({r["split"] for r in rows}) == 1
        for r in rows:  # S1 within two days of S2
            d1, d2 = (date.fromisoformat(r["datetime"][s][:10]) for s in ("s1", "s2"))
            assert abs((d1 - d2).days) <= 2


def test_known_changes_change_the_labels_only_after_their_date(series_store):
    from csmae.data.store import StoreDataset
    from csmae.geo.place import place_of
    from csmae.labels import LABELS_19

    truth = json.loads((series_store / "manifest.json").read_text())["source"]["synthetic_series"]
    assert truth["series"]["dates"] == list(SERIES.dates)
    events = {p["place"]: p for p in truth["places"]}
    assert 3 <= sum(p["changed"] for p in events.values()) <= 17
    ds = StoreDataset(series_store)
    labels: dict[str, list[tuple[str, set[str]]]] = {}
    for i, pid in enumerate(ds.ids):
        m = ds.metadata(i)
        lab = {LABELS_19[j] for j in np.flatnonzero(ds.get(pid)["labels"])}
        labels.setdefault(place_of(m["geometry"]), []).append((m["datetime"]["s2"][:10], lab))
    for key, seq in labels.items():
        ev = events[key]
        seq.sort()
        if not ev["changed"]:
            assert all(lab == seq[0][1] for _, lab in seq), key
            continue
        assert SERIES.change_start <= ev["event"] <= SERIES.change_end
        before = [lab for d, lab in seq if d < ev["event"]]
        after = [lab for d, lab in seq if d >= ev["event"]]
        assert before and after
        assert all(ev["from"] in lab for lab in before) and all(ev["to"] in lab for lab in after)
        assert all(ev["from"] not in lab for lab in after)


def test_clouds_hide_s2_only_on_the_recorded_dates(series_store):
    from csmae.data.store import StoreDataset

    truth = json.loads((series_store / "manifest.json").read_text())["source"]["synthetic_series"]
    cloudy = truth["cloud_s2"]
    ds = StoreDataset(series_store)
    assert 0 < len(cloudy) < len(ds)
    blue = ds.sensors["s2"].bands.index("B02")
    batch = ds.get_batch(np.arange(len(ds)))
    clear_b02 = [batch["s2"][i, blue].mean() for i, pid in enumerate(ds.ids) if pid not in cloudy]
    for i, pid in enumerate(ds.ids):
        if pid in cloudy and cloudy[pid] >= 0.6:  # most of the patch under a bright cloud
            assert batch["s2"][i, blue].mean() > 2 * max(clear_b02)


def test_series_is_deterministic_and_off_by_default(tmp_path):
    from csmae.data.synth import write_synthetic

    a = write_synthetic(tmp_path / "a", n=3, seed=1, format="store", series=SERIES)[0]
    b = write_synthetic(tmp_path / "b", n=3, seed=1, format="store", series=SERIES)[0]
    for f in ("pairs.parquet",):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    plain = write_synthetic(tmp_path / "plain", n=3, seed=1, format="store")[0]
    manifest = json.loads((plain / "manifest.json").read_text())
    assert "synthetic_series" not in manifest["source"]
    with pytest.raises(ValueError, match="at least 2 distinct dates"):
        Series(dates=("2018-05-01", "2018-04-01"))


def test_synth_cli_series(tmp_path, capsys):
    from csmae.cli import main
    from csmae.data.store import StoreDataset

    out = tmp_path / "series"
    assert main(["synth", "--out", str(out), "--n", "4", "--format", "store", "--series",
                 "--dates", "2018-04-01,2018-09-01", "--change-fraction", "1"]) == 0
    assert "4 synthetic places x 2 dates" in capsys.readouterr().out
    truth = json.loads((out / "manifest.json").read_text())["source"]["synthetic_series"]
    assert len(StoreDataset(out)) == 8 and all(p["changed"] for p in truth["places"])
    assert main(["synth", "--out", str(tmp_path / "x"), "--n", "4", "--cloud-prob", "0.5"]) == 1
    assert "--cloud-prob needs --series" in capsys.readouterr().err and not (tmp_path / "x").exists()
