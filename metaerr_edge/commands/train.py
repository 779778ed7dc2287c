"""``metaerr-edge train``: base model + MetaErr into a run folder."""

from __future__ import annotations

import argparse
import json

from metaerr_edge.data import available_sources


def add_train_options(p: argparse.ArgumentParser, dataset: str = "digits", modes: str = "probs") -> None:
    from metaerr_edge.models import available_bases

    p.add_argument("--dataset", default=dataset, help=f"one of {available_sources()} (default: %(default)s)")
    p.add_argument("--root", default=None, help="data root for torchvision/ImageFolder datasets (e.g. ../shared/datasets)")
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset (needs a network)")
    p.add_argument("--arch", default="small_cnn", choices=available_bases(), help="base architecture (default: %(default)s)")
    p.add_argument("--meta-modes", default=modes,
                   help="comma list of probs,image,image+probs,mentor,mentor-features; the first is deployed (default: %(default)s)")  # fmt: skip
    p.add_argument("--meta-target", default="auto", choices=("auto", "error", "tcp"),
                   help="meta-model target: the error label (BCE), the base's true-class probability, or auto: "
                        "tcp for mentor-features, error otherwise (default: %(default)s)")  # fmt: skip
    p.add_argument("--mentor-arch", default="small_cnn", choices=available_bases(), help="mentor network of the mentor modes")
    p.add_argument("--labels", default="crossfit", choices=("crossfit", "heldout"), help="where error labels come from (default: %(default)s)")
    p.add_argument("--folds", type=int, default=5, help="cross-fitting folds (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=10, help="base-model epochs (default: %(default)s)")
    p.add_argument("--meta-epochs", type=int, default=30, help="meta-model epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--max-pool", type=int, default=None, help="subsample the training pool to this many images")
    p.add_argument("--max-test", type=int, default=None, help="subsample the test split to this many images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace):
    from metaerr_edge.pipeline import RunConfig

    return RunConfig(
        dataset=args.dataset, root=args.root, download=args.download, arch=args.arch,
        meta_modes=tuple(m.strip() for m in args.meta_modes.split(",") if m.strip()), labels=args.labels,
        meta_target=args.meta_target, mentor_arch=args.mentor_arch,
        folds=args.folds, epochs=args.epochs, meta_epochs=args.meta_epochs, batch_size=args.batch_size, lr=args.lr,
        max_pool=args.max_pool, max_test=args.max_test, seed=args.seed, device=args.device,
    )  # fmt: skip


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a base classifier and its MetaErr meta-model into a run folder")
    add_train_options(p)
    p.add_argument("-o", "--out", default="runs/latest", help="run folder to write (default: %(default)s)")
    return p


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.pipeline import train_run

    run_ = train_run(config_from_args(args), args.out, progress=not args.quiet)
    print(json.dumps({"run": str(run_.path), **run_.summary}, indent=2))
    return 0
