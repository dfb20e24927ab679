"""Compiled embedding (csmae.models.compiled): same descriptors as eager, eager after any failure."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import csmae
from csmae.models import compiled as comp
from csmae.models.compiled import CompiledEmbed, compiled_embed, why_not_compile
from tests.retrieval.conftest import TINY


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return csmae.create_model("csmae_sesd_tiny", **TINY).eval()


def _batch(model, n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    size = model.config.img_size
    return {s: torch.randn(n, len(model.sensors[s].bands), size, size, generator=g) for s in model.sensors}


def _warnings(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == comp.__name__
    ]


@pytest.mark.slow  # inductor compiles C++ kernels: minutes on the shared 2-core machine (472 s at load 12)
def test_inductor_compiled_tiny_model_matches_eager(tmp_path, monkeypatch):
    """The real inductor + freezing path on a tiny model: cosine vs eager within the recorded tolerance."""
    if comp.cxx_compiler() is None:
        pytest.skip("no C++ compiler for inductor here")
    monkeypatch.setattr(comp, "cpu_has_amx", lambda: True)  # compile here even without AMX
    model = _tiny()
    x = _batch(model, 3)
    runner = compiled_embed(
        model,
        device="cpu",
        precision="fp32",
        pairs=10,
        batch_size=4,
        min_pairs=1,
        cache_dir=tmp_path / "inductor",
    )
    with torch.inference_mode():
        ref = model.embed(x)
        got = runner(x)  # padded to 4 rows, compiled, checked against eager
        again = runner(_batch(model, 4, seed=2))
    assert runner.compiled_batches >= 1, runner.reason
    assert runner.min_cosine is not None and runner.min_cosine >= 1 - comp.TOLERANCE["fp32"]
    for s in ref:
        assert got[s].shape == ref[s].shape
        cos = torch.nn.functional.cosine_similarity(got[s].double(), ref[s].double(), dim=1)
        assert float(cos.min()) >= 1 - comp.TOLERANCE["fp32"]
        assert again[s].shape[0] == 4
    assert runner.describe()["used"] is True and runner.describe()["backend"] == "inductor-freezing"


def test_compile_failing_half_way_falls_back_to_eager_with_one_line(caplog):
    model = _tiny()
    x = _batch(model, 3)

    def broken_compiler(fn):
        def call(batch):
            raise RuntimeError("C++ compile failed: cc1plus killed\nlong traceback text")

        return call

    runner = CompiledEmbed(
        model, batch_size=4, precision="fp32", reason=None, tolerance=1e-5, compiler=broken_compiler
    )
    with torch.inference_mode(), caplog.at_level(logging.INFO, logger=comp.__name__):
        ref = model.embed(x)
        first, second = runner(x), runner(x)
    assert not runner.compiled and "cc1plus killed" in (runner.reason or "")
    assert len(_warnings(caplog)) == 1 and "using eager" in _warnings(caplog)[0]
    assert "long traceback" not in _warnings(caplog)[0]
    for s in ref:
        assert torch.equal(first[s], ref[s]) and torch.equal(second[s], ref[s])


def test_compile_call_itself_failing_falls_back(caplog):
    model = _tiny()

    def no_inductor(fn):
        raise ImportError("no module named torch._inductor")

    with caplog.at_level(logging.INFO, logger=comp.__name__):
        runner = CompiledEmbed(
            model, batch_size=2, precision="bf16", reason=None, tolerance=1e-3, compiler=no_inductor
        )
    assert not runner.compiled and len(_warnings(caplog)) == 1
    x = _batch(model, 2)
    with torch.inference_mode():
        assert torch.equal(runner(x)["s1"], model.embed(x)["s1"])


def test_wrong_compiled_descriptors_are_never_returned(caplog):
    """A graph giving other descriptors (a stale cache, a miscompile) is caught on the first batch."""
    model = _tiny()
    x = _batch(model, 3)

    def wrong(fn):
        return lambda batch: {s: -v for s, v in fn(batch).items()}

    runner = CompiledEmbed(model, batch_size=4, precision="fp32", reason=None, tolerance=1e-5, compiler=wrong)
    with torch.inference_mode(), caplog.at_level(logging.INFO, logger=comp.__name__):
        ref = model.embed(x)
        got = runner(x)
    assert not runner.compiled and runner.min_cosine is not None and runner.min_cosine < 0
    assert len(_warnings(caplog)) == 1 and "differ from eager" in _warnings(caplog)[0]
    assert all(torch.equal(got[s], ref[s]) for s in ref)


def test_padding_keeps_rows_and_order():
    model = _tiny()
    seen: list[int] = []

    def identity(fn):
        def call(batch):
            seen.append(next(v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor)))
            return fn(batch)

        return call

    runner = CompiledEmbed(
        model, batch_size=5, precision="fp32", reason=None, tolerance=1e-5, compiler=identity
    )
    x = _batch(model, 2)
    with torch.inference_mode():
        got, ref = runner(x), model.embed(x)
    assert seen == [5] and runner.compiled
    for s in ref:
        assert got[s].shape == ref[s].shape
        torch.testing.assert_close(got[s], ref[s], rtol=1e-5, atol=1e-6)


def test_when_compiling_is_not_tried(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(comp, "cpu_has_amx", lambda: False)
    assert "AMX" in (why_not_compile(cpu, "bf16", 10**6, 1) or "")
    monkeypatch.setattr(comp, "cpu_has_amx", lambda: True)
    assert "below" in (why_not_compile(cpu, "bf16", 100, 4096) or "")
    assert "cuda" in (why_not_compile(torch.device("cuda"), "bf16", 10**6, 4096) or "")
    monkeypatch.setattr(comp, "cxx_compiler", lambda: None)
    assert "C++ compiler" in (why_not_compile(cpu, "fp32", 10**6, 1) or "")
    monkeypatch.setattr(comp, "cxx_compiler", lambda: "g++")
    monkeypatch.setattr(comp, "cpu_has_bf16", lambda: False)
    assert "bf16" in (why_not_compile(cpu, "bf16", 10**6, 1) or "")
    assert why_not_compile(cpu, "fp32", 10**6, 1) is None
    off = compiled_embed(_tiny(), device="cpu", precision="fp32", pairs=10**6, batch_size=4, enabled=False)
    assert not off.compiled and "--no-compile" in (off.reason or "")


def test_embed_dataset_records_compilation_in_the_manifest(
    tmp_path, tiny_model_dir, reben_sources, monkeypatch, caplog
):
    from csmae.retrieval.embed import embed_dataset
    from csmae.retrieval.embeddings import load_embeddings

    monkeypatch.setattr(comp, "MIN_PAIRS", 1)
    monkeypatch.setattr(comp, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(comp, "cxx_compiler", lambda: "g++")

    def failing(fn):
        def call(batch):
            raise RuntimeError("inductor exploded")

        return call

    monkeypatch.setattr(comp, "_inductor_frozen", failing)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger=comp.__name__):
        out = embed_dataset(
            tiny_model_dir, reben_sources, tmp_path / "emb", precision="fp32", device="cpu", batch_size=8
        )
    eager = embed_dataset(
        tiny_model_dir,
        reben_sources,
        tmp_path / "eager",
        precision="fp32",
        device="cpu",
        batch_size=8,
        compiled=False,
    )
    man = json.loads((out / "manifest.json").read_text())
    assert man["compiled"]["used"] is False and "inductor exploded" in man["compiled"]["reason"]
    assert man["compiled"]["tolerance_cosine"] == comp.TOLERANCE["fp32"]
    assert len(_warnings(caplog)) == 1
    assert json.loads((eager / "manifest.json").read_text())["compiled"]["reason"].startswith("switched off")
    a, b = load_embeddings(out), load_embeddings(eager)
    assert (a.vectors == b.vectors).all()


def test_a_compiled_graph_slower_than_eager_is_turned_off(caplog):
    import time

    model = _tiny()
    x = _batch(model, 4)

    def slow(fn):
        calls = []

        def call(batch):
            calls.append(1)
            if len(calls) > 1:  # the second batch: 4x the eager work and more
                for _ in range(3):
                    fn(batch)
                time.sleep(0.2)
            return fn(batch)

        return call

    runner = CompiledEmbed(model, batch_size=4, precision="fp32", reason=None, tolerance=1e-5, compiler=slow)
    with torch.inference_mode(), caplog.at_level(logging.INFO, logger=comp.__name__):
        ref = model.embed(x)
        outs = [runner(x) for _ in range(3)]
    assert not runner.compiled and "not faster" in (runner.reason or "")
    assert runner.compiled_batches == 2 and runner.eager_batches == 1
    assert runner.describe()["used"] is True and not _warnings(caplog)  # an info line, not a warning
    assert torch.equal(outs[2]["s1"], ref["s1"])


def test_no_compile_flag_on_embed_and_evaluate():
    import argparse

    from csmae.cli import embed as cli_embed
    from csmae.cli import evaluate as cli_evaluate

    for mod, argv in ((cli_embed, ["m", "d", "--out", "o"]), (cli_evaluate, ["m", "d", "--out", "o"])):
        p = argparse.ArgumentParser()
        mod.add_arguments(p)
        assert p.parse_args(argv).compile is True
        assert p.parse_args([*argv, "--no-compile"]).compile is False


def _compile_here(monkeypatch) -> None:
    """Make the policy try compiling on this machine (AMX, job size), whatever the CPU."""
    monkeypatch.setattr(comp, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(comp, "cxx_compiler", lambda: "g++")


def test_a_cache_from_another_torch_version_is_not_used(tmp_path, monkeypatch, caplog):
    """A cache csmae filled with another torch (its stamp says so) or an unreadable stamp: eager, one line."""
    import torch as _torch

    _compile_here(monkeypatch)
    used: list[int] = []

    def spy(fn):
        used.append(1)
        return fn

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / comp.STAMP).write_text(json.dumps({"torch": "2.0.0+old"}))
    (foreign / "fxgraph").mkdir()  # inductor's entries stay untouched
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / comp.STAMP).write_text("{not json")
    for cache, words in ((foreign, "filled by torch 2.0.0+old"), (broken, "unreadable")):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=comp.__name__):
            runner = compiled_embed(_tiny(), device="cpu", precision="fp32", pairs=10**6, batch_size=4,
                                    cache_dir=cache, compiler=spy)
        assert not runner.compiled and words in (runner.reason or "") and not used
        assert len(_warnings(caplog)) == 1 and str(cache) in _warnings(caplog)[0]
        x = _batch(runner.model, 2)
        with _torch.inference_mode():
            assert _torch.equal(runner(x)["s1"], runner.model.embed(x)["s1"])
    assert (foreign / "fxgraph").is_dir()
    assert json.loads((foreign / comp.STAMP).read_text())["torch"] == "2.0.0+old"  # left as it was


def test_a_fresh_cache_is_stamped_with_this_torch_and_used(tmp_path, monkeypatch):
    import torch as _torch

    _compile_here(monkeypatch)
    cache = tmp_path / "cache"
    runner = compiled_embed(_tiny(), device="cpu", precision="fp32", pairs=10**6, batch_size=4,
                            cache_dir=cache, compiler=lambda fn: fn)
    assert runner.compiled and runner.reason is None
    assert json.loads((cache / comp.STAMP).read_text()) == {"torch": _torch.__version__}
    assert comp.cache_problem(cache) is None  # the same torch reuses it


def test_a_torch_without_inductor_stays_eager_with_a_reason(monkeypatch):
    import sys

    monkeypatch.setattr(comp, "cpu_has_amx", lambda: True)
    monkeypatch.setitem(sys.modules, "torch._inductor", None)  # "import torch._inductor" now fails
    monkeypatch.setitem(sys.modules, "torch._inductor.config", None)
    assert comp.cxx_compiler() is None and not comp.inductor_available()
    reason = why_not_compile(torch.device("cpu"), "fp32", 10**6, 1)
    assert reason is not None and "inductor" in reason


@pytest.mark.slow  # the real dynamo + inductor lowering of a tiny model before the C++ build: minutes
def test_a_cxx_compiler_dying_half_way_falls_back_to_eager(tmp_path, monkeypatch, caplog):
    """The real inductor path up to the C++ build, with a compiler that answers --version and then dies
    on the compilation: eager descriptors, one warning line, no traceback."""
    if comp.cxx_compiler() is None:
        pytest.skip("no C++ compiler for inductor here")
    fake = tmp_path / "fakecxx"
    fake.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then exec g++ --version; fi\n'
                    'echo "cc1plus: fatal error: Killed signal terminated program cc1plus" >&2\nexit 1\n')
    fake.chmod(0o755)
    from torch._inductor import config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", (str(fake),))
    monkeypatch.setattr(comp, "cpu_has_amx", lambda: True)
    model = _tiny()
    x = _batch(model, 3)
    with caplog.at_level(logging.INFO, logger=comp.__name__):
        runner = compiled_embed(model, device="cpu", precision="fp32", pairs=10, batch_size=4, min_pairs=1,
                                cache_dir=tmp_path / "inductor")
        with torch.inference_mode():
            got, ref = runner(x), model.embed(x)
    assert not runner.compiled and runner.compiled_batches == 0 and runner.eager_batches == 1
    assert len(_warnings(caplog)) == 1 and "compiled call failed" in _warnings(caplog)[0]
    assert "\n" not in _warnings(caplog)[0]
    assert all(torch.equal(got[s], ref[s]) for s in ref)
