"""``trainer.precision: auto`` (the default): bf16-mixed only where the accelerator runs bf16 natively."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from csmae.models import precision as prec
from csmae.training.config import ConfigError, TrainerSection, load_config
from csmae.training.run import fit
from csmae.training.trainer import resolve_precision


def _cfg(tiny, *extra):
    return load_config(None, tiny(["unused"], *extra))


def test_default_is_auto_and_resolves_by_the_cpu(monkeypatch, tiny, caplog):
    assert TrainerSection().precision == "auto"
    auto = [x for x in tiny(["unused"]) if not x.startswith("trainer.precision")]
    cfg = load_config(None, auto)
    assert cfg.trainer.precision == "auto"
    for native, want in ((False, "32"), (True, "bf16-mixed")):
        monkeypatch.setattr(prec, "cpu_bf16", lambda native=native: (native, "pretend"))
        with caplog.at_level(logging.INFO, logger=prec.__name__):
            caplog.clear()
            run_cfg, facts = resolve_precision(cfg)
        assert run_cfg.trainer.precision == want and cfg.trainer.precision == "auto"
        assert facts["requested"] == "auto" and facts["used"] == want and facts["reason"] == "pretend"
        assert [r.getMessage() for r in caplog.records if r.name == prec.__name__] == [
            f"training precision: {'bf16' if native else 'fp32'} (auto; pretend)"
        ]


def test_explicit_precisions_are_kept_and_emulated_bf16_warns(monkeypatch, tiny, caplog):
    monkeypatch.setattr(prec, "cpu_bf16", lambda: (False, "no native bf16 here"))
    run_cfg, facts = resolve_precision(_cfg(tiny, "trainer.precision=32"))
    assert run_cfg.trainer.precision == "32" and facts["reason"] == "requested"
    with caplog.at_level(logging.WARNING, logger=prec.__name__):
        run_cfg, facts = resolve_precision(_cfg(tiny, "trainer.precision=bf16-mixed"))
    assert run_cfg.trainer.precision == "bf16-mixed" and facts["used"] == "bf16-mixed"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "no native bf16 here" in warned[0]


def test_bf16_weight_copies_with_auto_on_a_cpu_without_bf16_is_a_clear_error(monkeypatch, tiny):
    cfg = load_config(None, [x for x in tiny(["unused"]) if not x.startswith("trainer.precision")]
                      + ["trainer.bf16_weight_copies=true"])
    monkeypatch.setattr(prec, "cpu_bf16", lambda: (False, "no native bf16 here"))
    with pytest.raises(ConfigError, match="bf16_weight_copies.*auto chose 32"):
        resolve_precision(cfg)
    monkeypatch.setattr(prec, "cpu_bf16", lambda: (True, "native"))
    assert resolve_precision(cfg)[0].trainer.precision == "bf16-mixed"


def test_fit_with_auto_trains_as_the_chosen_precision_and_records_it(
    tmp_path, synth_store, tiny, monkeypatch
):
    """On a CPU without bf16, ``auto`` trains exactly as an explicit ``32`` run (same weights); the run
    manifest records what was asked and what ran, and config.yaml keeps ``auto``."""
    monkeypatch.setattr(prec, "cpu_bf16", lambda: (False, "no native bf16 here"))
    base = [x for x in tiny([synth_store], "data.split=train") if not x.startswith("trainer.precision")]
    fit(load_config(None, base), out=tmp_path / "auto")
    fit(load_config(None, [*base, "trainer.precision=32"]), out=tmp_path / "fp32")
    man = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    assert man["status"] == "completed"
    assert man["precision"] == {"requested": "auto", "used": "32", "reason": "no native bf16 here",
                                "device": "cpu"}
    assert "precision: auto" in (tmp_path / "auto" / "config.yaml").read_text()
    wa = load_file(str(tmp_path / "auto" / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "fp32" / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_dry_run_says_what_auto_chose(monkeypatch, capsys):
    from csmae.cli import main

    monkeypatch.setattr(prec, "cpu_bf16", lambda: (False, "no native bf16 here"))
    assert main(["fit", "--set", "trainer.accelerator=cpu", "--dry-run"]) == 0
    assert "precision auto -> 32 (no native bf16 here)" in capsys.readouterr().out
