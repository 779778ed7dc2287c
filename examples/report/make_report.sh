#!/usr/bin/env bash
# The example report of the demo run, end to end: train and evaluate on the embedded digits, the shift
# evaluation, export + calibrate, bench, the deferral trade-off, then one HTML page (and, where
# Chromium exists, a screenshot of its top). About two minutes on 2 CPU cores.
#
#   bash examples/report/make_report.sh [WORK_DIR]    (default: a fresh temporary folder)
#
# Writes examples/report/report.html and examples/report/report_top.png; the run, the model and the
# bench stay in WORK_DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d "${TMPDIR:-/tmp}/metaerr-edge-report.XXXXXX")}
mkdir -p "$work" && cd "$work"
echo "+ working in $work"

metaerr-edge demo --quiet -o runs/demo
metaerr-edge evaluate runs/demo --shift --quiet                 # test corruption families + OOD
metaerr-edge export runs/demo -o model.onnx
metaerr-edge calibrate model.onnx --run runs/demo --coverage 0.9
metaerr-edge bench model.onnx --base-alone --batch-sizes 1,8 --quiet -o bench
metaerr-edge tradeoff runs/demo --bench bench/bench.json --fallback-latency-ms 40 \
    --fallback-accuracy 0.995 --min-accuracy 0.99
metaerr-edge report runs/demo --bench bench/bench.json --model model.onnx -o "$here/report.html"

browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -n "$browser" ]; then
    "$browser" --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
        --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$work/chromium" \
        --window-size=1280,1500 --screenshot="$here/report_top.png" "file://$here/report.html" 2>/dev/null
    python3 -c "import sys; from PIL import Image; Image.open(sys.argv[1]).convert('RGB').quantize(256).save(sys.argv[1], optimize=True)" \
        "$here/report_top.png"  # a 256-colour palette: a third of the bytes, the same look
    echo "+ wrote $here/report_top.png"
else
    echo "+ no chromium here: no screenshot"
fi
