"""The tiler's per-sensor seam: the patch-grid sensor comes from the Sensor spec, a third sensor
needs only a spec and a reader (the plan, not the store: the store's geo columns know S1/S2)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.geo.tile_fixtures import load_real_mosaic, write_aligned


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("readers")
    s2, s1 = write_aligned(root, load_real_mosaic())
    return [str(p) for p in s2], [str(p) for p in s1]


def test_the_highest_priority_sensor_defines_the_jobs(inputs):
    from csmae.data.scenes.plan import plan_tiling
    from csmae.sensors import get_sensor

    s2, s1 = inputs
    assert get_sensor("s2").scene_grid_priority > get_sensor("s1").scene_grid_priority
    plan = plan_tiling(paths={"s2": s2, "s1": s1})
    (job,) = plan.jobs
    assert list(job.scenes) == ["s2", "s1"] and len(job.scenes["s2"]) == 1
    assert list(plan.sensors) == ["s1", "s2"]  # the store's sensor order
    only_s1 = plan_tiling(paths={"s1": s1}).jobs[0]
    assert list(only_s1.scenes) == ["s1"] and only_s1.grid.to_dict() == job.grid.to_dict()


def test_a_third_sensor_is_a_spec_and_a_reader(inputs, monkeypatch):
    import csmae.sensors as sensors
    from csmae.data.scenes import readers
    from csmae.data.scenes.plan import plan_tiling
    from csmae.data.scenes.s1_reader import S1Reader

    third = dataclasses.replace(sensors.S1, name="s1b", scene_grid_priority=0, scene_resampling="nearest")
    monkeypatch.setitem(sensors.SENSORS, "s1b", third)
    monkeypatch.setitem(readers.SCENE_READERS, "s1b", S1Reader())
    s2, s1 = inputs
    plan = plan_tiling(paths={"s2": s2, "s1": s1, "s1b": s1})
    (job,) = plan.jobs
    assert list(job.scenes) == ["s2", "s1", "s1b"]
    assert list(plan.sensors) == ["s1", "s2", "s1b"]
    assert [sorted(g) for g in plan.gaps] == [["days", "s1", "s2"], ["days", "s1b", "s2"]]
    assert {g.sensor for g in plan.groups} == {"s1", "s2", "s1b"}


def test_a_sensor_without_a_reader_is_refused(inputs):
    from csmae.data.scenes.plan import plan_tiling

    with pytest.raises(ValueError, match="no scene reader for sensor 's9'"):
        plan_tiling(paths={"s9": inputs[1]})
