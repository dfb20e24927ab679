"""``csmae info`` on real dataset sources."""

from __future__ import annotations

from pathlib import Path

from csmae.cli import main


def test_info_encoded(encoded_lmdb_dir: Path, capsys) -> None:
    assert main(["info", str(encoded_lmdb_dir), "--read"]) == 0
    out = capsys.readouterr().out
    assert "kind:    encoded-lmdb" in out and "pairs:   10" in out
    assert "splits:  train 3, val 2, test 5" in out
    assert "s2:      10 bands B02 B03 B04 B08 B05 B06 B07 B8A B11 B12" in out
    assert "S2A_MSIL2A_20170613T101031_39_24" in out and "s1: float32 (2, 120, 120)" in out


def test_info_v1_single_sensor_and_skipped(v1_roots, tmp_path: Path, capsys) -> None:
    s2_root, s1_root = v1_roots
    assert main(["info", str(s1_root), "--sensors", "s1", "--show", "2"]) == 0
    out = capsys.readouterr().out
    assert "kind:    v1" in out and "pairs:   6" in out and "s2:" not in out
    assert "splits:  none 6" in out


def test_info_errors(tmp_path: Path, capsys) -> None:
    assert main(["info", str(tmp_path / "missing")]) == 1
    assert "source not found" in capsys.readouterr().err
