"""``metaerr-edge train``: base model + MetaErr into a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from metaerr_edge.commands._options import EPOCHS, add_fit_options, fold_count, name_list
from metaerr_edge.data import available_sources
from metaerr_edge.errors import ConfigError
from metaerr_edge._fileio import dumps_json

# Shown in --help only; the registries (metaerr_edge.models, metaerr_edge.meta) decide what is valid
# when the command runs (a test keeps these lines equal to the registries).
ARCH_HELP = "small_cnn, resnet18 (CIFAR stem), mobilenet_v3_small"
MODE_HELP = "probs, image, image+probs, mentor, mentor-features"


def add_train_options(p: argparse.ArgumentParser, dataset: str = "digits", modes: str = "probs") -> None:
    """The options of ``train`` (and ``demo``). Parsing them imports no training library."""
    p.add_argument("--dataset", default=dataset, help=f"one of {available_sources()} (default: %(default)s)")
    p.add_argument("--root", default=None, help="data root for torchvision/ImageFolder datasets (e.g. ../shared/datasets)")
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset (needs a network)")
    p.add_argument("--arch", default="small_cnn", help=f"base architecture: {ARCH_HELP} (default: %(default)s)")
    p.add_argument("--meta-modes", default=modes, type=name_list,
                   help=f"comma list of {MODE_HELP}; the first is deployed (default: {modes})")
    p.add_argument("--meta-target", default="auto", choices=("auto", "error", "tcp"),
                   help="meta-model target: the error label (BCE), the base's true-class probability, or auto: "
                        "tcp for mentor-features, error otherwise (default: %(default)s)")  # fmt: skip
    p.add_argument("--mentor-arch", default="small_cnn", help=f"mentor network of the mentor modes: {ARCH_HELP}")
    p.add_argument("--error-labels", default="crossfit", choices=("crossfit", "heldout"),
                   help="where the meta-model's error labels come from: k-fold cross-fitting or a held-out split "
                        "(default: %(default)s)")  # fmt: skip
    p.add_argument("--folds", type=fold_count, default=5, help="cross-fitting folds, >= 2 (default: %(default)s)")
    p.add_argument("--epochs", type=EPOCHS, default=10, help="base-model epochs (default: %(default)s)")
    p.add_argument("--meta-epochs", type=EPOCHS, default=30, help="meta-model epochs (default: %(default)s)")
    add_fit_options(p, pool_help="cap the training pool at this many images")


def config_from_args(args: argparse.Namespace):
    """The :class:`RunConfig` the options ask for (validated: unknown names raise ConfigError)."""
    from metaerr_edge.pipeline import RunConfig

    return RunConfig(
        dataset=args.dataset, root=args.root, download=args.download, arch=args.arch,
        meta_modes=tuple(args.meta_modes), labels=args.error_labels,
        meta_target=args.meta_target, mentor_arch=args.mentor_arch,
        folds=args.folds, epochs=args.epochs, meta_epochs=args.meta_epochs, batch_size=args.batch_size, lr=args.lr,
        max_pool=args.max_pool, max_test=args.max_test, seed=args.seed, device=args.device,
    )  # fmt: skip


def check_run_folder(out: str) -> Path:
    """Refuse an ``-o`` that is an existing file before any training starts."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"-o {out!r} is an existing file; a run is a folder. Pass a folder path such as runs/mine")
    return path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a base classifier and its MetaErr meta-model into a run folder")
    add_train_options(p)
    p.add_argument("-o", "--out", default="runs/latest", help="run folder to write (default: %(default)s)")
    return p


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.pipeline import train_run

    out = check_run_folder(args.out)
    run_ = train_run(config_from_args(args), out, progress=not args.quiet)
    print(dumps_json({"run": str(run_.path), **run_.summary}, indent=2))
    return 0
