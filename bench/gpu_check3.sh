#!/usr/bin/env bash
# Third GPU call: the reconstruction-loss formulations side by side on a ViT-B training step
# (masked-first selection syncs with the host; the all-patches forms do not).
set -uo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/csmae-gpu}; PY=${PY:-python3}; mkdir -p "$OUT"
for b in 128 512; do
  $PY bench/bench_loss.py --device cuda --models csmae_sesd_base --batch $b --rounds 4 --steps 5 2>&1 \
    | grep -v Warning | tee -a "$OUT/loss_gpu.md"
done
