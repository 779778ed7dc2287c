#!/usr/bin/env bash
# One prepared check for a lent GPU machine (no TensorRT, no internet, no pip needed).
#
#   OUT=/some/empty/dir PYTHONPATH=$PWD bash benchmarks/gpu_check.sh [--dry-run] [--no-fullsize] [--pseudo]
#
# Steps (each under its own timeout; one call fits in 10 minutes of wall time):
#   1. the GPU-marked tests (pytest -m "gpu or tensorrt"; TensorRT tests skip with their reason) and the
#      2-process torchrun/gloo training test (tests/test_distributed.py: torch.distributed on this torch)
#   2. a tiny digits run, on CUDA with mixed precision (--amp auto), and its fused ONNX export
#   3. `metaerr-edge bench` on it: ONNX Runtime CPU + torch on CUDA, eager and CUDA graphs,
#      host latency and device compute time (CUDA events)
#   4. the latency benchmark's GPU variant, short (torch eager vs CUDA graphs, base vs fused)
#   5. the full-size failure-prediction run: benchmarks/failure_prediction.py --recipe gpu-full on CUDA,
#      one seed, for every dataset carried in .gpu_data/ (benchmarks/gpu_data.py pack writes it; a call
#      carries 64 MiB at most: the two cifar10 parts in one call, mnist + fashion-mnist in another),
#      writing the same JSON as the CPU benchmark under $OUT/results
#   6. (--pseudo; give it a call of its own, with --no-fullsize) the realistic pseudo-labelling protocol
#      at full size: benchmarks/pseudo_label.py --protocol realistic --arch resnet9 on CUDA for the
#      datasets carried, seeds 0-2, resuming from the committed results/pseudo_label_realistic_*.json
#      (copied into $OUT/results first), so each call adds the selector runs that fit its 540 s
# Without CUDA (torch.cuda.is_available() is False) steps 3-5 run their CPU part only and say why.
# --dry-run: every step that needs no CUDA, at toy sizes (step 5: 1 epoch on 1,200 images of each
#   dataset found in .gpu_data/ or ../shared/datasets), to check the script on a CPU machine first.
#
# Writes under $OUT: gpu_check.log (everything printed), bench/bench.{json,md,png}, bench/bench_device.png,
# latency_gpu.{json,md}, results/failure_prediction_<dataset>.json (+ its risk-coverage plot),
# with --pseudo results/pseudo_label_realistic_<setting>.json (+ its plots).
# Exit status: 0 when every step that could run passed, 1 otherwise.

DRY=0
FULLSIZE=1
PSEUDO=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        --no-fullsize) FULLSIZE=0 ;;
        --pseudo) PSEUDO=1 ;;
        *) echo "gpu_check.sh: unknown option $arg (expected --dry-run, --no-fullsize, --pseudo)" >&2; exit 2 ;;
    esac
done

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

if [ "$DRY" -eq 0 ] && "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    CUDA=1
    TRAIN_DEVICE=(--device cuda --amp auto)
else
    CUDA=0
    TRAIN_DEVICE=(--device cpu)
    say "no CUDA (or --dry-run): the CUDA parts of steps 2-5 are skipped (their CPU parts still run)"
fi

# 1. GPU-marked tests, and data-parallel training through torchrun (gloo, 2 processes on CPU).
step "pytest gpu/tensorrt" 180 "$PY" -m pytest -m "gpu or tensorrt" -q -rs -p no:cacheprovider tests
step "pytest distributed" 240 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_distributed.py

# 2. A tiny digits run and its export (CPU: a few seconds on a many-core host).
if step "train digits" 150 "$PY" -m metaerr_edge.cli train --dataset digits --epochs 3 --meta-epochs 5 --folds 2 \
        --meta-modes probs --quiet "${TRAIN_DEVICE[@]}" -o "$WORK/run" \
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

