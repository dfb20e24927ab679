"""Config schema: strict keys, types, overrides, ``extends``, placeholders, and every shipped config."""

from __future__ import annotations

from pathlib import Path

import pytest

from csmae.cli import main
from csmae.training.config import (
    ConfigError,
    FitConfig,
    apply_overrides,
    expand_placeholders,
    from_dict,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def test_defaults_are_the_paper_settings():
    cfg = load_config(None)
    assert cfg.model.name == "csmae_sesd_base"
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.betas) == (1e-4, 0.05, [0.9, 0.95])
    assert (cfg.data.batch_size, cfg.schedule.warmup_epochs, cfg.trainer.max_epochs) == (128, 10, 150)
    assert cfg.trainer.seed == 42 and cfg.data.hflip and cfg.data.vflip


def test_unknown_key_names_it_and_lists_valid_ones():
    with pytest.raises(ConfigError) as e:
        from_dict({"optim": {"lr": 1e-4, "learning_rate": 3}})
    msg = str(e.value)
    assert "optim.learning_rate" in msg and "weight_decay" in msg and "betas" in msg
    with pytest.raises(ConfigError, match="unknown config section.*optimizer.*valid sections: .*optim"):
        from_dict({"optimizer": {}})


def test_types_are_checked_and_ints_become_floats():
    with pytest.raises(ConfigError, match=r"trainer.max_epochs: expected int, got 'ten'"):
        from_dict({"trainer": {"max_epochs": "ten"}})
    with pytest.raises(ConfigError, match="data.hflip"):
        from_dict({"data": {"hflip": "yes"}})
    cfg = from_dict({"optim": {"lr": 1}, "trainer": {"precision": 32}})
    assert isinstance(cfg.optim.lr, float) and cfg.trainer.precision == "32"
    with pytest.raises(ConfigError, match="trainer.precision"):
        from_dict({"trainer": {"precision": "fp8"}})
    with pytest.raises(ConfigError, match="data.batch_size must be > 0"):
        from_dict({"data": {"batch_size": 0}})


def test_overrides_parse_yaml_values():
    raw = apply_overrides(
        {},
        [
            "trainer.max_epochs=3",
            "optim.betas=[0.8, 0.9]",
            "data.ids=null",
            "model.overrides.mask_ratio=0.75",
            "data.sources=[a, b]",
        ],
    )
    cfg = from_dict(raw)
    assert cfg.trainer.max_epochs == 3 and cfg.optim.betas == [0.8, 0.9] and cfg.data.ids is None
    assert cfg.model.overrides == {"mask_ratio": 0.75} and cfg.data.sources == ["a", "b"]
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["trainer.max_epochs"])


def test_extends_deep_merges(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "model: {name: csmae_cecd_base, overrides: {mask_ratio: 0.5}}\ntrainer: {max_epochs: 150, seed: 1}\n"
    )
    (tmp_path / "child.yaml").write_text(
        "extends: base.yaml\nmodel: {overrides: {mask_strategy: disjoint}}\ntrainer: {max_epochs: 5}\n"
    )
    cfg = load_config(tmp_path / "child.yaml", ["trainer.seed=7"])
    assert cfg.model.name == "csmae_cecd_base"
    assert cfg.model.overrides == {"mask_ratio": 0.5, "mask_strategy": "disjoint"}
    assert (cfg.trainer.max_epochs, cfg.trainer.seed) == (5, 7)
    # the printed config loads back to the same thing
    (tmp_path / "round.yaml").write_text(cfg.to_yaml())
    assert load_config(tmp_path / "round.yaml") == cfg


def test_placeholders(monkeypatch):
    monkeypatch.setenv("BEN_TEST_ROOT", "/data/ben")
    assert expand_placeholders(["${BEN_TEST_ROOT}/s2", "x"], "data.sources") == ["/data/ben/s2", "x"]
    monkeypatch.delenv("BEN_TEST_ROOT")
    with pytest.raises(ConfigError, match=r"BEN_TEST_ROOT.*--set data.sources="):
        expand_placeholders(["${BEN_TEST_ROOT}/s2"], "data.sources[0]")


def test_cli_reports_unknown_key(capsys):
    rc = main(["fit", "--set", "trainer.max_epoch=3", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 1 and "trainer.max_epoch" in err and "max_epochs" in err


def test_cli_rejects_unknown_model_override(capsys):
    rc = main(["fit", "--set", "model.overrides.mask_ration=0.3", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 1 and "mask_ration" in err and "mask_ratio" in err


def test_print_config_round_trips(capsys, tmp_path):
    assert main(["fit", "--print-config", "--set", "trainer.max_epochs=7"]) == 0
    out = capsys.readouterr().out
    (tmp_path / "c.yaml").write_text(out)
    assert load_config(tmp_path / "c.yaml").trainer.max_epochs == 7


def test_there_are_configs():
    names = {p.relative_to(REPO / "configs").as_posix() for p in CONFIGS}
    for variant in ("sesd", "secd", "cesd", "cecd"):
        assert f"paper/ben14k_{variant}.yaml" in names and f"paper/ben270k_{variant}.yaml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(REPO / "configs").as_posix())
def test_every_shipped_config_validates(path, capsys):
    assert main(["fit", "--config", str(path), "--dry-run"]) == 0, capsys.readouterr().err
    assert "config OK" in capsys.readouterr().out


def test_paper_config_has_paper_settings():
    cfg = load_config(REPO / "configs" / "paper" / "ben14k_sesd.yaml")
    assert isinstance(cfg, FitConfig)
    assert cfg.model.name == "csmae_sesd_base"
    o = cfg.model.overrides
    assert o.get("mask_ratio", 0.5) == 0.5 and o.get("mask_strategy", "random") == "random"
    assert o.get("mim_tau", 0.5) == 0.5
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.betas, cfg.optim.lr_scaling) == (
        1e-4,
        0.05,
        [0.9, 0.95],
        "none",
    )
    assert (cfg.data.batch_size, cfg.schedule.warmup_epochs, cfg.schedule.kind, cfg.trainer.max_epochs) == (
        128,
        10,
        "cosine",
        150,
    )
    assert cfg.data.hflip and cfg.data.vflip and cfg.trainer.seed == 42
    assert cfg.trainer.precision in ("bf16-mixed", "16-mixed")
