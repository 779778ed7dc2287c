"""benchmarks/gpu_data.py and gpu_check.sh: the datasets reach a GPU machine byte for byte, the script parses.

The full ``gpu_check.sh --dry-run`` takes minutes (it trains); it is run by hand before a GPU
session, and its options are checked here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_data  # noqa: E402


def _fake_root(root: Path) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    files = {f"MNIST/raw/{name}": rng.integers(0, 256, 3000 + i, dtype=np.uint8).tobytes()
             for i, name in enumerate(gpu_data.IDX_FILES)}
    for split in ("train", "test"):
        for cls in ("airplane", "truck"):
            for k in range(3):
                files[f"CIFAR10-jpeg/{split}/{cls}/{k:05d}.jpg"] = rng.integers(0, 256, 700 + k, dtype=np.uint8).tobytes()
    for name, blob in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(blob)
    return files


def test_pack_splits_into_parts_and_unpack_restores_every_byte(tmp_path: Path) -> None:
    files = _fake_root(tmp_path / "src")
    parts = gpu_data.pack(tmp_path / "src", tmp_path / "packed", ["mnist", "cifar10"], max_mib=4000 / 2**20)
    names = sorted(p.name for p in parts)
    assert "mnist.1of4.npz" in names and "mnist.4of4.npz" in names  # whole files per part, never cut
    assert gpu_data.unpack(tmp_path / "packed", tmp_path / "dst") == ["mnist", "cifar10"]
    got = {str(p.relative_to(tmp_path / "dst")): p.read_bytes() for p in (tmp_path / "dst").rglob("*") if p.is_file()}
    assert got == files


def test_unpack_refuses_a_missing_part_or_a_damaged_one(tmp_path: Path) -> None:
    _fake_root(tmp_path / "src")
    parts = gpu_data.pack(tmp_path / "src", tmp_path / "packed", ["mnist"], max_mib=4000 / 2**20)
    parts[-1].unlink()
    with pytest.raises(SystemExit, match="3 of the 4 parts of mnist"):
        gpu_data.unpack(tmp_path / "packed", tmp_path / "dst")
    gpu_data.pack(tmp_path / "src", tmp_path / "packed", ["mnist"])
    (part,) = (tmp_path / "packed").glob("mnist.*npz")
    with np.load(part) as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["data"][5] ^= 1
    np.savez(part, **arrays)
    with pytest.raises(SystemExit, match="do not match the SHA-256"):
        gpu_data.unpack(tmp_path / "packed", tmp_path / "dst")
    with pytest.raises(SystemExit, match="file\\(s\\) missing"):
        gpu_data.pack(tmp_path / "nowhere", tmp_path / "packed", ["mnist"])


def test_gpu_check_parses_and_refuses_an_unknown_option(tmp_path: Path) -> None:
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    bad = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True, env={"OUT": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr
