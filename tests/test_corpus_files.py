"""Files under faults: run folders written whole, one writer per target, stale temporaries, umask.

A corpus of simulated faults (a full disk, a read-only folder, Ctrl-C, ``kill -9``, a second
writer) at every step of every writer of a file set: train's run folder, calibrate's model file,
evaluate's metrics, bench's and tradeoff's outputs. Each case must end in a typed error or the
correct result; none may crash with a traceback, leave a mix of old and new files, or hang.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import metaerr_edge._fileio as mio
from metaerr_edge.cli import main
from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge._fileio import (
    MANIFEST,
    atomic_write_text,
    lock_file,
    path_lock,
    replace_files,
    replace_folder,
    write_json,
)
from metaerr_edge.pipeline import Run, RunConfig, load_run, train_run

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the fast legacy exporter, on purpose

TINY = {"data": {"max_pool": 200, "max_test": 100}, "base": {"epochs": 1}, "meta": {"modes": ["probs"], "folds": 2, "epochs": 1}}
TRAIN_ARGV = ["train", "--epochs", "1", "--meta-epochs", "1", "--folds", "2", "--meta-modes", "probs",
              "--max-pool", "200", "--max-test", "100", "--quiet"]
BENCH_FAST = ["--backend", "onnxruntime", "--batch-sizes", "1", "--threads", "1", "--warmup-s", "0",
              "--duration-s", "0.01", "--min-iters", "3", "--interleave", "1", "--quiet"]
ENOSPC = (errno.ENOSPC, "No space left on device")


def tiny(seed: int = 0) -> RunConfig:
    return RunConfig.from_dict({**TINY, "seed": seed})


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative names)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """What sits beside ``folder`` besides it and its lock: temporaries nobody removed."""
    return sorted(n for n in os.listdir(folder.parent) if n not in (folder.name, f".{folder.name}.lock"))


def assert_unlocked(target: Path) -> None:
    with path_lock(target):
        pass


def one_line(err: str, *needles: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny real run (seed 0): the 'old run' every fault case starts from (a copy of it)."""
    return train_run(tiny(0), tmp_path_factory.mktemp("trained") / "run", progress=False).path


@pytest.fixture(scope="module")
def trained_other(tmp_path_factory) -> Path:
    """Another training (seed 1), for the issue's half-old, half-new folder."""
    return train_run(tiny(1), tmp_path_factory.mktemp("other") / "run", progress=False).path


@pytest.fixture()
def old_run(trained: Path, tmp_path: Path) -> Path:
    path = tmp_path / "runs" / "run"
    shutil.copytree(trained, path)
    return path


@pytest.fixture(scope="module")
def report(trained: Path):
    from metaerr_edge.evaluate import evaluate_run

    return evaluate_run(load_run(trained), ["msp", "metaerr[probs]"], n_boot=10, progress=False)


@pytest.fixture(scope="module")
def exported(trained: Path, tmp_path_factory) -> Path:
    from metaerr_edge.fuse.export import export_run

    return export_run(load_run(trained), tmp_path_factory.mktemp("exported") / "model.onnx", dynamo=False).path


# ------------------------------------------------------------------ fault injection


class Once:
    """Raise ``error`` the ``nth`` time ``when(*args)`` holds for a call of the wrapped function."""

    def __init__(self, real, error: BaseException, when=lambda *a: True, nth: int = 1) -> None:
        self.real, self.error, self.when, self.left, self.fired = real, error, when, nth, False

    def __call__(self, *args, **kwargs):
        if not self.fired and self.when(*args):
            self.left -= 1
            if self.left == 0:
                self.fired = True
                raise self.error
        return self.real(*args, **kwargs)


def _in_run_tmp(dst) -> bool:  # a file moved in inside train's hidden temporary run folder
    parent = Path(dst).parent.name
    return parent.startswith(".run.") and parent.endswith(".tmp")


def _renamed_in(name: str):
    return lambda src, dst, *a: _in_run_tmp(dst) and Path(dst).name == name


def _fd_named(suffix: str):
    """True for an fd whose file name (through /proc) ends with ``suffix`` or is its temporary."""
    def when(fd, *a) -> bool:
        try:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return False
        return name == suffix or name.startswith(f".{suffix}.")
    return when


