#!/usr/bin/env bash
# The GPU session's one call: every check and measurement of the GPU path, in under 8 minutes on one H200.
#
#   here, once:   bash benchmarks/gpu_prepare.sh            (.dev/: wheels, FrEIA, a kornia_rs stub, bottle)
#   the call:     run(command="bash benchmarks/gpu_check.sh", carry=[".dev"], timeout_s=540)
#   afterwards:   copy the returned files into benchmarks/results/ and fill README's GPU table
#
# Stages, most important first; each runs only if the time it needs is left (BUDGET_S, default 450 s),
# so a slow machine loses the last stages, never the results of the first ones:
#   env      GPU, driver, versions
#   parity   CUDA against the CPU on real bottle: maps, scores, metrics (gpu_parity.py)
#   big      R18 and WR50, N = 3629 training images, 1725 test images: ours, anomalib, forward only
#   lite0    Lite0 on real bottle (accuracy too): ours, anomalib, forward, both layouts
#   fullres  bottle at 900 px (MVTec AD's size), 1024 images: the loader, ours, warm cache, resize on the GPU
#   tests    tests/test_cuda.py and the metrics' CUDA test
#   metrics  AU-PRO and pixel AUROC on 1725 maps on the GPU
# Results: $OUT/log.txt and $OUT/results.tgz (parity.json, pipeline_*.json/md, metrics_*.json/md), packed again
# after every stage, so a call cut short still brings back what ran (the device tool returns 8 files at most).
# SMOKE=1 DEVICE=cpu runs every stage at toy sizes on a CPU (the script's own test).
set -u
OUT=${OUT:-/tmp/gpu_out}
RES=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PADIM_PROGRESS=0
cd "$(dirname "$0")/.."
ROOT=$PWD
DEVICE=${DEVICE:-cuda}
START=$(date +%s)
END=$(( START + ${BUDGET_S:-450} ))
exec > >(tee -a "$OUT/log.txt") 2>&1

if [ -d .dev/wheels ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .dev/wheels/*.whl \
    || echo "pip install of .dev/wheels failed"
  export PYTHONPATH=/tmp/site:$ROOT/.dev/pylib:$ROOT${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
fi
DATA=$ROOT/.dev/data/mvtec_ad
[ -d "$DATA/bottle" ] || DATA=$ROOT/../shared/data/mvtec_ad

if [ "${SMOKE:-0}" = 1 ]; then
  BIG="--n 16 --n-test 12"; FULL=24; METRICS="--n-images 20"; BIG_SETUPS="r18"; WITH_ANOMALIB=""; PARITY_N=8
else
  BIG="--n 3629 --n-test 1725"; FULL=1024; METRICS=""; BIG_SETUPS="r18 wr50"; WITH_ANOMALIB="anomalib"; PARITY_N=""
fi

# stage NAME SECONDS COMMAND...: run COMMAND with a SECONDS limit, if SECONDS are left
stage() {
  local name=$1 need=$2; shift 2
  local now left
  now=$(date +%s); left=$(( END - now ))
  if [ "$left" -lt "$need" ]; then
    echo "=== $name skipped at $(( now - START )) s: needs ${need} s, ${left} s left"
    return
  fi
  echo "=== $name at $(( now - START )) s"
  timeout "$need" "$@" || echo "=== $name ended with status $?"
  tar -C "$RES" -czf "$OUT/results.tgz" .
}

BENCH="python3 benchmarks/bench_pipeline.py --data $DATA --device $DEVICE --out-dir $RES"

stage env 20 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null; nproc;
  python3 -c "import torch, torchvision, timm; print(\"torch\", torch.__version__, \"tv\", torchvision.__version__,
  \"timm\", timm.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else \"no CUDA\")";
  python3 -c "import anomalib; print(\"anomalib\", anomalib.__version__)" 2>/dev/null || echo "no anomalib"'
stage parity 75 python3 benchmarks/gpu_parity.py "$DATA" "$RES/parity.json" $PARITY_N
stage big 190 $BENCH --setups $BIG_SETUPS $BIG --methods ours $WITH_ANOMALIB forward --tag "${DEVICE}_3629"
stage lite0 75 $BENCH --setups lite0 --methods ours $WITH_ANOMALIB forward ours_nchw ours_cl --tag "${DEVICE}_lite0"
stage fullres 90 $BENCH --setups r18 --fullres $FULL --methods loader ours ours_cache ours_resize forward \
  --tag "${DEVICE}_fullres"
stage tests 45 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_metrics.py -k "cuda"
stage metrics 45 python3 benchmarks/bench_metrics.py --device "$DEVICE" --skip-sklearn --repeat 1 $METRICS \
  --out-dir "$RES"
echo "=== done at $(( $(date +%s) - START )) s"
for f in "$RES"/pipeline_*.md; do [ -f "$f" ] && { echo "--- $f"; tail -n 8 "$f"; }; done