# The datasets this call carried (.gpu_data/), for steps 5 and 6.
DATA="$WORK/data"
FOUND=""
if [ "$FULLSIZE" -eq 1 ] || [ "$PSEUDO" -eq 1 ]; then
    if ls .gpu_data/*of*.npz >/dev/null 2>&1; then
        step "unpack .gpu_data" 120 "$PY" benchmarks/gpu_data.py unpack --archives .gpu_data --root "$DATA"
        FOUND=""
        [ -d "$DATA/MNIST" ] && FOUND="$FOUND mnist"
        [ -d "$DATA/FashionMNIST" ] && FOUND="$FOUND fashion-mnist"
        [ -d "$DATA/CIFAR10-jpeg" ] && FOUND="$FOUND cifar10"
        FOUND="${FOUND# }"
    elif [ "$DRY" -eq 1 ] && [ -d ../shared/datasets ]; then
        DATA=../shared/datasets
        FOUND="mnist"
    fi
fi

# 5. The full-size failure-prediction run, for the datasets this call carried.
if [ "$FULLSIZE" -eq 1 ]; then
    if [ -z "$FOUND" ]; then
        say "full-size run skipped: no dataset in .gpu_data/ (python benchmarks/gpu_data.py pack, then carry its parts)"
    elif [ "$CUDA" -eq 1 ]; then
        # shellcheck disable=SC2086
        step "failure_prediction.py --recipe gpu-full ($FOUND)" 540 "$PY" benchmarks/failure_prediction.py \
            --recipe gpu-full --device cuda --threads 8 --root "$DATA" --datasets $FOUND --seeds 0 \
            --out "$OUT/results" --readme "$WORK/README.md" --runs-dir "$WORK/runs" --quiet
    elif [ "$DRY" -eq 1 ]; then
        # shellcheck disable=SC2086
        step "failure_prediction.py dry run ($FOUND)" 540 "$PY" benchmarks/failure_prediction.py \
            --recipe gpu-full --device cpu --threads 2 --root "$DATA" --datasets $FOUND --seeds 0 \
            --max-pool 1200 --max-test 400 --epochs 1 --meta-epochs 2 --n-boot 20 \
            --out "$OUT/results" --readme "$WORK/README.md" --runs-dir "$WORK/runs" --quiet
    else
        say "full-size run skipped: it needs CUDA (torch.cuda.is_available() is False)"
    fi
fi

# 6. The realistic pseudo-labelling protocol (opt-in), resuming from the committed results.
if [ "$PSEUDO" -eq 1 ]; then
    SETTINGS=""
    for ds in $FOUND; do
        case "$ds" in
            mnist) SETTINGS="$SETTINGS mnist-100 mnist-1000" ;;
            fashion-mnist) SETTINGS="$SETTINGS fashion-mnist-1000 fashion-mnist-4000" ;;
            cifar10) SETTINGS="$SETTINGS cifar10-4000 cifar10-10000" ;;
        esac
    done
    SETTINGS="${SETTINGS# }"
    mkdir -p "$OUT/results"
    cp benchmarks/results/pseudo_label_realistic_*.json "$OUT/results/" 2>/dev/null || true
    if [ -z "$SETTINGS" ]; then
        say "pseudo-labelling skipped: no dataset in .gpu_data/"
    elif [ "$CUDA" -eq 1 ]; then
        # shellcheck disable=SC2086
        step "pseudo_label.py --protocol realistic ($SETTINGS)" 540 "$PY" benchmarks/pseudo_label.py --protocol realistic \
            --arch resnet9 --device cuda --threads 8 --root "$DATA" --settings $SETTINGS --seeds 0 1 2 --resume \
            --out "$OUT/results" --readme "$WORK/README.md"
    elif [ "$DRY" -eq 1 ]; then
        # shellcheck disable=SC2086
        step "pseudo_label.py dry run ($SETTINGS)" 300 "$PY" benchmarks/pseudo_label.py --protocol realistic \
            --device cpu --threads 2 --root "$DATA" --settings $SETTINGS --seeds 0 --rounds 1 --max-pool 300 \
            --max-test 200 --epochs 1 --min-steps 10 --meta-epochs 2 --folds 2 --selectors confidence metaerr-perclass \
            --out "$WORK/pseudo" --readme "$WORK/README.md"
    else
        say "pseudo-labelling skipped: it needs CUDA (torch.cuda.is_available() is False)"
    fi
fi

say "files in OUT: $(cd "$OUT" && find . -type f | sort | tr '\n' ' ')"
if [ "${#FAILED[@]}" -gt 0 ]; then
    say "FAILED: ${FAILED[*]}"
    exit 1
fi
say "all steps that could run passed"
