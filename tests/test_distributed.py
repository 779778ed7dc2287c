"""Data-parallel training: the rank helpers in a real 2-process gloo group, and a whole run through torchrun.

The torchrun test trains the same small digits run twice, in one process and in two, and checks the
two-process folder: one writer, complete files, out-of-fold error labels, and metrics within a stated
tolerance of the single process (DDP changes the arithmetic: each rank's BatchNorm sees half a batch
and draws its own augmentation, so the runs are close, not equal).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as td
import torch.multiprocessing as mp

from metaerr_edge.errors import ConfigError
from metaerr_edge.models import distributed

pytestmark = pytest.mark.skipif(not (td.is_available() and td.is_gloo_available()),
                                reason="this torch build has no gloo backend for CPU distributed training")

#: single-process vs 2-process run of the same seed: what the test allows.
ACCURACY_TOLERANCE = 0.03
AUROC_TOLERANCE = 0.06


def _worker(rank: int, world: int, store: str, results: dict) -> None:
    td.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        dist = distributed.current()
        out = {}
        for n in (7, 1, 0):  # uneven shards, a rank with no row, no rows at all
            rows = distributed.shard(n, dist)
            local = (np.arange(n)[rows, None] * 10.0).astype(np.float32) if len(rows) else None
            got = distributed.gather_rows(local, n, dist)
            out[n] = None if got is None else got.ravel().tolist()
        out["local_rows"] = distributed.local_rows(torch.arange(6), dist).tolist()
        try:
            distributed.main_first(dist, lambda: (_ for _ in ()).throw(ConfigError("the folder is locked")))
        except ConfigError as exc:
            out["error"] = str(exc)
        out["value"] = distributed.main_first(dist, lambda: f"written by rank {dist.rank}")
        results[rank] = out
    finally:
        td.destroy_process_group()


def test_rank_helpers_split_and_gather_without_dropping_or_duplicating(tmp_path: Path) -> None:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, str(tmp_path / "store"), results), nprocs=2, join=True)
        results = dict(results)
    for rank in (0, 1):
        r = results[rank]
        assert r[7] == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]  # every row once, in order, on every rank
        assert r[1] == [0.0] and r[0] is None
        assert r["error"] == "the folder is locked"  # rank 0's failure raised on every rank, not a hang
        assert r["value"] == "written by rank 0"  # what only rank 0 does, its result on every rank
    assert results[0]["local_rows"] == [0, 2, 4] and results[1]["local_rows"] == [1, 3, 5]


def test_single_process_helpers_are_no_ops() -> None:
    dist = distributed.current()
    assert not dist.enabled and dist.is_main and dist.to_dict() == {"world_size": 1, "backend": "none"}
    assert distributed.shard(3, dist).tolist() == [0, 1, 2]
    batch = torch.arange(5)
    assert distributed.local_rows(batch, dist) is batch
    assert distributed.init_from_env("cpu") == dist  # no torchrun in the environment


TRAIN = ["train", "--epochs", "8", "--meta-modes", "probs", "--folds", "3", "--meta-epochs", "10", "--quiet"]


def _cli(args: list[str], cwd: Path, torchrun: bool = False) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, *launcher, "-m", "metaerr_edge.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_torchrun_trains_one_run_folder_that_matches_the_single_process(tmp_path: Path) -> None:
    from metaerr_edge.evaluate import evaluate_run
    from metaerr_edge.pipeline import load_run

    single = _cli([*TRAIN, "-o", "single"], tmp_path)
    assert single.returncode == 0, single.stderr
    ddp = _cli([*TRAIN, "-o", "ddp"], tmp_path, torchrun=True)
    assert ddp.returncode == 0, ddp.stderr
    assert ddp.stdout.count('"run":') == 1  # rank 0 alone reports (and writes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]  # no second folder, no leftovers

    run = load_run(tmp_path / "ddp")  # opens only when every file matches its manifest: complete, one writer
    assert run.manifest["world_size"] == 2
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["summary"]["distributed"] == {
        "world_size": 2, "backend": "gloo"}
    ref = load_run(tmp_path / "single")

    # Error labels out of fold: each row's probabilities come from a fold model that did not train on it,
    # so they are wrong far more often than the final base (trained on every row) is on the same rows.
    p = run.predictions
    pool = run.split("pool")  # cross-fit labels: the meta-model learns on the whole pool
    is_error = p["meta_train_probs"].argmax(1) != pool[1]
    assert np.array_equal(is_error, p["meta_train_is_error"].astype(bool)) and len(is_error) == len(pool[1])
    from metaerr_edge.models.training import predict_probs

    seen_error = (predict_probs(run.base, pool[0], run.preprocess).argmax(1) != pool[1]).mean()
    assert is_error.mean() > 2 * seen_error
    assert abs(is_error.mean() - ref.predictions["meta_train_is_error"].mean()) < 0.05

    acc, ref_acc = run.summary["test_accuracy"], ref.summary["test_accuracy"]
    assert abs(acc - ref_acc) <= ACCURACY_TOLERANCE, (acc, ref_acc)
    auroc = evaluate_run(run, ["metaerr[probs]"], n_boot=10, progress=False).rows["metaerr[probs]"]["auroc"]
    ref_auroc = evaluate_run(ref, ["metaerr[probs]"], n_boot=10, progress=False).rows["metaerr[probs]"]["auroc"]
    assert abs(auroc - ref_auroc) <= AUROC_TOLERANCE, (auroc, ref_auroc)


def test_train_nproc_launches_torchrun_and_a_bad_value_is_refused(tmp_path: Path) -> None:
    launched = _cli(["train", "--epochs", "1", "--meta-modes", "probs", "--folds", "2", "--meta-epochs", "1", "--quiet",
                     "--nproc", "2", "-o", "run"], tmp_path)
    assert launched.returncode == 0, launched.stderr
    assert "torchrun --standalone --nproc_per_node=2 -m metaerr_edge.cli train" in launched.stderr
    assert "Grad strides" not in launched.stderr and launched.stdout.count('"run":') == 1
    assert "--nproc" not in launched.stderr.split("metaerr_edge.cli", 1)[1]
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["world_size"] == 2
    bad = _cli(["train", "--nproc", "0"], tmp_path)
    assert bad.returncode == 2 and "--nproc" in bad.stderr and "Traceback" not in bad.stderr
    # checked before torchrun starts: one line, not a traceback per rank and one from torchrun
    wrong = _cli(["train", "--nproc", "2", "--arch", "nope", "-o", "never"], tmp_path)
    assert wrong.returncode == 2 and wrong.stderr.count("error:") == 1 and "Traceback" not in wrong.stderr
    assert not (tmp_path / "never").exists()
