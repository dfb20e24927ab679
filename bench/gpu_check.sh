#!/usr/bin/env bash
# One-call GPU check (the device machine has torch/timm/lightning but no csmae install, so it runs
# from src/): environment, numerical agreement CPU vs GPU, ViT-B model throughput, the real
# `csmae fit` path, and `csmae embed` end to end. Tables go to stdout and to $OUT/*.md.
#   OUT=/tmp/gpu bash bench/gpu_check.sh          # on a GPU machine (about 6 minutes on one H100)
#   OUT=/tmp/gpu bash bench/gpu_check.sh quick    # smoke run of the script itself (CPU works too)
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/csmae-gpu}
PY=${PY:-python3}
MODE=${1:-full}
WORK=$(mktemp -d)
mkdir -p "$OUT"
if [ "$MODE" = quick ]; then
  DEV=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
  ACC=$([ "$DEV" = cuda ] && echo gpu || echo cpu)
  MODEL=csmae_sesd_tiny; TB=4; EB=8; IT=1; N=64; FITB=8; FITS=2; EMBB=16; MM=512
else
  DEV=cuda; ACC=gpu; MODEL=csmae_sesd_base; TB=128; EB=512; IT=10; N=4096; FITB=128; FITS=20; EMBB=256; MM=8192
fi
step() { echo; echo "=== $* ($(date +%T))"; }

step environment
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
  $PY -c "import torch, timm, lightning, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'timm', timm.__version__, 'lightning', lightning.__version__, 'numpy', numpy.__version__)"
  nproc; } | tee "$OUT/env.txt"

step "CPU fp64 vs $DEV fp32 / bf16 descriptors ($MODEL)"
$PY - "$MODEL" "$DEV" <<'PY' | tee "$OUT/parity.txt"
import sys, torch
from csmae.models import create_model
name, dev = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
m = create_model(name).eval()
x = {s: torch.randn(8, spec.num_channels, 120, 120) for s, spec in m.sensors.items()}
with torch.inference_mode():
    ref = m.double().embed({s: v.double() for s, v in x.items()})
    m = m.float().to(dev)
    xd = {s: v.to(dev) for s, v in x.items()}
    got32 = m.embed(xd)
    with torch.autocast(torch.device(dev).type, dtype=torch.bfloat16):
        got16 = m.embed(xd)
for s in ref:
    r = ref[s].float().cpu()
    e32 = ((got32[s].float().cpu() - r).norm() / r.norm()).item()
    e16 = ((got16[s].float().cpu() - r).norm() / r.norm()).item()
    print(f"{s}: relative error fp32 {e32:.2e}, bf16 {e16:.2e}")
    assert e32 < 1e-3 and e16 < 3e-2 and torch.isfinite(got16[s]).all(), "descriptor mismatch"
PY

step "model throughput ($MODEL)"
$PY bench/bench_model.py --device "$DEV" --model $MODEL --train-batch $TB --embed-batch $EB --iters $IT \
  --warmup 3 --matmul-n $MM --matmul-seconds 2 2>&1 | tee "$OUT/model.md"

step "csmae fit ($MODEL, Lightning, synthetic store of $N pairs)"
$PY -m csmae synth --format store --n $N --out "$WORK/store" >/dev/null
$PY bench/bench_fit.py --accelerator $ACC --sizes ${MODEL#csmae_sesd_} --precisions bf16-mixed 32 \
  --batch-size $FITB --steps $FITS --warmup 3 --workers 8 --data "$WORK/store" 2>&1 | grep -v Warning | tee "$OUT/fit.md"

step "embedding end to end ($MODEL, $N pairs in a store, 8 reader workers; steady state)"
$PY bench/bench_retrieval.py embed --model $MODEL --data "$WORK/store" --batch-size $EMBB --workers 8 2>&1 \
  | grep -v Warning | tee "$OUT/embed.md"

step "csmae embed CLI, bf16 (start-up included)"
$PY -c "import torch, csmae; torch.manual_seed(0); csmae.create_model('$MODEL').save_pretrained('$WORK/model')"
$PY -m csmae embed "$WORK/model" "$WORK/store" --out "$WORK/emb" --batch-size $EMBB --workers 8 2>/dev/null \
  | tee -a "$OUT/embed.md"
if [ "$MODE" != quick ]; then
  step "model throughput, torch.compile (inductor), bf16 ($MODEL; at most 150 s)"
  timeout 150 $PY bench/bench_model.py --device "$DEV" --model $MODEL --train-batch $TB --embed-batch $EB \
    --iters $IT --warmup 3 --matmul-n $MM --matmul-seconds 1 --precisions bf16 --compile 2>&1 \
    | grep -v Warning | tee "$OUT/model_compile.md"
fi
rm -rf "$WORK"
echo; echo "done $(date +%T)"
