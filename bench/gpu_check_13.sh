#!/usr/bin/env bash
# Every GPU figure of issue 13 in one call (about 5-7 minutes on one H100/H200; stays under 10):
#   1. the device data path on the GPU against the host path (equal bit for bit? max difference)
#   2. bare ViT-B SESD bf16 step and embedding as % of the measured bf16 matmul rate, batch 512,
#      with the step variants of bench_model.py side by side (CUDA graph, bf16 parameter copies)
#   3. `csmae fit` (bench_fit.py --accelerator gpu) vs the bare step, samples/s and data wait, host vs
#      device data path, on a native-layout store, batch 512
#   4. embedding end to end vs the model alone, host vs device data path
#   5. the MIM gather's communication on 2 processes (only with >= 2 GPUs; skipped otherwise)
# Tables go to stdout and $OUT/*.md. The device machine runs csmae from src/ (no install).
#   OUT=/tmp/g13 bash bench/gpu_check_13.sh          # on a GPU machine
#   OUT=/tmp/g13 bash bench/gpu_check_13.sh quick    # dry run of the script with tiny sizes (CPU works)
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/csmae-gpu13}
PY=${PY:-python3}
MODE=${1:-full}
WORK=$(mktemp -d)
mkdir -p "$OUT"
if [ "$MODE" = quick ]; then
  DEV=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
  ACC=$([ "$DEV" = cuda ] && echo gpu || echo cpu)
  SIZE=tiny; B=4; IT=1; WU=1; N=48; W=1; MM=256; FITS=1
else
  DEV=cuda; ACC=gpu; SIZE=base; B=512; IT=10; WU=3; N=4096; W=12; MM=8192; FITS=10
fi
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
step() { echo; echo "=== $* ($(date +%T))"; }
quiet() { grep -v "Warning\|warn(\|Tip:\|litlogger\|available:\|LOCAL_RANK\|^$" || true; }

step environment
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
  $PY -c "import torch, timm, lightning; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'timm', timm.__version__, 'lightning', lightning.__version__)"
  echo "cpus $(nproc), gpus $NGPU, mode $MODE"; } | tee "$OUT/env.txt"

step "native-layout synthetic store ($N pairs)"
$PY - "$WORK/store" "$N" <<'PY'
import sys, time
from csmae.data.synth import write_synthetic
t = time.perf_counter()
write_synthetic(sys.argv[1], n=int(sys.argv[2]), seed=0, format="store", s2_bands=None, layout="native")
print(f"written in {time.perf_counter() - t:.0f} s")
PY

step "1. device data path on $DEV vs the host path (CPU)"
$PY - "$WORK/store" "$DEV" <<'PY' | tee "$OUT/device_path.md"
import sys, torch
from csmae.data import open_dataset
from csmae.models import create_model
from csmae.models.device_batch import assemble
from csmae.training.datamodule import BatchDataset
from csmae.training.sample_rng import sample_keys
from csmae.training.sampler import BatchRequest
store, dev = sys.argv[1], sys.argv[2]
sensors = create_model("csmae_sesd_tiny").sensors
ds = open_dataset(store)
host = BatchDataset(ds, sensors, hflip=True, vflip=True)
raw = BatchDataset(ds, sensors, hflip=True, vflip=True, device_transforms=True)
print("| request | sensor | equal bit for bit | max abs difference | max relative difference |")
print("|---|---|---|---:|---:|")
for seed in (1, 2, 3):
    req = BatchRequest(list(range(seed, seed + 16)), sample_keys(seed, 0, range(16)), 16)
    want, r = host[req], raw[req]
    got = assemble({k: v.to(dev) for k, v in r["raw"].items()}, raw.layout, sensors, flips=r["flips"].to(dev))
    for s in sensors:
        g = got[s].cpu()
        d = (g - want[s]).abs()
        rel = (d / want[s].abs().clamp_min(1e-6)).max().item()
        print(f"| seed {seed} | {s} | {torch.equal(g, want[s])} | {d.max().item():.3g} | {rel:.3g} |")
PY

step "2. bare step and embedding, batch $B, % of bf16 matmul (bench_model.py)"
$PY bench/bench_model.py --device "$DEV" --model csmae_sesd_$SIZE --train-batch $B --embed-batch $B \
  --iters $IT --warmup $WU --matmul-n $MM --matmul-seconds 2 --precisions bf16 --variants all 2>&1 \
  | quiet | tee "$OUT/model.md"

step "3. csmae fit vs the bare step, host vs device data path (bench_fit.py, batch $B)"
$PY bench/bench_fit.py --accelerator $ACC --sizes $SIZE --precisions bf16-mixed --batch-size $B \
  --steps $FITS --warmup $WU --workers $W --data "$WORK/store" --device-transforms false true --bare 2>&1 \
  | quiet | tee "$OUT/fit.md"

step "4. embedding end to end vs the model alone (bench_embed_device.py, batch $B)"
$PY bench/bench_embed_device.py --device "$DEV" --model csmae_sesd_$SIZE --data "$WORK/store" \
  --batch-size $B --workers $((W > 8 ? 8 : W)) --iters $IT 2>&1 | quiet | tee "$OUT/embed.md"

step "5. MIM gather communication on 2 processes"
if [ "$NGPU" -ge 2 ]; then
  $PY bench/bench_gather.py --batch $B 2>&1 | quiet | tee "$OUT/gather.md"
elif [ "$MODE" = quick ]; then
  $PY bench/bench_gather.py --batch $B --dim 64 --grad-numel 1000000 --iters 2 --cpu 2>&1 | quiet \
    | tee "$OUT/gather.md"
else
  echo "skipped: $NGPU GPU(s) on this machine, the gather needs 2" | tee "$OUT/gather.md"
fi
rm -rf "$WORK"
echo; echo "done $(date +%T)"
