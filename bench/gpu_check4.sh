#!/usr/bin/env bash
# Fourth GPU call: the real `csmae fit` path at batch 512 (the recommendation for one GPU).
set -uo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/csmae-gpu}; PY=${PY:-python3}; WORK=$(mktemp -d); mkdir -p "$OUT"
echo "synth $(date +%T)"
$PY -m csmae synth --format store --n 3072 --out "$WORK/store" >/dev/null
echo "fit $(date +%T)"
$PY bench/bench_fit.py --accelerator gpu --sizes base --precisions bf16-mixed --batch-size 512 --steps 10 \
  --warmup 3 --workers 12 --data "$WORK/store" 2>&1 | grep "^|\|device" | tee "$OUT/fit512.md"
echo "done $(date +%T)"
