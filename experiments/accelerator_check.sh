#!/usr/bin/env bash
# One short check of the member axis on an accelerator (GPU or TPU), under 8 minutes:
#   1. the devices JAX sees;
#   2. the member bench (experiments/bench_train_step.py --members) for K = 1, 4, 16 members of SimCLR at
#      batch 256, L = 512, in float32 and in bfloat16 compute: views/s per member and in all, step time
#      against K single runs, compile time, peak device memory;
#   3. one `python -m ssl_jax.main` smoke run with 4 members (configs/smoke.py), into a temporary workdir.
# Usage: bash experiments/accelerator_check.sh [PYTHON]   (default: python; run from the repository root)
# Record the printed tables, dated with the commit, in docs/performance.md.
set -euo pipefail
PYTHON="${1:-python}"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
echo "== $(date -u +%F) $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
timeout 60 "$PYTHON" -c 'import jax; print("devices:", jax.devices()); print("backend:", jax.default_backend())'
for dtype in float32 bfloat16; do
  echo "== member bench, $dtype compute"
  timeout 180 "$PYTHON" experiments/bench_train_step.py --members 1,4,16 --methods simclr --batch_sizes 256 \
    --length 512 --steps 10 --dtype "$dtype"
done
echo "== ssl_jax.main smoke run with 4 members"
workdir="$(mktemp -d)"
timeout 120 "$PYTHON" -m ssl_jax.main --config=configs/smoke.py:simclr --workdir="$workdir" \
  --config.members.count=4 --config.members.temperature='(0.05, 0.07, 0.1, 0.2)' \
  --config.data.data_dir="$workdir/tfds"
rm -rf "$workdir"
