"""Give YOUR OWN pretrained PyTorch classifier a MetaErr failure score, without changing it.

``TinyLeNet`` below stands for any classifier you already have: it is defined here, not in the
metaerr-edge model registry, and trained by a plain PyTorch loop on half of the bundled digits.
From then on it is frozen. ``MetaErr`` treats it as a black box (image in, probabilities out):

1. ``MetaErr.fit(model, heldout_images, heldout_labels)`` labels the model's errors on data it
   never trained on and fits a small meta-model to predict them;
2. the failure score is evaluated against MSP (1 - max softmax) on a test split;
3. the defer threshold is set at 90% coverage on a calibration split;
4. ``MetaErr.fuse`` + ``export_onnx`` write one ONNX graph (label, probs, failure_score, defer)
   with its contract; ``open_session`` runs it with ONNX Runtime.

The model's weights are hashed before and after every step: they never change.

Run::

    python examples/bring_your_own_model.py          # about 10-30 s on a 2-core shared x86 VM
    python examples/bring_your_own_model.py --fast   # for the tests: also about 10-30 s there

Expected output (a 2-core shared x86 VM, torch 2.14.1 CPU, onnxruntime 1.32.0; numbers vary
between machines)::

    user model TinyLeNet (1898 parameters), trained on 898 digits, loaded from byom/tiny_lenet.pt: test accuracy 0.9631 (n=271)
    weights sha256 before MetaErr: bb9fdfc856078930
    MetaErr[probs] fitted on 449 held-out digits: meta-validation AUROC 1.0000 (best epoch 2)
    weights sha256 after MetaErr.fit: bb9fdfc856078930 (unchanged)

    failure prediction on the test split (n=271, 10 errors; AURC x1000, lower is better):
    | score   | AUROC  | AUPR-Err | FPR@95 | AURC‰  | risk@90% |
    |---------|--------|----------|--------|--------|----------|
    | metaerr | 0.8418 | 0.2258   | 0.7000 |   7.37 | 0.0287   |
    | msp     | 0.9287 | 0.3331   | 0.6000 |   3.51 | 0.0123   |

    exported byom/model.onnx (39.1 KiB, dynamo exporter), defer threshold 0.4904 (calib coverage 0.899)
    open_session -> onnxruntime (CPUExecutionProvider): labels agree with the PyTorch model on 100.00% of the test split, failure score max |diff| 5.96e-08
    deferred 33 of 271 test images; accuracy on the accepted ones 0.9748 (all: 0.9631)
    weights sha256 after fuse + export: bb9fdfc856078930 (unchanged)
    total 6.1 s

    MSP wins here on every column, and that is the honest result: at the model's 3.7% test error
    rate, the 449 held-out digits hold only about 16 errors to learn from (and the 20%
    meta-validation part about 3, hence its AUROC of 1.0, which says nothing); with so few
    failures MetaErr cannot beat the model's own confidence (a sorted-probabilities head sees what
    MSP sees, and needs many errors to rank them better). Deferring 33 of 271 test images (12%)
    catches only 4 of the 10 errors: accuracy on the accepted ones rises from 0.9631 to 0.9748.
    The point of this example is the plumbing: any nn.Module, untouched. Compare the three weight
    hashes with each other, not with this docstring. (The script's "total 6.1 s" leaves out Python
    start-up and imports: the whole command took 12.4 s of wall time and 12.6 s of CPU time.)
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from metaerr_edge import (
    Contract,
    InputSpec,
    MetaErr,
    MetaFitConfig,
    Preprocess,
    error_labels,
    export_onnx,
    failure_metrics,
    load_dataset,
    open_session,
    threshold_for_coverage,
)


class TinyLeNet(nn.Module):
    """The user's own classifier for 8x8 gray digits: normalized image -> logits."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 8 x 4 x 4
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16 x 2 x 2
        )  # fmt: skip
        self.head = nn.Linear(16 * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


# The user's own preprocessing: uint8 -> [0, 1] -> (x - 0.5) / 0.5. MetaErr and the fused graph reuse it.
PREPROCESS = Preprocess(mean=[0.5], std=[0.5])


def pretrain(images: np.ndarray, labels: np.ndarray, epochs: int, seed: int = 0) -> TinyLeNet:
    """A plain PyTorch training loop, standing in for however the user's model was trained."""
    torch.manual_seed(seed)
    model = TinyLeNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = PREPROCESS(torch.from_numpy(images).float() / 255.0), torch.from_numpy(labels)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def predict_probs(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """The user's model on uint8 images: softmax probabilities (N x 10)."""
    return torch.softmax(model(PREPROCESS(torch.from_numpy(images).float() / 255.0)), 1).numpy()


def weights_sha256(model: nn.Module) -> str:
    """A fingerprint of every parameter and buffer: any change to the weights changes it."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", default="probs", help="MetaErr input: probs, image, image+probs (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=Path("byom"), help="output folder (default: %(default)s)")
    ap.add_argument("--fast", action="store_true", help="for tests: 2 pretraining epochs, 3 meta epochs, quick export")
    args = ap.parse_args()
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)

    # Splits: the user's training half, then data the model never saw (meta-train, calibration, test).
    data = load_dataset("digits").train
    perm = np.random.default_rng(0).permutation(len(data.labels))
    cut = np.cumsum([int(0.5 * len(perm)), int(0.25 * len(perm)), int(0.1 * len(perm))])
    user_train, heldout, calib, test = np.split(perm, cut)
    xs, ys = data.images, data.labels

    # 1. The user's pretrained model (trained here only so that the example is self-contained).
    model = pretrain(xs[user_train], ys[user_train], epochs=2 if args.fast else 15)
    ckpt = args.out / "tiny_lenet.pt"
    torch.save(model.state_dict(), ckpt)
    model = TinyLeNet()
    model.load_state_dict(torch.load(ckpt, weights_only=True))  # "pretrained": loaded from a file, frozen
    before = weights_sha256(model)
    test_probs = predict_probs(model, xs[test])
    test_error = error_labels(test_probs, ys[test])
    print(f"user model TinyLeNet ({sum(p.numel() for p in model.parameters())} parameters), trained on "
          f"{len(user_train)} digits, loaded from {ckpt}: test accuracy {1 - test_error.mean():.4f} (n={len(test)})")
    print(f"weights sha256 before MetaErr: {before}")

    # 2. MetaErr on held-out data: the model is only called, never changed.
    metaerr = MetaErr(mode=args.mode, preprocess=PREPROCESS, fit=MetaFitConfig(epochs=3 if args.fast else 30), progress=False)
    result = metaerr.fit(model, xs[heldout], ys[heldout])
    after_fit = weights_sha256(model)
    print(f"MetaErr[{args.mode}] fitted on {len(heldout)} held-out digits: meta-validation AUROC "
          f"{result.val_auroc:.4f} (best epoch {result.best_epoch})")
    print(f"weights sha256 after MetaErr.fit: {after_fit} ({'unchanged' if after_fit == before else 'CHANGED'})")

    # 3. Failure prediction on the test split, against MSP on the same model and split.
    scores = {"metaerr": metaerr.score(xs[test]), "msp": 1.0 - test_probs.max(1)}
    print(f"\nfailure prediction on the test split (n={len(test)}, {int(test_error.sum())} errors; "
          f"AURC x1000, lower is better):")
    print("| score   | AUROC  | AUPR-Err | FPR@95 | AURC‰  | risk@90% |")
    print("|---------|--------|----------|--------|--------|----------|")
    for name, s in scores.items():
        m = failure_metrics(s, test_error)
        print(f"| {name:<7} | {m['auroc']:.4f} | {m['aupr_error']:.4f}   | {m['fpr95tpr']:.4f} | "
              f"{1000 * m['aurc']:6.2f} | {m['risk@cov90']:.4f}   |")

    # 4. Threshold at 90% coverage on the calibration split, fuse, export with a contract, run.
    calib_scores = metaerr.score(xs[calib])
    calib_error = error_labels(predict_probs(model, xs[calib]), ys[calib])
    choice = threshold_for_coverage(calib_scores, calib_error, coverage=0.9)
    contract = Contract(
        input=InputSpec(name="image", layout="NCHW", dtype="float32", channels=1, height=8, width=8,
                        value_range=(0.0, 1.0), channel_order="GRAY", mean=(0.5,), std=(0.5,)),
        classes=tuple(str(c) for c in range(10)),
        threshold=choice.to_spec(),
        base={"arch": "TinyLeNet (user model, not in the registry)", "dataset": "digits",
              "accuracy": float(1 - test_error.mean())},
        meta={"mode": args.mode, "labels": "heldout"},
    )  # fmt: skip
    report = export_onnx(metaerr.fuse(threshold=choice.value), contract, args.out / "model.onnx", dynamo=not args.fast)
    print(f"\nexported {report.path} ({report.size_bytes / 1024:.1f} KiB, {report.exporter} exporter), "
          f"defer threshold {choice.value:.4f} (calib coverage {choice.achieved_coverage:.3f})")

    with open_session(report.path, backend="onnxruntime", intra_op_num_threads=1) as session:
        pred = session.predict(np.ascontiguousarray(xs[test].astype(np.float32) / 255.0))
    same_label = float(np.mean(pred.label == test_probs.argmax(1)))
    score_diff = float(np.max(np.abs(pred.failure_score - scores["metaerr"])))
    print(f"open_session -> {session.backend} ({', '.join(session.providers)}): labels agree with the "
          f"PyTorch model on {same_label:.2%} of the test split, failure score max |diff| {score_diff:.2e}")
    acc_accepted = float(np.mean(pred.label[~pred.defer] == ys[test][~pred.defer]))
    print(f"deferred {int(pred.defer.sum())} of {len(pred)} test images; accuracy on the accepted ones "
          f"{acc_accepted:.4f} (all: {1 - test_error.mean():.4f})")

    final = weights_sha256(model)
    print(f"weights sha256 after fuse + export: {final} ({'unchanged' if final == before else 'CHANGED'})")
    if not before == after_fit == final:
        raise SystemExit("the user's model weights changed: MetaErr must treat the model as a black box")
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