def _fallback(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(mio, "_exchange", lambda a, b: False)  # a kernel without RENAME_EXCHANGE: two renames


TRAIN_FAULTS = {
    # each installs a fault that raises ``error`` at one step of train_run's writing
    "torch.save meta_probs.pt": lambda mp, e: mp.setattr(torch, "save", Once(torch.save, e)),
    "torch.save base.pt": lambda mp, e: mp.setattr(torch, "save", Once(torch.save, e, nth=2)),
    "np.savez splits.npz": lambda mp, e: mp.setattr(np, "savez", Once(np.savez, e)),
    "np.savez predictions.npz": lambda mp, e: mp.setattr(np, "savez", Once(np.savez, e, nth=2)),
    "fsync config.json": lambda mp, e: mp.setattr(os, "fsync", Once(os.fsync, e, _fd_named("config.json"))),
    "rename meta_probs.pt in": lambda mp, e: mp.setattr(os, "replace", Once(os.replace, e, _renamed_in("meta_probs.pt"))),
    "rename config.json in": lambda mp, e: mp.setattr(os, "replace", Once(os.replace, e, _renamed_in("config.json"))),
    "hash for the manifest": lambda mp, e: mp.setattr(mio, "file_sha256", Once(mio.file_sha256, e, nth=3)),
    "rename manifest.json in": lambda mp, e: mp.setattr(os, "replace", Once(os.replace, e, _renamed_in(MANIFEST))),
    "swap (exchange)": lambda mp, e: mp.setattr(mio, "_exchange", Once(mio._exchange, e)),
    "swap: old run aside (fallback)": lambda mp, e: (_fallback(mp), mp.setattr(
        os, "rename", Once(os.rename, e, lambda src, dst: Path(dst).name.endswith(".old")))),
    "swap: new run in (fallback)": lambda mp, e: (_fallback(mp), mp.setattr(
        os, "rename", Once(os.rename, e, lambda src, dst: Path(src).name.endswith(".tmp") and Path(dst).name == "run"))),
}
ERRORS = {"disk full": lambda: OSError(*ENOSPC), "Ctrl-C": KeyboardInterrupt}


@pytest.mark.parametrize("error", list(ERRORS))
@pytest.mark.parametrize("step", list(TRAIN_FAULTS))
def test_a_failed_training_leaves_the_old_run_whole(old_run: Path, step: str, error: str) -> None:
    before = snapshot(old_run)
    with pytest.MonkeyPatch.context() as mp:
        TRAIN_FAULTS[step](mp, ERRORS[error]())
        with pytest.raises((OSError, KeyboardInterrupt)) as info:
            train_run(tiny(1), old_run, progress=False)
    if error == "disk full":  # the CLI's one line names the run folder, not a hidden temporary
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(old_run), info.value
    else:
        assert info.type is KeyboardInterrupt
    assert snapshot(old_run) == before  # the old run, every file of it: never a mix
    assert Run(old_run).manifest is not None and leftovers(old_run) == []
    assert_unlocked(old_run)


@pytest.mark.parametrize("step", ["torch.save base.pt", "rename manifest.json in", "swap (exchange)"])
def test_a_failed_first_training_leaves_nothing(tmp_path: Path, step: str) -> None:
    target = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        TRAIN_FAULTS[step](mp, OSError(*ENOSPC))
        if step == "swap (exchange)":  # nothing to exchange with: the plain rename fails instead
            mp.setattr(os, "rename", Once(os.rename, OSError(*ENOSPC), lambda s, d: Path(d).name == "run"))
        with pytest.raises(OSError, match="No space"):
            train_run(tiny(1), target, progress=False)
    assert os.listdir(tmp_path) == []  # not even the lock: its holder removes it on release


def test_the_issue_half_old_half_new_folder_is_refused(old_run: Path, trained_other: Path) -> None:
    shutil.copyfile(trained_other / "meta_probs.pt", old_run / "meta_probs.pt")  # what the old writer left
    with pytest.raises(DataError, match=r"meta_probs\.pt is not the file written with it.*re-train"):
        Run(old_run)


MANIFEST_DAMAGE = {
    "a file changed": (lambda p: p.joinpath("predictions.npz").write_bytes(b"x" * 10), r"predictions\.npz is not the file"),
    "a file missing": (lambda p: p.joinpath("base.pt").unlink(), r"base\.pt is missing"),
    "an extra run file": (lambda p: shutil.copyfile(p / "meta_probs.pt", p / "meta_image.pt"), r"meta_image\.pt is not listed"),
    "config.json edited": (lambda p: p.joinpath("config.json").write_text("{}"), r"config\.json is not the file"),
    "manifest malformed": (lambda p: p.joinpath(MANIFEST).write_text("{not json"), "unreadable or malformed"),
    "manifest truncated": (lambda p: p.joinpath(MANIFEST).write_text('{"files": {"base.pt": {}}}'), "malformed"),
}


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE))
def test_a_folder_that_does_not_match_its_manifest_is_refused(old_run: Path, damage: str) -> None:
    change, message = MANIFEST_DAMAGE[damage]
    change(old_run)
    with pytest.raises(DataError, match=message) as info:
        Run(old_run)
    assert str(old_run) in str(info.value) and "re-train" in str(info.value)


