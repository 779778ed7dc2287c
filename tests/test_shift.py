"""Corruptions and OOD sets (metaerr_edge.data.shift): determinism, severity order, formats, the
validation/test split and the guard that keeps test families out of every choice."""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metaerr_edge.data import load_dataset
from metaerr_edge.data.shift import (CORRUPTIONS, NOISE_SET, SEVERITIES, TEST_FAMILIES, VALIDATION_FAMILIES, corrupt,
                                     families, ood_sets, to_format)
from metaerr_edge.errors import ConfigError, DataError

PACKAGE = Path(__file__).resolve().parents[1] / "metaerr_edge"
ALL = CORRUPTIONS.available()
RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "motion_blur"}


def natural(n: int, c: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """1/f ("pink") noise images: the power spectrum of natural images, any size, no files."""
    rng = np.random.default_rng(seed)
    amp = 1.0 / np.maximum(np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None]), 1.0 / max(h, w))
    spec = (rng.normal(size=(n, c, h, w // 2 + 1)) + 1j * rng.normal(size=(n, c, h, w // 2 + 1))) * amp
    x = np.fft.irfft2(spec, s=(h, w))
    x = (x - x.mean(axis=(1, 2, 3), keepdims=True)) / x.std(axis=(1, 2, 3), keepdims=True)
    return np.clip(128 + 50 * x, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_dataset("digits").train.images[:48]


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("size", [8, 28, 32])
def test_every_family_keeps_uint8_and_shape_and_leaves_the_input_alone(c, size):
    x = natural(3, c, size, size)
    before = x.copy()
    for family in ALL:
        for severity in (1, 5):
            y = corrupt(x, family, severity, seed=1)
            assert y.dtype == np.uint8 and y.shape == x.shape, (family, severity)
            direct = CORRUPTIONS.get(family)(x, severity, np.random.default_rng(0))
            assert direct.dtype == np.uint8 and direct.shape == x.shape, family
    np.testing.assert_array_equal(x, before)
    assert corrupt(x[:0], "jpeg", 3).shape == (0, c, size, size)


@pytest.mark.parametrize("c", [1, 3])
def test_corrupt_is_a_pure_function_of_images_family_severity_and_seed(c):
    x = natural(4, c, 16, 16)
    assert {f for f in ALL if CORRUPTIONS.entry(f).meta["random"]} == RANDOM
    for family in ALL:
        a, b = corrupt(x, family, 3, seed=7), corrupt(x.copy(), family, 3, seed=7)
        assert a.tobytes() == b.tobytes(), family
        other = corrupt(x, family, 3, seed=8)
        if family in RANDOM:
            assert other.tobytes() != a.tobytes(), f"{family}: another seed must draw other noise"
        else:
            assert other.tobytes() == a.tobytes(), f"{family} draws nothing: the seed must not matter"


def _digest(x: np.ndarray) -> str:
    return hashlib.sha256(b"".join(corrupt(x, f, 4, seed=3).tobytes() for f in ALL)).hexdigest()


def test_same_bytes_in_a_fresh_interpreter_with_another_hash_seed_and_no_torch():
    """The seed keys use CRC-32, not Python's salted ``hash()``; and the module needs no torch."""
    x = natural(2, 3, 12, 12)
    code = ("import sys, numpy as np, hashlib\nfrom metaerr_edge.data.shift import corrupt, CORRUPTIONS\n"
            f"x = np.frombuffer(bytes.fromhex('{x.tobytes().hex()}'), np.uint8).reshape({x.shape})\n"
            "print(hashlib.sha256(b''.join(corrupt(x, f, 4, seed=3).tobytes() for f in CORRUPTIONS.available()))"
            ".hexdigest())\nprint('torch' in sys.modules)")
    for hash_seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert done.returncode == 0, done.stderr[-800:]
        assert done.stdout.split() == [_digest(x), "False"]


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("family", ALL)
def test_higher_severity_changes_images_at_least_as_much(family, c, digits):
    batches = {"natural 8x8": natural(32, c, 8, 8), "natural 32x32": natural(32, c, 32, 32, seed=1)}
    if c == 1:
        batches["digits 8x8"] = digits
    for name, x in batches.items():
        diff = [float(np.abs(corrupt(x, family, s, seed=0).astype(np.int16) - x).mean()) for s in SEVERITIES]
        assert diff[0] > 0, f"{family} on {name}: severity 1 changes nothing"
        assert all(b >= a for a, b in zip(diff, diff[1:])), f"{family} on {name}: {np.round(diff, 3)}"


@pytest.mark.parametrize("severity", [0, 6, -1, 2.5, True, "3", None])
def test_severity_outside_1_to_5_is_one_line_listing_the_choices(severity):
    with pytest.raises(ConfigError, match=r"severity must be one of \[1, 2, 3, 4, 5\]") as info:
        corrupt(natural(1, 1, 8, 8), "gaussian_blur", severity)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"severity must be one of"):
        CORRUPTIONS.get("jpeg")(natural(1, 1, 8, 8), severity, np.random.default_rng(0))


def test_unknown_family_bad_seed_and_bad_images_are_clear():
    x = natural(1, 1, 8, 8)
    choices = r"expected one of \['gaussian_noise', 'shot_noise', .*, 'rotation'\]$"
    with pytest.raises(ConfigError, match=r"unknown corruption family 'fog'; " + choices) as info:
        corrupt(x, "fog", 1)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        corrupt(x, "gaussian_noise", 1, seed=-1)
    with pytest.raises(ConfigError, match="draws random numbers"):
        CORRUPTIONS.get("shot_noise")(x, 1, None)
    for bad in (x.astype(np.float32), x[:, 0], np.zeros((1, 4, 8, 8), np.uint8), [[1]]):
        with pytest.raises(DataError, match=r"uint8 N x C x H x W with C = 1 \(gray\) or 3 \(RGB\)"):
            corrupt(bad, "contrast", 1)


def test_validation_and_test_families_are_disjoint_cover_all_and_share_kinds():
    assert families("validation") == VALIDATION_FAMILIES and families("test") == TEST_FAMILIES
    assert not set(VALIDATION_FAMILIES) & set(TEST_FAMILIES)
    assert sorted(VALIDATION_FAMILIES + TEST_FAMILIES) == sorted(ALL) and len(ALL) == 11
    kinds: dict[str, set[str]] = {}
    for f in ALL:
        kinds.setdefault(CORRUPTIONS.entry(f).meta["kind"], set()).add(f)
    for kind, members in kinds.items():
        if len(members) > 1:  # every kind with siblings has one on each side
            assert members & set(VALIDATION_FAMILIES) and members & set(TEST_FAMILIES), kind
    with pytest.raises(ConfigError, match=r"unknown family group 'train'; expected one of \['validation', 'test'\]"):
        families("train")


# Files that may reach a test family: the shift module, the evaluation that reports on them (library,
# command, benchmark) and the re-exports. Nothing else (training, augmentation, selection, defaults)
# may: not by the list, not by a family's name or function, not by iterating over every family.
REPO = PACKAGE.parent
MAY_USE_TEST_FAMILIES = {"metaerr_edge/data/shift.py", "metaerr_edge/shift_eval.py", "metaerr_edge/commands/evaluate.py",
                         "benchmarks/shift.py"}
MAY_REEXPORT = {"metaerr_edge/data/__init__.py", "metaerr_edge/__init__.py"}


def _name(node: ast.AST) -> str:
    return getattr(node, "id", getattr(node, "attr", ""))


def _test_family_uses(tree: ast.AST) -> list[tuple[int, str, bool]]:
    """(line, what, is a re-export) for every way ``tree`` can reach a test family."""
    reach = {"TEST_FAMILIES", "CORRUPTIONS", *TEST_FAMILIES}  # the list, the registry of all, each family's function
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found += [(node.lineno, f"imports {a.name}", True) for a in node.names if a.name in reach]
        elif isinstance(node, ast.Attribute) and node.attr in reach:
            found.append((node.lineno, f".{node.attr}", False))
        elif isinstance(node, ast.Name) and node.id in ("TEST_FAMILIES", "CORRUPTIONS"):
            found.append((node.lineno, node.id, False))
        elif isinstance(node, ast.Call) and _name(node.func) in ("families", "evaluate_shift"):
            args = (list(node.args[:1]) if _name(node.func) == "families" else []) + [
                k.value for k in node.keywords if k.arg == "group"]
            if any(not (isinstance(a, ast.Constant) and a.value == "validation") for a in args):
                found.append((node.lineno, f"{_name(node.func)}(group other than 'validation')", False))
        elif isinstance(node, ast.Constant) and node.value in TEST_FAMILIES:
            found.append((node.lineno, f"the name {node.value!r}", False))
    return found


def test_no_code_outside_evaluation_selects_on_a_test_family():
    offenders = []
    files = [*PACKAGE.rglob("*.py"), *(REPO / "benchmarks").glob("*.py"), *(REPO / "examples").glob("*.py")]
    assert any(p.name == "shift.py" for p in files) and len(files) > 60
    for path in sorted(files):
        rel = path.relative_to(REPO).as_posix()
        if rel in MAY_USE_TEST_FAMILIES:
            continue
        for line, what, reexport in _test_family_uses(ast.parse(path.read_text(), rel)):
            if not (reexport and rel in MAY_REEXPORT):
                offenders.append(f"{rel}:{line}: {what}")
    assert not offenders, ("test corruption families are for reporting only; use VALIDATION_FAMILIES for any choice "
                           f"(or put reporting code in {sorted(MAY_USE_TEST_FAMILIES)}): {offenders}")
    # the guard itself sees each way in
    probe = ast.parse("from m import TEST_FAMILIES\nm.TEST_FAMILIES\nshift.families('test')\nfamilies(group='test')\n"
                      "augment = 'jpeg'\nfamilies('validation')\nVALIDATION_FAMILIES\nfrom metaerr_edge.data.shift import jpeg\n"
                      "shift.rotation(x, 3, rng)\nfor f in CORRUPTIONS.available(): pass\nfamilies(group)\n"
                      "evaluate_shift(run, group='test')\nevaluate_shift(run, group='validation')\n")
    assert [w for _, w, _ in sorted(_test_family_uses(probe))] == [
        "imports TEST_FAMILIES", ".TEST_FAMILIES", "families(group other than 'validation')",
        "families(group other than 'validation')", "the name 'jpeg'", "imports jpeg", ".rotation", "CORRUPTIONS",
        "families(group other than 'validation')", "evaluate_shift(group other than 'validation')"]


def test_to_format_gray_to_rgb_and_back_keeps_values_sensibly():
    gray = natural(5, 1, 28, 28)
    rgb = to_format(gray, (3, 32, 32))
    assert rgb.shape == (5, 3, 32, 32) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert (rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all()
    assert abs(float(rgb.mean()) - float(gray.mean())) < 2.0
    np.testing.assert_array_equal(to_format(np.full((2, 1, 28, 28), 77, np.uint8), (3, 32, 32)), 77)
    np.testing.assert_array_equal(to_format(gray, (1, 28, 28)), gray)
    np.testing.assert_array_equal(to_format(rgb, (1, 32, 32)), rgb[:, :1])  # gray replicated comes back exactly
    red = np.zeros((1, 3, 8, 8), np.uint8)
    red[:, 0] = 255
    np.testing.assert_array_equal(to_format(red, (1, 8, 8)), 76)  # ITU-R 601 luma: 0.299 * 255
    assert to_format(natural(2, 3, 32, 32), (1, 8, 8)).shape == (2, 1, 8, 8)
    for bad in ((2, 8, 8), (1, 8), (1, 0, 8), "1x8x8"):
        with pytest.raises(ConfigError, match=r"shape must be \(C, H, W\)"):
            to_format(gray, bad)


def test_uniform_noise_set_and_argument_checks(tmp_path):
    sets = ood_sets("digits", (1, 8, 8), n=20, seed=4)
    assert list(sets) == [NOISE_SET]  # digits need no files: without a root, noise only
    noise = sets[NOISE_SET]
    assert noise.shape == (20, 1, 8, 8) and noise.dtype == np.uint8 and noise.std() > 50
    assert ood_sets("npz:some.npz", (1, 8, 8), n=20, seed=4)[NOISE_SET].tobytes() == noise.tobytes()
    assert ood_sets("digits", (1, 8, 8), n=20, seed=5)[NOISE_SET].tobytes() != noise.tobytes()
    assert ood_sets("cifar10", (3, 32, 32), n=3, sources=())[NOISE_SET].shape == (3, 3, 32, 32)
    with pytest.raises(ConfigError, match="unknown dataset 'mnsit'"):
        ood_sets("mnsit", (1, 28, 28))
    with pytest.raises(ConfigError, match="n must be an integer >= 1"):
        ood_sets("digits", (1, 8, 8), n=0)
    with pytest.raises(ConfigError, match="other than 'mnist'"):
        ood_sets("mnist", (1, 28, 28), tmp_path, sources=["mnist"])
    with pytest.raises(DataError, match=r"FashionMNIST/raw"):  # a missing set is an error, never silently dropped
        ood_sets("mnist", (1, 28, 28), tmp_path)


def _need(root: Path, *folders: str) -> None:
    for folder in folders:
        if not (root / folder).is_dir():
            pytest.skip(f"needs {root / folder} (absent here)")


def _rows_of(images: np.ndarray) -> set[bytes]:
    return {im.tobytes() for im in images}


@pytest.mark.datasets
def test_mnist_and_fashion_are_each_others_ood_sets(shared_datasets):
    _need(shared_datasets, "MNIST/raw", "FashionMNIST/raw")
    for run, other in (("mnist", "fashion-mnist"), ("fashion-mnist", "mnist")):
        sets = ood_sets(run, (1, 28, 28), shared_datasets, n=50, seed=0)
        assert list(sets) == [other, NOISE_SET]
        assert sets[other].shape == (50, 1, 28, 28) and sets[other].dtype == np.uint8
        assert _rows_of(sets[other]) <= _rows_of(load_dataset(other, shared_datasets).test.images)
        again = ood_sets(run, (1, 28, 28), shared_datasets, n=50, seed=0)
        assert all(again[k].tobytes() == v.tobytes() for k, v in sets.items())


@pytest.mark.datasets
def test_cifar_and_digits_runs_get_resized_gray_sets(shared_datasets):
    _need(shared_datasets, "MNIST/raw", "FashionMNIST/raw")
    sets = ood_sets("cifar10", (3, 32, 32), shared_datasets, n=20, seed=1)
    assert list(sets) == ["mnist", "fashion-mnist", NOISE_SET]
    for name in ("mnist", "fashion-mnist"):
        x = sets[name]
        assert x.shape == (20, 3, 32, 32) and (x[:, 0] == x[:, 2]).all() and x.max() > 200
    digit_sets = ood_sets("digits", (1, 8, 8), shared_datasets, n=20)
    assert list(digit_sets) == ["fashion-mnist", NOISE_SET]  # MNIST holds the same ten digits: not OOD
    assert digit_sets["fashion-mnist"].shape == (20, 1, 8, 8)
