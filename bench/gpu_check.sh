#!/usr/bin/env bash
# The one GPU check: every GPU figure of bench/README.md from one call on a lent device.
# Each section prints Markdown tables to stdout and to $OUT/<section>.md; the device machine runs
# csmae from src/ (no install). Sections (default: all but "profile" and "loss", ~8-10 min on one
# H100/H200 in full mode; pick sections to fit the device time you have):
#   env          GPU, driver, torch/timm/lightning versions
#   parity       CPU float64 vs GPU fp32 / bf16 descriptors (fails loudly on a mismatch)
#   device_path  the device data path (raw store records upsampled/normalised on the GPU) vs the host path
#   model        bare ViT-B SESD bf16 training step and embedding, % of the measured bf16 matmul rate,
#                with the step variants of bench_model.py side by side (CUDA graph, bf16 parameter copies)
#   fit          `csmae fit` (Lightning) vs the bare step, host vs device data path
#   embed        embedding end to end (`embed_dataset`) vs the model alone, host vs device data path
#   compiled     eager vs torch.compile'd embedding (freezing, max-autotune, CUDA graphs: issue 22)
#   gather       the MIM gather's communication on 2 processes (only with >= 2 GPUs)
#   profile      batch-size scaling and the top kernels of one training step (bench/gpu_profile.py)
#   loss         the reconstruction-loss formulations side by side (bench/bench_loss.py)
# Usage:
#   OUT=/tmp/gpu bash bench/gpu_check.sh                    # all default sections, full sizes
#   OUT=/tmp/gpu bash bench/gpu_check.sh full model compiled  # only these sections
#   OUT=/tmp/gpu bash bench/gpu_check.sh quick              # dry run with tiny sizes (CPU works too)
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/csmae-gpu}
PY=${PY:-python3}
MODE=${1:-full}
shift || true
SECTIONS=${*:-env parity device_path model fit embed compiled gather}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
if [ "$MODE" = quick ]; then
  DEV=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
  ACC=$([ "$DEV" = cuda ] && echo gpu || echo cpu)
  SIZE=tiny; B=4; IT=1; WU=1; N=48; W=1; MM=256; FITS=1
elif [ "$MODE" = full ]; then
  DEV=cuda; ACC=gpu; SIZE=base; B=512; IT=10; WU=3; N=4096; W=12; MM=8192; FITS=10
else
  echo "usage: bash bench/gpu_check.sh [full|quick] [section ...]" >&2; exit 2
fi
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
# the precision of the compiled section: bf16 on the GPU; in a quick dry run what `auto` picks on $DEV
# (fp32 on a CPU without native bf16, where a bf16 compile would take many minutes)
PREC=$($PY -c "from csmae.models.precision import choose_precision; print(choose_precision('auto', '$DEV').precision)")
step() { echo; echo "=== $* ($(date +%T))"; }
quiet() { grep -v "Warning\|warn(\|Tip:\|litlogger\|available:\|LOCAL_RANK\|^$" || true; }
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
store() {  # a native-layout synthetic store, written once
  [ -d "$WORK/store" ] && return
  $PY - "$WORK/store" "$N" <<'PY'
import sys, time
from csmae.data.synth import write_synthetic
t = time.perf_counter()
write_synthetic(sys.argv[1], n=int(sys.argv[2]), seed=0, format="store", s2_bands=None, layout="native")
print(f"synthetic store of {sys.argv[2]} pairs written in {time.perf_counter() - t:.0f} s")
PY
}

if want env; then
  step environment
  { nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
    $PY -c "import torch, timm, lightning; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'timm', timm.__version__, 'lightning', lightning.__version__)"
    echo "cpus $(nproc), gpus $NGPU, mode $MODE, sections: $SECTIONS"; } | tee "$OUT/env.md"
fi

if want parity; then
  step "parity: CPU float64 vs $DEV fp32 / bf16 descriptors (csmae_sesd_$SIZE)"
  $PY - "csmae_sesd_$SIZE" "$DEV" <<'PY' | tee "$OUT/parity.md"
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
fi

if want device_path; then
  store
  step "device_path: device data path on $DEV vs the host path (CPU)"
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
fi

if want model; then
  step "model: bare step and embedding, batch $B, % of bf16 matmul (bench_model.py)"
  $PY bench/bench_model.py --device "$DEV" --model csmae_sesd_$SIZE --train-batch $B --embed-batch $B \
    --iters $IT --warmup $WU --matmul-n $MM --matmul-seconds 2 --precisions bf16 --variants all 2>&1 \
    | quiet | tee "$OUT/model.md"
fi

if want fit; then
  store
  step "fit: csmae fit vs the bare step, host vs device data path (bench_fit.py, batch $B)"
  $PY bench/bench_fit.py --accelerator $ACC --sizes $SIZE --precisions bf16-mixed --batch-size $B \
    --steps $FITS --warmup $WU --workers $W --data "$WORK/store" --device-transforms false true --bare 2>&1 \
    | quiet | tee "$OUT/fit.md"
fi

if want embed; then
  store
  step "embed: end to end vs the model alone (bench_embed_device.py, batch $B)"
  $PY bench/bench_embed_device.py --device "$DEV" --model csmae_sesd_$SIZE --data "$WORK/store" \
    --batch-size $B --workers $((W > 8 ? 8 : W)) --iters $IT 2>&1 | quiet | tee "$OUT/embed.md"
fi

if want compiled; then
  step "compiled: eager vs torch.compile'd embedding, $PREC, batch $B (bench_embed_compile.py; at most 240 s)"
  timeout 240 $PY bench/bench_embed_compile.py --device "$DEV" --models csmae_sesd_$SIZE --precisions $PREC \
    --batch $B --rounds 3 --iters $IT --cache-dir "$WORK/inductor" 2>&1 | quiet | tee "$OUT/compiled.md"
fi

if want gather; then
  step "gather: MIM gather communication on 2 processes"
  if [ "$NGPU" -ge 2 ]; then
    $PY bench/bench_gather.py --batch $B 2>&1 | quiet | tee "$OUT/gather.md"
  elif [ "$MODE" = quick ]; then
    $PY bench/bench_gather.py --batch $B --dim 64 --grad-numel 1000000 --iters 2 --cpu 2>&1 | quiet \
      | tee "$OUT/gather.md"
  else
    echo "skipped: $NGPU GPU(s) on this machine, the gather needs 2" | tee "$OUT/gather.md"
  fi
fi

if want profile; then
  step "profile: training-step scaling and top kernels (gpu_profile.py)"
  if [ "$MODE" = quick ]; then PB="--batches 2 4 --profile-batch 2"; else PB="--batches 64 128 256 512 --profile-batch 128"; fi
  $PY bench/gpu_profile.py --device "$DEV" --model csmae_sesd_$SIZE $PB --rows 30 2>&1 \
    | grep -v "USDT\|Warning" | tee "$OUT/profile.md"
fi

if want loss; then
  step "loss: reconstruction-loss formulations side by side (bench_loss.py)"
  $PY bench/bench_loss.py --device "$DEV" --models csmae_sesd_$SIZE --batch $B --rounds 4 --steps $((IT < 5 ? IT : 5)) \
    2>&1 | quiet | tee "$OUT/loss.md"
fi
echo; echo "done $(date +%T)"
