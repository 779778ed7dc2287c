"""``metaerr-edge train``: base model + MetaErr into a run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metaerr_edge.config import add_config_options, add_preset_option, config_from_args
from metaerr_edge.data import available_sources
from metaerr_edge.errors import ConfigError
from metaerr_edge._fileio import dumps_json
from metaerr_edge.options import positive_int


def add_train_options(p: argparse.ArgumentParser, modes: tuple[str, ...] | None = None) -> None:
    """The options of ``train`` (and ``demo``, which trains ``modes``), one per field of
    :class:`~metaerr_edge.config.RunConfig`. Parsing them imports no training library."""
    add_config_options(p, defaults=None if modes is None else {"meta.modes": modes},
                       helps={"data.dataset": f"one of {available_sources()}"})
    p.add_argument("--quiet", action="store_true", help="no progress bars (they are drawn on a terminal only)")


def check_run_folder(out: str) -> Path:
    """Refuse an ``-o`` that is an existing file before any training starts."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"-o {out!r} is an existing file; a run is a folder. Pass a folder path such as runs/mine")
    return path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a base classifier and its MetaErr meta-model into a run folder")
    add_train_options(p)
    add_preset_option(p)
    p.add_argument("-o", "--out", default="runs/latest", help="run folder to write (default: %(default)s)")
    p.add_argument("--base-from", metavar="RUN", default=None,
                   help="reuse the base (and mentor) of this run folder, trained with the same data, base, seed and "
                        "error-label options: only the meta-models are trained")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="save the base's training state after every epoch (hidden .<folder>.resume/ beside -o, removed "
                        "when the run is written); the same command again goes on from the last finished epoch to the "
                        "same weights. Single process (not with --nproc)")
    p.add_argument("--nproc", type=positive_int, default=1,
                   help="train data-parallel in N processes (DistributedDataParallel: gloo on CPU, nccl on CUDA with one "
                        "GPU each): launches `torchrun --standalone --nproc_per_node N -m metaerr_edge.cli train ...`; "
                        "for several nodes run torchrun yourself (default: %(default)s)")
    return p


def run(args: argparse.Namespace) -> int:
    from metaerr_edge.models import distributed

    from metaerr_edge.pipeline import check_config, resume_state, train_run

    out = check_run_folder(args.out)
    config = config_from_args(args)
    if args.resume and args.nproc > 1:
        raise ConfigError(f"--resume keeps one process's training state; drop --nproc {args.nproc} or --resume")
    if args.nproc > 1 and not distributed.launched_by_torchrun():
        check_config(config)  # a bad architecture or a missing GPU is one line here, not N ranks' tracebacks
        return launch_torchrun(args.nproc, args._argv)
    dist = distributed.init_from_env(config.device)  # under torchrun: join the group (a no-op otherwise)
    try:
        run_ = train_run(config, out, progress=not args.quiet, base_from=args.base_from, resume=args.resume)
    except BaseException:
        if args.resume and (resume_state(out) / "base.pt").is_file():
            print(f"metaerr-edge train: the base's training state is kept in {resume_state(out)}; the same command "
                  "again goes on from its last finished epoch", file=sys.stderr)
        raise
    finally:
        distributed.shutdown()
    if dist.is_main:
        print(dumps_json({"run": str(run_.path), **run_.summary}, indent=2))
    return 0


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """Run this same command line under ``torchrun --standalone --nproc_per_node nproc``; its exit code."""
    import os
    import subprocess
    import sys

    rest = []
    skip = False
    for arg in argv:  # the same arguments without --nproc (each rank is one process of the group)
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "metaerr_edge.cli", *rest]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))  # the cores, shared out
    print(f"+ OMP_NUM_THREADS={env['OMP_NUM_THREADS']} torchrun {' '.join(cmd[3:])}", file=sys.stderr, flush=True)
    return subprocess.call(cmd, env=env)