def test_a_run_folder_from_before_manifests_still_opens(old_run: Path) -> None:
    (old_run / MANIFEST).unlink()
    run = Run(old_run)
    assert run.manifest is None and run.predictions["test_probs"].shape[0] == 100
    (old_run / "config.json").write_text('{"config": ')  # ...and a damaged one is a DataError, not a traceback
    with pytest.raises(DataError, match=r"config\.json is unreadable"):
        Run(old_run)


def test_what_evaluate_added_does_not_break_the_check_and_goes_with_the_old_run(old_run: Path, report) -> None:
    from metaerr_edge.evaluate import write_report

    write_report(report, old_run)
    (old_run / "tradeoff").mkdir()
    (old_run / "tradeoff" / "tradeoff.md").write_text("old")
    assert Run(old_run).test_metrics()  # metrics.json beside the manifest is fine
    old_id = Run(old_run).manifest["run_id"]
    run = train_run(tiny(1), old_run, progress=False)
    assert run.manifest["run_id"] != old_id and run.test_metrics() == {}  # no metrics of the old model
    assert sorted(os.listdir(old_run)) == ["base.pt", "config.json", MANIFEST, "meta_probs.pt",
                                           "predictions.npz", "splits.npz"]
    assert leftovers(old_run) == []


@pytest.mark.parametrize("foreign", ["model.onnx", "notes.txt", "bench"])
def test_a_folder_with_files_train_did_not_write_is_refused_before_training(old_run: Path, foreign: str,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (old_run / foreign).mkdir() if foreign == "bench" else (old_run / foreign).write_text("keep me")
    before = snapshot(old_run)
    monkeypatch.setattr("metaerr_edge.pipeline.load_dataset", _no_training)
    with pytest.raises(ConfigError, match=f"did not write \\({foreign}\\).*Move them out"):
        train_run(tiny(1), old_run, progress=False)
    assert snapshot(old_run) == before and leftovers(old_run) == []


def test_a_folder_that_is_no_run_or_the_current_folder_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("metaerr_edge.pipeline.load_dataset", _no_training)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"jpeg")
    with pytest.raises(ConfigError, match=r"cat\.jpg"):
        train_run(tiny(), tmp_path / "photos", progress=False)
    assert (tmp_path / "photos" / "cat.jpg").read_bytes() == b"jpeg"
    monkeypatch.chdir(tmp_path / "photos")
    with pytest.raises(ConfigError, match="current folder"):
        train_run(tiny(), ".", progress=False)


def _no_training(*args, **kwargs):
    raise AssertionError("training started although the output was refused")


# ------------------------------------------------------------------ kill -9


KILL = """
import os, sys
from pathlib import Path
import metaerr_edge._fileio as io

target, point = Path(sys.argv[1]), sys.argv[2]
rename, exchange = os.rename, io._exchange
if point == "between the two renames":
    io._exchange = lambda a, b: False
    def killing_rename(src, dst):
        if Path(dst).name == target.name:
            os._exit(137)
        return rename(src, dst)
    os.rename = killing_rename
if point == "after the exchange":
    def killing_exchange(a, b):
        exchange(a, b)
        os._exit(137)
    io._exchange = killing_exchange
with io.replace_folder(target) as tmp:
    io.atomic_write_text(tmp / "config.json", "new")
    if point == "while writing":
        os._exit(137)
    io.write_manifest(tmp)
"""


