#!/usr/bin/env bash
# The GPU check, `dlcvkit bench gpu`: run it once on a machine with one CUDA GPU (under 8 minutes) before the
# course's jobs; it writes gpu_check.json and gpu_check.md (the figures, the goals met, every part's status).
#
#   benchmarks/gpu_check.sh                      # full size, into benchmarks/
#   benchmarks/gpu_check.sh --out DIR            # into DIR
#   benchmarks/gpu_check.sh --dry-run            # toy sizes on the CPU, into benchmarks/dry_run/ (no GPU needed)
#   benchmarks/gpu_check.sh --skip byol_compile  # any other option goes to `dlcvkit bench gpu` (see its --help)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # per DataLoader worker; torch's own threads: --threads

out=""
mode=(--size full)
default_out=benchmarks
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) mode=(--size tiny --device cpu --budget 0); default_out=benchmarks/dry_run; shift ;;
    --out) out="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
out="${out:-$default_out}"
mkdir -p "$out"
exec python -m dlcvkit bench gpu "${mode[@]}" --json "$out/gpu_check.json" --md "$out/gpu_check.md" --overwrite \
  ${args[@]+"${args[@]}"}
