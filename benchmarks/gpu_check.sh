#!/usr/bin/env bash
# The GPU check: run it once on a machine with a CUDA GPU before the course's jobs. It writes into the output folder
# 1. gpu_check.xml: the checks, `pytest -m gpu tests/gpu` (a resumed run bit-identical, `eval seg --run` on the GPU
#    prints the CPU's digits, no device sync between two log points, fp16 through the grad scaler, 1 vs 2 GPUs),
#    each with the GPU memory it allocated at most; pytest's summary is printed;
# 2. bench_*.json: the figures, `dlcvkit bench train/augment/infer` at the course's sizes (the engine's step vs a
#    bare loop, channels-last and torch.compile A/Bs, BYOL views, FCN8s/DeepLabv3 training and `predict seg`).
# It installs the test extras first when pytest is missing. Exit status 1 if a check or a benchmark failed.
#
#   benchmarks/gpu_check.sh              # into benchmarks/gpu_check/
#   benchmarks/gpu_check.sh --out DIR    # into DIR
#   benchmarks/gpu_check.sh --dry-run    # toy sizes on the CPU (the checks' cpu cases), into benchmarks/dry_run/
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # per DataLoader worker

dry_run=0
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --out) out="$2"; shift 2 ;;
    *) echo "gpu_check.sh: unknown option $1 (the options are --dry-run and --out DIR)" >&2; exit 2 ;;
  esac
done
python -c "import pytest, xdist" 2>/dev/null || python -m pip install -e ".[test]"

if [ "$dry_run" -eq 1 ]; then
  out="${out:-benchmarks/dry_run}"
  checks="not gpu and not slow"  # the same checks at toy sizes on the CPU
  device=(--device cpu)
  byol=(--task byol --model test_resnet --img-size 32 --batch-size 8 --precision bf16 --interval 1 --repeats 1
        --warmup 0 --workers 1)
  # float32: the CPU's bf16 transposed convolutions (FCN's upsampling) are 10x slower than its float32 ones
  seg=(--task seg --img-size 32 --batch-size 4 --precision fp32 --interval 1 --repeats 1 --warmup 0 --workers 0)
  fcn8s=test_resnet deeplabv3=test_resnet
  views=(--img-size 32 --batch-size 4 --workers 1 --batches-per-repeat 1 --repeats 1 --warmup 0)
  predict=(--images 2 --img-size 32 --batch-size 2 --workers 0 --precision bf16 --repeats 1 --warmup 0)
else
  python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null || {
    echo "gpu_check.sh: no CUDA device here; the dry run on the CPU is benchmarks/gpu_check.sh --dry-run" >&2; exit 2; }
  out="${out:-benchmarks/gpu_check}"
  checks="gpu"
  device=(--device cuda)
  byol=(--task byol --model resnet50 --img-size 128 --batch-size 256 --precision bf16 --interval 5 --repeats 3
        --warmup 1 --workers 8)
  seg=(--task seg --img-size 512 --batch-size 8 --precision bf16 --interval 5 --repeats 3 --warmup 1 --workers 8)
  fcn8s=vgg16 deeplabv3=resnet50
  views=(--img-size 128 --batch-size 256 --workers 8 --batches-per-repeat 8 --repeats 3 --warmup 1)
  # 257 images: P2's validation set, which the course gives 10 minutes
  predict=(--images 257 --img-size 512 --batch-size 16 --workers 8 --precision bf16 --repeats 1 --warmup 1)
fi
mkdir -p "$out"
cache="$(mktemp -d)"  # the benchmarks' synthetic data and scratch runs
trap 'rm -rf "$cache"' EXIT
failed=()

# -n 0: one process, the checks one after another on the device
python -m pytest -n 0 -p no:cacheprovider -m "$checks" -rs tests/gpu --junitxml "$out/gpu_check.xml" || failed+=(checks)

bench() {  # bench NAME COMMAND OPTIONS...: one benchmark's records into $out/bench_NAME.json
  local name="$1"; shift
  python -m dlcvkit bench "$@" --json "$out/bench_$name.json" --overwrite || failed+=("$name")
}
bench byol_step train "${byol[@]}" --cache "$cache"
bench byol_channels_last train "${byol[@]}" --channels-last --cache "$cache"
bench augment augment "${views[@]}" "${device[@]}"
bench seg_fcn8s train "${seg[@]}" --segmenter fcn8s --model "$fcn8s" --cache "$cache"
bench seg_deeplabv3 train "${seg[@]}" --segmenter deeplabv3 --model "$deeplabv3" --cache "$cache"
bench predict_fcn8s infer --segmenter fcn8s --model "$fcn8s" "${predict[@]}" --cache "$cache"
bench predict_deeplabv3 infer --segmenter deeplabv3 --model "$deeplabv3" "${predict[@]}" --cache "$cache"
bench byol_compile train "${byol[@]}" --compile --cache "$cache"  # last: its compilation takes the longest

if [ "${#failed[@]}" -gt 0 ]; then
  echo "gpu_check.sh: failed: ${failed[*]} (the others' results are in $out)" >&2
  exit 1
fi
echo "gpu_check.sh: every check passed; the figures are in $out/bench_*.json"
