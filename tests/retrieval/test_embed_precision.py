"""``csmae embed`` / ``evaluate`` in ``auto`` precision: what ran is what the CPU runs natively, one
line says so, the manifests record it, and the descriptors are those of the explicit precision."""

from __future__ import annotations

import json
import logging

import pytest

from csmae.models import precision as prec


@pytest.fixture(params=[False, True], ids=["cpu-without-bf16", "cpu-with-bf16"])
def auto_means(request, monkeypatch):
    native = request.param
    monkeypatch.setattr(prec, "cpu_bf16", lambda: (native, "pretend reason"))
    yield "bf16" if native else "fp32"


def _lines(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == prec.__name__ and r.levelno == level]


def test_embed_auto_records_the_choice_and_equals_the_explicit_precision(
    tmp_path, tiny_model_dir, reben_sources, auto_means, caplog
):
    from csmae.retrieval.embed import embed_dataset
    from csmae.retrieval.embeddings import load_embeddings

    with caplog.at_level(logging.INFO, logger=prec.__name__):
        auto = embed_dataset(tiny_model_dir, reben_sources, tmp_path / "auto", device="cpu", batch_size=8)
    lines = _lines(caplog, logging.INFO)
    assert len(lines) == 1 and f": {auto_means} (auto;" in lines[0]
    explicit = embed_dataset(tiny_model_dir, reben_sources, tmp_path / "explicit", device="cpu", batch_size=8,
                             precision=auto_means)
    man = json.loads((auto / "manifest.json").read_text())
    assert man["precision"] == auto_means
    assert man["precision_choice"] == {"requested": "auto", "used": auto_means, "reason": "pretend reason",
                                       "device": "cpu"}
    assert json.loads((explicit / "manifest.json").read_text())["precision_choice"]["requested"] == auto_means
    assert (load_embeddings(auto).vectors == load_embeddings(explicit).vectors).all()


def test_cli_embed_prints_one_precision_line_and_warns_for_emulated_bf16(
    tmp_path, tiny_model_dir, reben_sources, monkeypatch, caplog
):
    from csmae.cli import main

    monkeypatch.setattr(prec, "cpu_bf16", lambda: (False, "this CPU (AVX2) has no native bf16 matmul"))
    caplog.set_level(logging.INFO)  # what reaches the handlers, with the loggers at the CLI's default level
    root, logger = logging.getLogger(), logging.getLogger(prec.__name__)
    levels = root.level, logger.level
    root.setLevel(logging.WARNING)
    logger.setLevel(logging.NOTSET)
    try:
        assert main(["embed", str(tiny_model_dir), *reben_sources, "--out", str(tmp_path / "a"),
                     "--device", "cpu"]) == 0
        info = _lines(caplog, logging.INFO)
        assert info == ["embedding precision: fp32 (auto; this CPU (AVX2) has no native bf16 matmul)"]
        caplog.clear()
        assert main(["embed", str(tiny_model_dir), *reben_sources, "--out", str(tmp_path / "b"),
                     "--device", "cpu", "--precision", "bf16"]) == 0
        warned = _lines(caplog, logging.WARNING)
        assert len(warned) == 1 and "bf16 as requested" in warned[0] and "no native bf16" in warned[0]
    finally:
        root.setLevel(levels[0])
        logger.setLevel(levels[1])
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["precision"] == "bf16"


def test_evaluate_search_precision_auto_is_recorded_in_the_report(
    tmp_path, tiny_model_dir, reben_sources, auto_means
):
    from csmae.cli import main

    emb = tmp_path / "emb"
    assert main(["embed", str(tiny_model_dir), *reben_sources, "--out", str(emb), "--precision", "fp32"]) == 0
    common = ["evaluate", "--embeddings", str(emb), "--queries", "all", "--archive", "all", "--ks", "1,5",
              "--grids", "0"]
    assert main([*common, "--out", str(tmp_path / "auto")]) == 0
    assert main([*common, "--out", str(tmp_path / "other"), "--search-precision",
                 "fp32" if auto_means == "bf16" else "bf16"]) == 0
    got = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    other = json.loads((tmp_path / "other" / "metrics.json").read_text())
    assert got["protocol"]["search_candidates"] == auto_means
    assert got["protocol"]["search_candidates_choice"]["requested"] == "auto"
    assert got["directions"] == other["directions"]  # identical results, whatever the candidate pass
