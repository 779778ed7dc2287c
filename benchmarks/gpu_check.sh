#!/usr/bin/env bash
# One prepared check for a lent GPU machine (no TensorRT, no internet, no pip needed).
#
#   OUT=/some/empty/dir PYTHONPATH=$PWD bash benchmarks/gpu_check.sh      # from the repository root
#
# Steps (each under its own timeout; total well under 6 minutes on an H200 host):
#   1. the GPU-marked tests: pytest -m "gpu or tensorrt" (TensorRT tests skip with their reason)
#   2. a tiny digits run (bundled data, no shared datasets) and its fused ONNX export
#   3. `metaerr-edge bench` on it: ONNX Runtime CPU + torch on CUDA, eager and CUDA graphs,
#      host latency and device compute time (CUDA events)
#   4. the latency benchmark's GPU variant, short (torch eager vs CUDA graphs, base vs fused)
# Without CUDA (torch.cuda.is_available() is False) steps 3-4 run their CPU part only and say why.
#
# Writes at most 7 files under $OUT:
#   gpu_check.log                              everything printed below (tee'd)
#   bench/bench.{json,md,png}, bench/bench_device.png
#   latency_gpu.json, latency_gpu.md
# Exit status: 0 when every step that could run passed, 1 otherwise.

set -u -o pipefail

OUT="${OUT:?set OUT to the folder the results go to}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
export PYTHONPATH="${PYTHONPATH:-$PWD}"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/metaerr_gpu_check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
FAILED=()

say() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

# step NAME SECONDS CMD...: run CMD under a timeout, tee its output to the log, record a failure.
step() {
    local name="$1" limit="$2"
    shift 2
    say "== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=$?
    say "== $name: exit $rc after $((SECONDS - t0))s"
    if [ "$rc" -ne 0 ]; then FAILED+=("$name (exit $rc)"); fi
    return "$rc"
}

say "repo $(pwd), OUT=$OUT, work dir $WORK"
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import importlib.util, platform
import torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA build", torch.version.cuda,
      "| cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu:", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
for mod in ("onnx", "onnxruntime", "tensorrt", "cupy", "cuda", "onnxscript", "matplotlib", "tqdm"):
    print(f"  {mod}: {'present' if importlib.util.find_spec(mod) else 'absent'}")
import onnxruntime as ort
print("onnxruntime providers:", ort.get_available_providers())
EOF

if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    CUDA=1
else
    CUDA=0
    say "torch.cuda.is_available() is False: the CUDA parts of steps 3-4 are skipped (their CPU parts still run)"
fi

# 1. GPU-marked tests.
step "pytest gpu/tensorrt" 180 "$PY" -m pytest -m "gpu or tensorrt" -q -rs -p no:cacheprovider tests

# 2. A tiny digits run and its export (CPU: a few seconds on a many-core host).
if step "train digits" 150 "$PY" -m metaerr_edge.cli train --dataset digits --epochs 3 --meta-epochs 5 --folds 2 \
        --meta-modes probs --quiet -o "$WORK/run" \
   && step "export" 60 "$PY" -m metaerr_edge.cli export "$WORK/run" -o "$WORK/model.onnx"; then
    # 3. The bench command.
    if [ "$CUDA" -eq 1 ]; then
        step "bench torch cuda (+ CUDA graphs) vs onnxruntime cpu" 150 "$PY" -m metaerr_edge.cli bench "$WORK/model.onnx" \
            --backend onnxruntime,torch --run "$WORK/run" --device cuda --cuda-graphs --batch-sizes 1,8,32 \
            --warmup-s 0.2 --duration-s 1 --min-iters 10 --interleave 3 --quiet -o "$OUT/bench"
    else
        say "bench on CUDA skipped: no CUDA device; running the CPU bench instead (onnxruntime, torch cpu)"
        step "bench cpu" 120 "$PY" -m metaerr_edge.cli bench "$WORK/model.onnx" --backend onnxruntime,torch \
            --run "$WORK/run" --batch-sizes 1,8 --warmup-s 0.05 --duration-s 0.3 --min-iters 10 --interleave 2 --quiet -o "$OUT/bench"
    fi
else
    say "bench skipped: the run or its export failed (see above)"
fi

# 4. The latency benchmark's GPU variant (small_cnn only, short timings).
if [ "$CUDA" -eq 1 ]; then
    if step "latency.py --device cuda" 150 "$PY" benchmarks/latency.py --device cuda --archs small_cnn --quick \
            --quiet --no-readme --out "$WORK/latency"; then
        cp "$WORK/latency/latency_gpu_quick.json" "$OUT/latency_gpu.json"
        cp "$WORK/latency/latency_gpu_quick.md" "$OUT/latency_gpu.md"
    fi
else
    say "latency.py GPU variant skipped: torch.cuda.is_available() is False"
fi

say "files in OUT: $(cd "$OUT" && find . -type f | sort | tr '\n' ' ')"
if [ "${#FAILED[@]}" -gt 0 ]; then
    say "FAILED: ${FAILED[*]}"
    exit 1
fi
say "all steps that could run passed"