def _killed(target: Path, point: str) -> None:
    proc = subprocess.run([sys.executable, "-c", KILL, str(target), point], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 137, proc.stderr


@pytest.mark.parametrize("point", ["while writing", "between the two renames"])
def test_kill_9_while_replacing_leaves_the_old_run(old_run: Path, point: str) -> None:
    before = snapshot(old_run)
    _killed(old_run, point)
    assert len(leftovers(old_run)) == (1 if point == "while writing" else 2)  # what the killed writer left
    run = Run(old_run)  # between the renames the folder is absent: opening it puts the old run back
    assert snapshot(old_run) == before and run.manifest is not None
    with replace_folder(old_run) as tmp:  # the next writer removes what the killed one left
        (tmp / "x").write_text("next")
    assert leftovers(old_run) == [] and os.listdir(old_run) == ["x"]


def test_kill_9_after_the_exchange_leaves_the_new_folder(old_run: Path) -> None:
    _killed(old_run, "after the exchange")
    assert (old_run / "config.json").read_text() == "new" and mio.verify_manifest(old_run) is not None
    assert len(leftovers(old_run)) == 1  # the old run, no longer anybody's: removed by the next write
    train_run(tiny(1), old_run, progress=False)
    assert leftovers(old_run) == []


def test_kill_9_of_a_real_training_mid_write(old_run: Path) -> None:
    script = ("import os, sys\nfrom pathlib import Path\nreal = os.replace\n"
              "def replace(src, dst):\n    if Path(dst).name == 'predictions.npz':\n        os._exit(137)\n"
              "    return real(src, dst)\nos.replace = replace\n"
              "from metaerr_edge.pipeline import RunConfig, train_run\n"
              f"train_run(RunConfig.from_dict({{**{TINY!r}, 'seed': 1}}), sys.argv[1], progress=False)\n")
    before = snapshot(old_run)
    proc = subprocess.run([sys.executable, "-c", script, str(old_run)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stderr
    assert snapshot(old_run) == before and Run(old_run).manifest is not None
    assert len(leftovers(old_run)) == 1
    train_run(tiny(1), old_run, progress=False)
    assert leftovers(old_run) == []


# ------------------------------------------------------------------ one writer per target


HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"pid %d, `metaerr-edge train -o run`" % os.getpid())
print("locked", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def held_elsewhere(target: Path):
    """Another process holds ``target``'s lock while the block runs."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_file(target))], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def _busy(target: Path, message: str) -> None:
    assert str(target) in message and "another metaerr-edge process" in message and "pid" in message, message
    assert "Wait for it to finish" in message, message


def test_a_second_training_fails_at_once_before_any_work(old_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("metaerr_edge.pipeline.load_dataset", _no_training)
    before = snapshot(old_run)
    with held_elsewhere(old_run):
        start = time.perf_counter()
        with pytest.raises(ConfigError) as info:
            train_run(tiny(1), old_run, progress=False)
        assert time.perf_counter() - start < 2.0
    _busy(old_run, str(info.value))
    assert "metaerr-edge train -o run" in str(info.value)  # who holds it
    assert snapshot(old_run) == before and leftovers(old_run) == []


def test_two_trainings_at_once_in_one_process(old_run: Path) -> None:
    errors: list[BaseException] = []

    def second() -> None:
        try:
            train_run(tiny(1), old_run, progress=False)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    with path_lock(old_run):
        worker = threading.Thread(target=second)
        worker.start()
        worker.join(timeout=60)
    assert not worker.is_alive() and len(errors) == 1 and isinstance(errors[0], ConfigError)
    assert "another thread of this process" in str(errors[0])


def test_the_lock_is_reentrant_and_released(tmp_path: Path) -> None:
    target = tmp_path / "thing"
    with path_lock(target), path_lock(target):
        pass
    with held_elsewhere(target):
        with pytest.raises(ConfigError):
            with path_lock(target):
                pass
    assert_unlocked(target)  # the holder ended: its lock went with it, nothing to delete


def _calibrate(model: Path):
    from metaerr_edge.contract.spec import ThresholdSpec
    from metaerr_edge.fuse.modelfile import set_threshold

    return lambda: set_threshold(model, ThresholdSpec(0.25, "coverage", target_coverage=0.9))


WRITERS = ["set_threshold", "write_report", "bench", "tradeoff", "calibrate"]


@pytest.mark.parametrize("writer", WRITERS)
def test_a_second_writer_of_a_file_set_fails_with_one_clear_error(writer: str, trained: Path, exported: Path, report,
                                                                  tmp_path: Path, capsys) -> None:
    from metaerr_edge.evaluate import write_report

    model = tmp_path / "model.onnx"
    shutil.copyfile(exported, model)
    target = {"set_threshold": model, "calibrate": model, "write_report": tmp_path / "metrics",
              "bench": tmp_path / "bench", "tradeoff": tmp_path / "tradeoff"}[writer]
    call = {
        "set_threshold": _calibrate(model),
        "write_report": lambda: write_report(report, target),
        "bench": lambda: main(["bench", str(model), *BENCH_FAST, "-o", str(target)]),
        "tradeoff": lambda: main(["tradeoff", str(trained), "--device-latency-ms", "1", "--fallback-latency-ms", "40",
                                  "--fallback-accuracy", "0.99", "-o", str(target)]),
        "calibrate": lambda: main(["calibrate", str(model), "--run", str(trained), "--coverage", "0.9"]),
    }[writer]
    before = model.read_bytes()
    with held_elsewhere(target):
        if writer in ("bench", "tradeoff", "calibrate"):
            assert call() == 2
            err = capsys.readouterr().err
            one_line(err)
            _busy(target, err)
        else:
            with pytest.raises(ConfigError) as info:
                call()
            _busy(target, str(info.value))
    assert model.read_bytes() == before and not (tmp_path / "bench").exists() and not (tmp_path / "metrics").exists()


# ------------------------------------------------------------------ stale temporaries


def _stale(folder: Path, name: str) -> list[Path]:
    """What a kill -9 leaves beside ``name``: one of ours and one of tempfile.mkstemp's (older versions)."""
    made = [folder / f".{name}.0123456789ab.tmp", folder / f".{name}.k3j_h5g6.tmp"]
    for p in made:
        p.write_bytes(b"partial")
    return made


STALE_WRITERS = {
    "write_json": lambda d, ctx: write_json(d / "out.json", {"a": 1}),
    "atomic_write (model)": lambda d, ctx: _calibrate(ctx["model"])(),
    "save_json (bench)": lambda d, ctx: _save_bench(d / "out.json"),
    "replace_files": lambda d, ctx: _one_file_set(d, "out.json"),
}


def _one_file_set(folder: Path, name: str) -> None:
    with replace_files(folder, [name]) as stage:
        atomic_write_text(stage / name, "new")


def _save_bench(path: Path) -> None:
    from metaerr_edge.bench import BenchResult, LatencyStats, save_json

    save_json(path, [BenchResult("a", "ort", "m.onnx", 1, LatencyStats.from_samples([1.0, 2.0]))], {})


@pytest.mark.parametrize("writer", list(STALE_WRITERS))
def test_the_next_write_removes_stale_temporaries_but_not_a_live_one(writer: str, exported: Path, tmp_path: Path) -> None:
    name = "model.onnx" if writer.startswith("atomic_write") else "out.json"
    ctx = {"model": tmp_path / name}
    if writer.startswith("atomic_write"):
        shutil.copyfile(exported, ctx["model"])
    stale = _stale(tmp_path, name)
    other = tmp_path / ".other.json.0123456789ab.tmp"  # another target's
    other.write_bytes(b"x")
    live, fd = mio.new_temp_file(tmp_path / name)  # a writer of the same target still at work
    try:
        STALE_WRITERS[writer](tmp_path, ctx)
        assert not any(p.exists() for p in stale) and live.exists() and other.exists()
    finally:
        os.close(fd)
        live.unlink()


def test_train_and_file_sets_remove_what_a_killed_writer_left(old_run: Path, report) -> None:
    from metaerr_edge.evaluate import write_report

    parent = old_run.parent
    for kind in ("tmp", "old"):
        (parent / f".run.00000000000{'1' if kind == 'tmp' else '2'}.{kind}").mkdir()
    (parent / ".run.k3j_h5g6.tmp").write_bytes(b"")
    train_run(tiny(1), old_run, progress=False)
    assert leftovers(old_run) == []
    (old_run / ".staged.0123456789ab.tmp").mkdir()  # a killed report's staging folder
    (old_run / ".metrics.md.0123456789ab.bak").write_text("old")
    write_report(report, old_run)
    assert sorted(n for n in os.listdir(old_run) if n.startswith(".")) == []


# ------------------------------------------------------------------ file sets: never a mix


@pytest.mark.parametrize("error", list(ERRORS))
@pytest.mark.parametrize("step", ["metrics.json", "metrics.md", "scores.npz", "risk_coverage.png", "moving in"])
def test_a_failed_report_leaves_the_previous_set(tmp_path: Path, report, step: str, error: str) -> None:
    from metaerr_edge.evaluate import write_report

    out = tmp_path / "eval"
    write_report(report, out)
    (out / "metrics.md").write_text("the previous set\n")  # tell the sets apart
    before = snapshot(out)
    nth = {"metrics.json": 1, "metrics.md": 2, "scores.npz": 3, "risk_coverage.png": 4}
    with pytest.MonkeyPatch.context() as mp:
        if step == "moving in":  # the second file moved in fails: the first is rolled back
            mp.setattr(os, "replace", Once(os.replace, ERRORS[error](), lambda s, d: Path(d).parent == out, nth=2))
        else:
            mp.setattr(os, "fsync", Once(os.fsync, ERRORS[error](), nth=nth[step]))
        with pytest.raises((OSError, KeyboardInterrupt)) as info:
            write_report(report, out)
    if error == "disk full":
        assert info.value.filename == str(out)
    assert snapshot(out) == before  # the previous set, every byte
    assert sorted(os.listdir(out)) == ["metrics.json", "metrics.md", "risk_coverage.png", "scores.npz"]  # no temporaries
    with pytest.MonkeyPatch.context() as mp:  # nothing before: nothing after, not even the folder
        mp.setattr(os, "fsync", Once(os.fsync, OSError(*ENOSPC), nth=2))
        with pytest.raises(OSError):
            write_report(report, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def test_a_new_set_drops_the_members_the_old_one_had(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    with replace_files(out, ["bench.json", "bench_device.png"]) as stage:
        atomic_write_text(stage / "bench.json", "old")
        atomic_write_text(stage / "bench_device.png", "old device plot")
    with replace_files(out, ["bench.json", "bench_device.png"]) as stage:
        atomic_write_text(stage / "bench.json", "new")
    assert os.listdir(out) == ["bench.json"] and (out / "bench.json").read_text() == "new"


@pytest.mark.parametrize("nth", [1, 2, 3])
def test_bench_onto_a_full_disk_keeps_the_previous_result(exported: Path, tmp_path: Path, capsys, nth: int) -> None:
    out = tmp_path / "bench"
    assert main(["bench", str(exported), *BENCH_FAST, "-o", str(out)]) == 0
    (out / "bench_device.png").write_bytes(b"a device plot of the previous set")
    before = snapshot(out)
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", Once(os.fsync, OSError(*ENOSPC), nth=nth))
        assert main(["bench", str(exported), *BENCH_FAST, "-o", str(out)]) == 2
    one_line(capsys.readouterr().err, "bench: error:", repr(str(out)), "No space left")
    assert snapshot(out) == before
    assert main(["bench", str(exported), *BENCH_FAST, "-o", str(out)]) == 0  # no device times: no device plot
    assert sorted(os.listdir(out)) == ["bench.json", "bench.md", "bench.png"]


@pytest.mark.parametrize("nth", [1, 5])  # tradeoff.md; the plot's bytes, flushed as the set moves in
def test_tradeoff_onto_a_full_disk_keeps_the_previous_result(trained: Path, tmp_path: Path, capsys, nth: int) -> None:
    out = tmp_path / "tradeoff"
    argv = ["tradeoff", str(trained), "--device-latency-ms", "1", "--fallback-latency-ms", "40",
            "--fallback-accuracy", "0.99", "-o", str(out)]
    assert main(argv) == 0
    before = snapshot(out)
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", Once(os.fsync, OSError(*ENOSPC), nth=nth))
        assert main([*argv, "--deadline-ms", "30"]) == 2
    one_line(capsys.readouterr().err, "tradeoff: error:", repr(str(out)), "No space left")
    assert snapshot(out) == before


# ------------------------------------------------------------------ the CLI: one line, exit code 2


def _read_only(folder: Path):
    """os.open(O_CREAT) and os.mkdir under ``folder`` fail as on a read-only mount (root ignores chmod)."""
    real_open, real_mkdir = os.open, os.mkdir

    def ro_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and Path(path).is_relative_to(folder):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    def ro_mkdir(path, *args, **kwargs):
        if Path(path).is_relative_to(folder):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *args, **kwargs)

    return ro_open, ro_mkdir


@pytest.mark.parametrize("fault", ["disk full", "read-only"])
def test_train_cli_onto_a_bad_disk_is_one_line_and_keeps_the_old_run(old_run: Path, capsys, fault: str) -> None:
    before = snapshot(old_run)
    with pytest.MonkeyPatch.context() as mp:
        if fault == "disk full":
            mp.setattr(torch, "save", Once(torch.save, OSError(*ENOSPC)))
        else:
            ro_open, ro_mkdir = _read_only(old_run.parent)
            mp.setattr(os, "open", ro_open)
            mp.setattr(os, "mkdir", ro_mkdir)
        assert main([*TRAIN_ARGV, "-o", str(old_run)]) == 2
    one_line(capsys.readouterr().err, "metaerr-edge train: error:", repr(str(old_run)),
             "No space left" if fault == "disk full" else "Read-only")
    assert snapshot(old_run) == before


@pytest.mark.parametrize("command", ["evaluate", "calibrate", "calibrate -o"])
@pytest.mark.parametrize("fault", ["disk full", "read-only"])
def test_other_writers_onto_a_bad_disk_are_one_line(trained: Path, exported: Path, tmp_path: Path, capsys,
                                                    command: str, fault: str) -> None:
    model = tmp_path / "model.onnx"
    shutil.copyfile(exported, model)
    folder = tmp_path / "out"
    folder.mkdir()
    target = {"evaluate": folder, "calibrate": model, "calibrate -o": folder / "calibrated.onnx"}[command]
    argv = {"evaluate": ["evaluate", str(trained), "--scores", "msp", "--n-boot", "10", "--quiet", "-o", str(folder)],
            "calibrate": ["calibrate", str(model), "--run", str(trained), "--coverage", "0.9"],
            "calibrate -o": ["calibrate", str(model), "--run", str(trained), "--coverage", "0.9", "-o", str(target)]}
    before = snapshot(tmp_path)
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        if fault == "disk full":
            mp.setattr(os, "fsync", Once(os.fsync, OSError(*ENOSPC)))
        else:
            ro_open, ro_mkdir = _read_only(tmp_path)
            mp.setattr(os, "open", ro_open)
            mp.setattr(os, "mkdir", ro_mkdir)
        assert main(argv[command]) == 2
    one_line(capsys.readouterr().err, "error:", repr(str(target)), "No space left" if fault == "disk full" else "Read-only")
    after = {k: v for k, v in snapshot(tmp_path).items() if not k.endswith(".lock")}
    assert after == before  # nothing new, nothing changed


# ------------------------------------------------------------------ permissions follow the umask


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}


def test_every_file_and_folder_follows_the_umask(umask: int, tmp_path: Path, exported: Path, report) -> None:
    from metaerr_edge.evaluate import write_report
    from metaerr_edge.contract.spec import ThresholdSpec
    from metaerr_edge.fuse.modelfile import set_threshold

    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    out = tmp_path / "w"
    run = train_run(tiny(), out / "run", progress=False)
    train_run(tiny(), run.path, progress=False)  # replaced: the new folder and files too
    write_json(out / "a" / "x.json", {"a": 1})
    set_threshold(exported, ThresholdSpec(0.3), out_path=out / "calibrated.onnx")
    _save_bench(out / "bench.json")
    write_report(report, out / "eval")
    modes = _modes(out)
    dirs = {k for k in modes if (out / k).is_dir()}
    assert {"run", "a", "eval"} <= dirs and len(modes) > 12
    assert {k: v for k, v in modes.items() if k in dirs and v != dir_mode} == {}
    assert {k: v for k, v in modes.items() if k not in dirs and v != file_mode} == {}  # lock files included
