#!/usr/bin/env bash
# One short check of the member axis on an accelerator (GPU or TPU), under 8 minutes:
#   1. the devices JAX sees;
#   2. the member bench (experiments/bench_train_step.py --members) for K = 1, 4, 16 members of SimCLR at
#      batch 256, L = 512, in float32 compute: views/s per member and in all, step time against K single
#      runs, compile time, peak device memory;
#   3. experiments/full_scale_plan.py on this device: XLA's cost and memory analysis of the study's full-scale
#      step (SimCLR and MoCo v2, K = 1 and 16, crops 512) compiled for this backend, to set beside the CPU's
#      in docs/performance.md, and the bench's measured step times (2.) beside the roofline's prediction;
#   4. the member bench of 2. in bfloat16 compute;
#   5. one `python -m ssl_jax.main` smoke run with 4 members (configs/smoke.py), into a temporary workdir.
# Usage: bash experiments/accelerator_check.sh [PYTHON]   (default: python; run from the repository root)
# CHECK_OUT=DIR keeps the bench's and the plan's JSON there (default: a new temporary directory).
# CHECK_SECONDS (default 470) bounds the whole check: each step's timeout is cut so that the steps after it
# keep their share, and a step with too little time left is skipped, saying so.
# Record the printed tables, dated with the commit, in docs/performance.md.
set -euo pipefail
PYTHON="${1:-python}"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
BUDGET="${CHECK_SECONDS:-470}"
OUT="${CHECK_OUT:-$(mktemp -d)}"
mkdir -p "$OUT"

# limit OWN LATER: a step's timeout, OWN seconds or less so that LATER seconds stay for the steps after it.
limit() {
  local left=$((BUDGET - SECONDS - $2))
  if ((left < $1)); then echo "$left"; else echo "$1"; fi
}
# run OWN LATER CMD...: CMD under `limit OWN LATER`, or skipped when fewer than 20 seconds are left for it.
# A step that fails (a timeout is status 124) is named at the end, and the check exits 1; the others still run.
failed=()
run() {
  local seconds status=0
  seconds="$(limit "$1" "$2")"
  shift 2
  if ((seconds < 20)); then
    echo "== skipped (${seconds} s left of the check's ${BUDGET}): $*"
    failed+=("skipped: $*")
    return 0
  fi
  timeout "$seconds" "$@" || status=$?
  if ((status != 0)); then
    echo "== status $status after at most ${seconds} s: $*"
    failed+=("status $status: $*")
  fi
}

echo "== $(date -u +%F) $(git rev-parse --short HEAD 2>/dev/null || echo '?'); JSON in $OUT"
run 60 400 "$PYTHON" -c 'import jax; print("devices:", jax.devices()); print("backend:", jax.default_backend())'
echo "== member bench, float32 compute"
run 180 280 "$PYTHON" experiments/bench_train_step.py --members 1,4,16 --methods simclr --batch_sizes 256 \
  --length 512 --steps 10 --dtype float32 --out "$OUT/bench_float32.json"
echo "== the full-scale plan on this device (XLA's analysis compiled here; the bench's step times beside it)"
measured=()
if [[ -f "$OUT/bench_float32.json" ]]; then measured=(--measured "$OUT/bench_float32.json"); fi
run 180 160 "$PYTHON" experiments/full_scale_plan.py --methods simclr,moco --members 1,16 --no_crop_mean \
  --no_per_core --devices h100,h200,tpu_v2_8 --compile_timeout 120 ${measured[@]+"${measured[@]}"} \
  --out "$OUT/plan.json"
echo "== member bench, bfloat16 compute"
run 180 60 "$PYTHON" experiments/bench_train_step.py --members 1,4,16 --methods simclr --batch_sizes 256 \
  --length 512 --steps 10 --dtype bfloat16 --out "$OUT/bench_bfloat16.json"
echo "== ssl_jax.main smoke run with 4 members"
workdir="$(mktemp -d)"
run 120 0 "$PYTHON" -m ssl_jax.main --config=configs/smoke.py:simclr --workdir="$workdir" \
  --config.members.count=4 --config.members.temperature='(0.05, 0.07, 0.1, 0.2)' \
  --config.data.data_dir="$workdir/tfds"
rm -rf "$workdir"
echo "== done in ${SECONDS} s; JSON in $OUT"
if ((${#failed[@]})); then
  printf '== not completed: %s\n' "${failed[@]}"
  exit 1
fi
