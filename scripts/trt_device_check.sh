#!/usr/bin/env bash
# On a Jetson (or any NVIDIA GPU with TensorRT + cuda-python): build fp16 and int8 engines
# from FeatherFace TensorRT bundles, check parity against each bundle's reference outputs
# (torch FP32, through the shared decoder), and print a latency table.
#
#   scripts/trt_device_check.sh FP16_BUNDLE [INT8_BUNDLE] [--dla-core N] [--runs N]
#
# Bundles come from `ffexport tensorrt --model M [--precision int8 --calib DIR] --jetpack X`
# (made anywhere; TensorRT is not needed for that). Each engine is written next to its
# bundle with a .json sidecar (TensorRT version, GPU, compute capability). Exit status is
# non-zero when any build or parity check fails.
set -euo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 1 ]] || usage

BUNDLES=()
DLA=()
RUNS=200
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dla-core) DLA=(--dla-core "$2"); shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) BUNDLES+=("$1"); shift ;;
  esac
done

PY=${PYTHON:-python3}
$PY - 2>/dev/null <<'EOF' || { echo "error: TensorRT / cuda-python not importable (JetPack ships TensorRT; pip install cuda-python)" >&2; exit 3; }
import tensorrt, sys
try:
    from cuda.bindings import runtime  # noqa: F401
except ImportError:
    from cuda import cudart  # noqa: F401
print(f"TensorRT {tensorrt.__version__}")
EOF
if command -v nvpmodel >/dev/null 2>&1; then
  echo "power mode: $(nvpmodel -q 2>/dev/null | head -1)" >&2
fi

STATUS=0
TABLE=()
for bundle in "${BUNDLES[@]}"; do
  bundle=${bundle%/}
  precision=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]+'/manifest.json'))['precision'])" "$bundle")
  engine="${bundle%.trtbundle}_${precision}.engine"
  log="${engine%.engine}.log"
  echo "== $bundle ($precision) -> $engine" >&2
  if $PY -m ffedge.export.trt_build "$bundle" --precision "$precision" -o "$engine" \
       "${DLA[@]}" --timing-cache "${bundle%.trtbundle}.timing.cache" --benchmark "$RUNS" \
       | tee "$log"; then
    lat=$(grep -o '"median_ms": [0-9.]*' "$log" | awk '{print $2}')
    p90=$(grep -o '"p90_ms": [0-9.]*' "$log" | awk '{print $2}')
    f1=$(grep -o 'F1 [0-9.]*' "$log" | head -1 | awk '{print $2}')
    TABLE+=("$(basename "$bundle")|$precision|${f1:-?}|${lat:-?}|${p90:-?}")
  else
    STATUS=1
    TABLE+=("$(basename "$bundle")|$precision|FAILED|-|-")
  fi
done

echo
echo "| bundle | precision | parity F1 vs torch FP32 | median ms | p90 ms |"
echo "|---|---|---|---|---|"
for row in "${TABLE[@]}"; do
  echo "| ${row//|/ | } |"
done
echo
echo "latency: one 1x3xHxW inference incl. host<->device copies, $RUNS runs after 20 warm-up"
exit $STATUS
