"""The device side: run the fused graph on a stream of frames; ACCEPT or DEFER each one.

RUNTIME ONLY: this script imports neither torch nor torchvision nor onnx (only numpy, pillow,
onnxruntime and, with ``--backend tensorrt``, TensorRT + cuda-python), and checks that at the end.
A folder of images stands in for the camera: its files are read in sorted order, one frame at a
time, and each goes through ``Session.predict`` on its own (batch 1), as a camera loop would.

Per frame it prints the label, the MetaErr failure score (higher = more likely wrong), the
decision at the threshold calibrated into the model file, and the latency of ``predict`` (file
decoding not included). The summary gives frames, deferral rate, mean/p50/p99 latency, the
backend actually used and every backend that was tried and failed (the fallback report). When the
file names carry the true class (``..._label-3.png``, as ``train_and_export.py --dump-frames``
writes them), it also prints the accuracy of accepted and of deferred frames.

Run (after ``python examples/train_and_export.py --dump-frames frames``)::

    python examples/edge_loop.py runs/digits/model.onnx frames                   # auto: TensorRT -> ORT CUDA -> ORT CPU; under 1 s on a 2-core shared x86 VM
    python examples/edge_loop.py runs/digits/model.onnx frames --backend onnxruntime
    python examples/edge_loop.py runs/digits/model.onnx frames --backend tensorrt --precision fp16   # Jetson

Expected output (64 frames from the digits model, a 2-core shared x86 VM without GPU, onnxruntime
1.32.0 CPU, ``--backend auto``; the whole command took 0.24 s)::

    model model.onnx: 10 classes, input NCHW float32 1x8x8, defer when failure_score > 0.4470 (coverage)
    backend onnxruntime on cpu (CPUExecutionProvider)
    frame    0 frame_0000_label-2.png       label=2            score=0.516  DEFER     0.413 ms
    frame    1 frame_0001_label-2.png       label=2            score=0.392  ACCEPT    0.158 ms
    frame    2 frame_0002_label-3.png       label=3            score=0.343  ACCEPT    0.106 ms
    frame    3 frame_0003_label-0.png       label=0            score=0.331  ACCEPT    0.094 ms
    frame    4 frame_0004_label-8.png       label=8            score=0.299  ACCEPT    0.092 ms
    ...
    frame   11 frame_0011_label-2.png       label=1            score=0.480  DEFER     0.129 ms
    ...
    summary: 64 frames, deferral rate 0.078 (5 deferred), latency mean 0.099 ms, p50 0.086 ms, p99 0.273 ms
    accuracy (labels from file names): all 0.984 of 64, accepted 1.000 of 59, deferred 0.800 of 5
    backend used: onnxruntime (CPUExecutionProvider)
    fallback: tensorrt unavailable: TensorRT is not importable (No module named 'tensorrt'). Install ...
    fallback: onnxruntime-cuda unavailable: onnxruntime 1.32.0 has no CUDAExecutionProvider (available: ...
    runtime-only check passed: none of torch, torchvision, onnx was imported

and on stderr, the library's one-line fallback warning (the ``fallback:`` lines above are this
script's full report, read from ``Session.fallback_report``)::

    running on backend 'onnxruntime' (CPUExecutionProvider) after 2 fallbacks: tensorrt (...), onnxruntime-cuda (...); reasons in full: Session.fallback_report (CLI: --verbose)

    (The one error among the 64 frames, frame 11, a 2 read as 1, is deferred; so are 4 frames
    the model got right, and every accepted frame is right. With 64 frames the p99 is set by the
    two slowest calls, chiefly the first frame's 0.413 ms; the p50, 0.086 ms, is the model's
    steady cost on this machine.)
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

from metaerr_edge import BackendUnavailable, find_images, load_images, open_session

FORBIDDEN = ("torch", "torchvision", "onnx")  # the training stack; a device needs none of it
LABEL_IN_NAME = re.compile(r"label-(\d+)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path, help="fused .onnx written by train_and_export.py")
    ap.add_argument("frames", type=Path, help="folder of images (the camera stand-in), read in sorted order")
    ap.add_argument("--backend", default="auto", help="auto, tensorrt, onnxruntime-cuda, onnxruntime (default: %(default)s)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "fp16"), help="TensorRT precision (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default: %(default)s)")
    ap.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    ap.add_argument("--quiet", action="store_true", help="print only the summary")
    ap.add_argument("--fast", action="store_true", help="for tests: at most 32 frames, summary only")
    args = ap.parse_args()
    if args.fast:
        args.max_frames, args.quiet = min(args.max_frames or 32, 32), True

    # Options go to the backends that take them. TensorRT gets cuda-python device memory explicitly
    # (memory="torch" would import PyTorch, which a device loop must not need).
    options: dict = {}
    if args.backend in ("auto", "onnxruntime", "onnxruntime-cuda"):
        options["intra_op_num_threads"] = args.threads
    if args.backend in ("auto", "tensorrt"):
        options.update(precision=args.precision, memory="cuda-python", max_batch=1)
    files = find_images([args.frames])[: args.max_frames]

    try:
        session = open_session(args.model, backend=args.backend, warmup=(1,), **options)
    except BackendUnavailable as exc:  # an explicit --backend that cannot run here: say why, no traceback
        raise SystemExit(f"backend {args.backend!r} cannot run here: {exc}") from None

    latencies, defers, truth, labels = [], [], [], []
    with session:
        contract = session.contract
        print(f"model {args.model.name}: {contract.num_classes} classes, input {contract.input.layout} "
              f"{contract.input.dtype} {contract.input.channels}x{contract.input.height}x{contract.input.width}, "
              f"defer when failure_score > {contract.threshold.value:.4f} ({contract.threshold.method})")
        print(f"backend {session.backend} on {session.device} ({', '.join(session.providers)})")
        for i, file in enumerate(files):
            frame, _ = load_images([file], contract)  # one camera frame, already in the contract's layout
            t0 = time.perf_counter()
            pred = session.predict(frame)
            ms = (time.perf_counter() - t0) * 1e3
            label, score, defer = int(pred.label[0]), float(pred.failure_score[0]), bool(pred.defer[0])
            latencies.append(ms)
            defers.append(defer)
            labels.append(label)
            match = LABEL_IN_NAME.search(file.name)
            truth.append(int(match.group(1)) if match else -1)
            if not args.quiet:
                print(f"frame {i:4d} {file.name:<28} label={contract.classes[label]:<12} "
                      f"score={score:.3f}  {'DEFER ' if defer else 'ACCEPT'}  {ms:7.3f} ms")
        backend, providers, fallback = session.backend, session.providers, session.fallback_report

    lat, defer_arr = np.asarray(latencies), np.asarray(defers)
    print(f"summary: {len(lat)} frames, deferral rate {defer_arr.mean():.3f} ({int(defer_arr.sum())} deferred), "
          f"latency mean {lat.mean():.3f} ms, p50 {np.percentile(lat, 50):.3f} ms, p99 {np.percentile(lat, 99):.3f} ms")
    truth_arr, label_arr = np.asarray(truth), np.asarray(labels)
    if (truth_arr >= 0).all():
        correct = label_arr == truth_arr

        def acc(mask: np.ndarray) -> str:
            return f"{correct[mask].mean():.3f} of {int(mask.sum())}" if mask.any() else "- of 0"

        print(f"accuracy (labels from file names): all {acc(np.ones_like(defer_arr))}, "
              f"accepted {acc(~defer_arr)}, deferred {acc(defer_arr)}")
    print(f"backend used: {backend} ({', '.join(providers)})")
    if fallback:
        for name, why in fallback:
            print(f"fallback: {name} unavailable: {why}")
    else:
        print("fallback: none (the first backend tried is running)")

    loaded = [m for m in FORBIDDEN if m in sys.modules]
    if loaded:
        raise SystemExit(f"edge_loop imported {loaded}: the device loop must run without the training stack")
    print(f"runtime-only check passed: none of {', '.join(FORBIDDEN)} was imported")


if __name__ == "__main__":
    main()
