"""Carry the benchmark datasets to a lent GPU machine in under 64 MiB a call, byte for byte.

The device machine cannot reach ``../shared/datasets``; what a call carries must be a (gitignored)
path of the checkout, 64 MiB at most. ``pack`` writes one archive per dataset into ``.gpu_data/``:

- ``mnist``, ``fashion-mnist``: the four raw IDX files, zlib-compressed (about 11 and 30 MiB);
- ``cifar10``: every JPEG's bytes as they are (no re-encoding: the images decode to the same
  pixels), their relative paths and offsets, stored (about 55 MiB),

each in parts ``DATASET.IofK.npz`` of at most ``--max-mib`` (30), so that a call can carry one or two.

``unpack`` writes them back into the torchvision layout the benchmarks read (``MNIST/raw/``,
``FashionMNIST/raw/``, ``CIFAR10-jpeg/{train,test}/<class>/``) under a data root, checking every
file's size and the archive's SHA-256 of the whole. It needs numpy and this checkout, nothing else.

    python benchmarks/gpu_data.py pack --root ../shared/datasets --out .gpu_data            # here
    python benchmarks/gpu_data.py unpack --archives .gpu_data --root "$WORK/data"           # on the device
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: this checkout's package
from metaerr_edge._fileio import atomic_write_bytes, replace_folder  # noqa: E402

IDX = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR = "CIFAR10-jpeg"
DATASETS = (*IDX, "cifar10")


def _digest(blobs: list[bytes], names: list[str]) -> str:
    h = hashlib.sha256()
    for name, blob in zip(names, blobs):
        h.update(name.encode() + b"\0" + len(blob).to_bytes(8, "little") + blob)
    return h.hexdigest()


def _files(root: Path, dataset: str) -> tuple[list[str], list[bytes]]:
    """(relative paths, bytes) of one dataset under ``root``, in a fixed order."""
    if dataset in IDX:
        names = [f"{IDX[dataset]}/raw/{f}" for f in IDX_FILES]
    else:
        names = sorted(str(p.relative_to(root)) for p in (root / CIFAR).glob("*/*/*") if p.is_file())
    missing = [n for n in names if not (root / n).is_file()]
    if not names or missing:
        raise SystemExit(f"{dataset}: {len(missing) or 'no'} file(s) missing under {root} (e.g. {(missing or [CIFAR])[0]}); "
                         "pass --root holding MNIST/, FashionMNIST/, CIFAR10-jpeg/")
    return names, [(root / n).read_bytes() for n in names]


def pack(root: Path, out: Path, datasets: list[str], max_mib: float = 30.0) -> list[Path]:
    """One archive per dataset, or ``DATASET.IofK.npz`` parts of at most about ``max_mib`` each."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for dataset in datasets:
        names, blobs = _files(root, dataset)
        chunks: list[list[int]] = [[]]
        size = 0
        for i, blob in enumerate(blobs):  # whole files per part (an IDX file is never cut)
            if chunks[-1] and size + len(blob) > max_mib * 2**20:
                chunks.append([])
                size = 0
            chunks[-1].append(i)
            size += len(blob)
        for old in out.glob(f"{dataset}.*npz"):
            old.unlink()
        for k, rows in enumerate(chunks, 1):
            part_names, part_blobs = [names[i] for i in rows], [blobs[i] for i in rows]
            arrays = {"names": np.frombuffer("\n".join(part_names).encode(), np.uint8),
                      "sizes": np.array([len(b) for b in part_blobs], np.int64),
                      "data": np.frombuffer(b"".join(part_blobs), np.uint8),
                      "sha256": np.frombuffer(_digest(part_blobs, part_names).encode(), np.uint8)}
            path = out / f"{dataset}.{k}of{len(chunks)}.npz"
            save = np.savez_compressed if dataset in IDX else np.savez  # JPEG bytes do not compress

            def fill(tmp: str) -> None:
                with open(tmp, "wb") as fh:  # a handle: np.savez would otherwise add .npz to the temporary name
                    save(fh, **arrays)

            atomic_write_bytes(path, fill)
            written.append(path)
            print(f"packed {dataset} part {k}/{len(chunks)}: {len(rows)} files -> {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return written


def unpack(archives: Path, root: Path, datasets: list[str] | None = None) -> list[str]:
    """Write back every dataset whose parts are all in ``archives`` (``datasets``: these, each required)."""
    found = []
    for dataset in datasets or DATASETS:
        parts = sorted(archives.glob(f"{dataset}.*of*.npz"))
        if not parts:
            if datasets:
                raise SystemExit(f"no {dataset}.*of*.npz in {archives}: run `python benchmarks/gpu_data.py pack` where "
                                 "the datasets are, and carry its parts")
            continue
        total = int(parts[0].name.split("of")[-1].split(".")[0])
        if len(parts) != total:
            raise SystemExit(f"{archives}: {len(parts)} of the {total} parts of {dataset}; carry them all")
        n = 0
        top = IDX.get(dataset, CIFAR)
        with replace_folder(root / top, writer="gpu_data.py unpack") as stage:  # the dataset appears whole, or not at all
            for path in parts:
                with np.load(path) as z:
                    names = bytes(z["names"]).decode().split("\n")
                    sizes, data, want = z["sizes"], bytes(z["data"]), bytes(z["sha256"]).decode()
                if len(names) != len(sizes) or int(sizes.sum()) != len(data):
                    raise SystemExit(f"{path} is damaged: {len(names)} names, {len(sizes)} sizes, {len(data)} bytes of data")
                offsets = np.concatenate([[0], np.cumsum(sizes)])
                blobs = [data[offsets[i] : offsets[i + 1]] for i in range(len(names))]
                if _digest(blobs, names) != want:
                    raise SystemExit(f"{path}: its files do not match the SHA-256 it was packed with; pack and carry it again")
                for name, blob in zip(names, blobs):
                    target = stage / Path(name).relative_to(top)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(blob)
                n += len(names)
        print(f"unpacked {dataset}: {n} files from {total} part(s) into {root}")
        found.append(dataset)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="../shared/datasets -> .gpu_data/*.npz")
    p.add_argument("--root", default="../shared/datasets")
    p.add_argument("--out", default=".gpu_data")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--max-mib", type=float, default=30.0, help="size of one part (a call carries 64 MiB at most)")
    u = sub.add_parser("unpack", help=".gpu_data/*.npz -> a data root in the torchvision layout")
    u.add_argument("--archives", default=".gpu_data")
    u.add_argument("--root", required=True)
    u.add_argument("--datasets", nargs="+", default=None, choices=DATASETS, help="default: every archive present")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        pack(Path(args.root), Path(args.out), args.datasets, args.max_mib)
    else:
        found = unpack(Path(args.archives), Path(args.root), args.datasets)
        print(" ".join(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
