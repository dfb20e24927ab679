#!/usr/bin/env bash
# Second GPU call: training-step scaling and profile; embedding with device-side normalisation.
set -uo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/csmae-gpu}; PY=${PY:-python3}; WORK=$(mktemp -d); mkdir -p "$OUT"
echo "=== profile $(date +%T)"
$PY bench/gpu_profile.py --device cuda --batches 64 128 256 512 --profile-batch 128 --rows 30 2>&1 \
  | grep -v "USDT\|Warning" | tee "$OUT/profile.txt"
echo "=== embed $(date +%T)"
$PY -m csmae synth --format store --n 3072 --out "$WORK/store" >/dev/null
for w in 8 14; do
  $PY bench/bench_retrieval.py embed --data "$WORK/store" --batch-size 256 --workers $w --precisions bf16 2>&1 \
    | grep -v Warning | tee -a "$OUT/embed2.md"
done
echo "done $(date +%T)"
