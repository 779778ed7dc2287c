"""Train a base classifier + MetaErr, evaluate it, export ONE fused ONNX graph and check parity.

The whole training side of metaerr-edge in one script:

1. ``train_run``: a base classifier (small CNN) and its MetaErr meta-model, trained on error
   labels the base did not train on (k-fold cross-fitting by default; ``--fast``: one held-out split);
2. ``evaluate_run``: MetaErr against the baselines on the test split (the table below);
3. ``export_run``: base + meta-model fused into one ONNX graph (outputs label, probs,
   failure_score, defer; the deployment contract rides inside the file);
4. ``verify_run``: ONNX Runtime against PyTorch on test images (labels, scores, defer decisions);
5. ``--dump-frames DIR``: test images written as PNG files, the camera stand-in for
   ``examples/edge_loop.py``.

Run (from the repository root)::

    python examples/train_and_export.py                          # digits, about 15-45 s on a 2-core shared x86 VM
    python examples/train_and_export.py --dump-frames frames     # + 64 test images as PNG (same time)
    python examples/train_and_export.py --root ../shared/datasets --dataset fashion-mnist
    python examples/train_and_export.py --fast                   # tiny, for the tests: about 10-30 s on the same VM

(On digits ``--fast`` is hardly quicker than the default: 18 s vs 20 s measured, of which about
5 s is Python start-up and the torch / onnx imports.)

Expected output (``--dump-frames frames``, digits defaults, a 2-core shared x86 VM, torch 2.14.1 CPU,
onnxruntime 1.32.0; numbers vary between machines)::

    trained small_cnn + MetaErr[probs] on digits (crossfit error labels): test accuracy 0.9861, 31 errors among 1294 meta-train labels, 7.2 s

    digits / small_cnn: test n=359, accuracy 0.9861, error rate r=0.0139 (a random score has AUPR-Err about r)

    | score | AUROC [95% CI] | AUPR-Err | AUPR-Succ | FPR@95 | AURC‰ [95% CI] | E-AURC‰ | AUGRC‰ | risk@90% | cov@2% |
    |---|---|---|---|---|---|---|---|---|---|
    | metaerr[probs] | 0.9802 [0.957, 1.000] | 0.4971 | 0.9997 | 0.0000 | 0.38 [0.01, 1.08] | 0.28 | 0.37 | 0.0000 | 1.0000 |
    | msp | 0.9780 [0.949, 1.000] | 0.5035 | 0.9997 | 0.2000 | 0.41 [0.01, 1.14] | 0.31 | 0.40 | 0.0000 | 1.0000 |
    | entropy | 0.9802 [0.959, 1.000] | 0.5526 | 0.9997 | 0.0000 | 0.38 [0.00, 1.06] | 0.28 | 0.37 | 0.0000 | 1.0000 |
    ...
    | doctor-gini | 0.9825 [0.961, 1.000] | 0.5738 | 0.9998 | 0.0000 | 0.34 [0.00, 1.01] | 0.25 | 0.34 | 0.0000 | 1.0000 |
    ...
    | trustscore | **0.9960 [0.987, 1.000]** | 0.8333 | 0.9999 | 0.0000 | **0.15 [0.00, 0.49]** | 0.06 | 0.15 | 0.0000 | 1.0000 |
    | confidnet | 0.9672 [0.924, 0.999] | 0.4798 | 0.9995 | 0.4000 | 0.57 [0.03, 1.60] | 0.47 | 0.55 | 0.0031 | 1.0000 |

    exported runs/digits/model.onnx (400.7 KiB, opset 18, dynamo exporter, 3.5 s); defer threshold 0.4470 (coverage, target coverage 0.9)

    ### Parity PASSED: `model.onnx` (ONNX Runtime CPUExecutionProvider) vs PyTorch

    - inputs: 359 per batch size, batch sizes [1, 7, 64]
    - labels: 100.0000% agree (0 mismatches)
    - failure score: max |diff| 1.49e-07 (atol 1e-05)
    - probs: max |diff| 4.77e-07
    - defer at threshold 0.447043: 100.0000% agree (0 mismatches; 0 boundary cases within atol of the threshold, 0 of them flipped)
    ...
    run folder: runs/digits
    metrics:    runs/digits/metrics.md  runs/digits/metrics.json  runs/digits/risk_coverage.png
    model:      runs/digits/model.onnx
    frames:     frames (64 PNG test images)
    total 14.3 s

    (The script's "total 14.3 s" leaves out Python start-up and imports: the whole command took
    20.2 s of wall time and 26.6 s of CPU time. On 359 test digits with 5 errors, MetaErr[probs]
    does not win: trustscore ranks best on AUROC and AURC, doctor-gini is ahead of MetaErr on
    AUROC, AUPR-Err and AURC, entropy ties it on AUROC and AURC and beats it on AUPR-Err, and MSP,
    behind it on AUROC and AURC, beats it on AUPR-Err (0.5035 vs 0.4971). None of these differences
    means much: every score's confidence interval overlaps the others. Digits is a smoke test; use
    Fashion-MNIST for a comparison that means something.)

Then run the fused graph without torch: ``python examples/edge_loop.py runs/digits/model.onnx frames``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from metaerr_edge import (
    BaseConfig,
    DataConfig,
    MetaConfig,
    Run,
    RunConfig,
    evaluate_run,
    export_run,
    train_run,
    verify_run,
    write_report,
)

FAST_SCORES = ["msp", "entropy", "doctor-gini"]  # cheap baselines; the full run evaluates every registered one


def dump_frames(run: Run, folder: Path, n: int) -> Path:
    """Write the first ``n`` test images as PNG files named ``frame_0000_label-3.png``."""
    from PIL import Image

    images, labels = run.split("test")
    folder.mkdir(parents=True, exist_ok=True)
    for i, (img, y) in enumerate(zip(images[:n], labels[:n])):
        pixels = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)  # CHW -> HW or HWC
        Image.fromarray(np.ascontiguousarray(pixels)).save(folder / f"frame_{i:04d}_label-{int(y)}.png")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="digits", help="digits (bundled), mnist, fashion-mnist, cifar10, ... (default: %(default)s)")
    ap.add_argument("--root", default=None, help="dataset folder for the torchvision datasets, e.g. ../shared/datasets")
    ap.add_argument("--out", default=None, help="run folder (default: runs/<dataset>)")
    ap.add_argument("--epochs", type=int, default=10, help="base-model epochs (default: %(default)s)")
    ap.add_argument("--meta-mode", default="probs", help="MetaErr input: probs, image, image+probs, mentor (default: %(default)s)")
    ap.add_argument("--dump-frames", type=Path, default=None, metavar="DIR", help="write test images as PNG into DIR")
    ap.add_argument("--n-frames", type=int, default=64, help="how many frames --dump-frames writes (default: %(default)s)")
    ap.add_argument("--fast", action="store_true", help="tiny run for tests: 1 epoch, held-out labels, cheap baselines")
    args = ap.parse_args()

    out = Path(args.out or f"runs/{args.dataset}")
    if args.fast:
        config = RunConfig(DataConfig(args.dataset, args.root, max_pool=2000, max_test=500), BaseConfig(epochs=1),
                           MetaConfig(modes=(args.meta_mode,), labels="heldout", epochs=2))
    else:
        config = RunConfig(DataConfig(args.dataset, args.root), BaseConfig(epochs=args.epochs), MetaConfig(modes=(args.meta_mode,)))
    t0 = time.perf_counter()

    run = train_run(config, out, progress=not args.fast)
    print(f"trained {config.base.arch} + MetaErr[{args.meta_mode}] on {config.data.dataset} ({config.meta.labels} error labels): "
          f"test accuracy {run.summary['test_accuracy']:.4f}, {run.summary['meta_train_errors']} errors among "
          f"{run.summary['meta_train_n']} meta-train labels, {run.summary['train_seconds']:.1f} s")

    scores = [f"metaerr[{args.meta_mode}]", *FAST_SCORES] if args.fast else None
    report = evaluate_run(run, scores, n_boot=100 if args.fast else 1000, progress=False)
    paths = write_report(report, run.path)
    print()
    print(report.to_markdown())

    # The exporter: dynamo (torch.export) by default; --fast uses the ~10x quicker TorchScript one.
    exported = export_run(run, run.path / "model.onnx", dynamo=not args.fast)
    threshold = exported.contract.threshold
    print(f"exported {exported.path} ({exported.size_bytes / 1024:.1f} KiB, opset {exported.opset}, "
          f"{exported.exporter} exporter, {exported.seconds:.1f} s); defer threshold {threshold.value:.4f} "
          f"({threshold.method}, target coverage {threshold.target_coverage})")

    parity = verify_run(exported.path, run, **({"n": 64, "batch_sizes": (1, 16)} if args.fast else {}))
    print()
    print(parity.to_markdown())
    if not parity.passed:
        raise SystemExit(f"parity FAILED for {exported.path}: see the table above")

    print(f"run folder: {run.path}")
    print(f"metrics:    {paths['md']}  {paths['json']}  {paths['png']}")
    print(f"model:      {exported.path}")
    if args.dump_frames is not None:
        frames = dump_frames(run, args.dump_frames, args.n_frames)
        print(f"frames:     {frames} ({min(args.n_frames, len(run.split('test')[1]))} PNG test images)")
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
