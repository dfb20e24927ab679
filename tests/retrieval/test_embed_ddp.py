"""Embedding across two CPU processes (gloo DDP through Lightning predict), resuming a 1-process run."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from csmae.retrieval.embed import embed_dataset
from csmae.retrieval.embeddings import load_embeddings


def test_two_rank_embedding_resumes_and_matches_one_process(tmp_path, tiny_model_dir, reben_sources):
    out = tmp_path / "emb"

    def crash(done, total):
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # one process writes shards 0 and 1 of 5, then dies
        embed_dataset(tiny_model_dir, reben_sources, out, shard_pairs=4, batch_size=2, precision="fp32",
                      on_progress=crash)
    kept = (out.parent / "emb.partial" / "part-00000.parquet").stat().st_mtime_ns
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "csmae", "embed", str(tiny_model_dir), *reben_sources, "--out", str(out),
         "--devices", "2", "--device", "cpu", "--shard-pairs", "4", "--batch-size", "2",
         "--precision", "fp32"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert [line for line in proc.stdout.splitlines() if line.startswith("wrote ")], proc.stdout  # rank 0
    assert (out / "part-00000.parquet").stat().st_mtime_ns == kept  # finished shard not recomputed
    two = load_embeddings(out)
    one = load_embeddings(embed_dataset(tiny_model_dir, reben_sources, tmp_path / "one", shard_pairs=4,
                                        batch_size=2, precision="fp32"))
    assert list(two.ids) == list(one.ids) and list(two.sensors) == list(one.sensors)
    assert len(two.ids) == 36  # 18 pairs x 2 sensors, none twice
    assert np.allclose(two.vectors, one.vectors, atol=1e-5)
    assert np.array_equal(two.labels, one.labels)
