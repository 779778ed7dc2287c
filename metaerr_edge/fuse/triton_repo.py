"""Write a NVIDIA Triton Inference Server model repository for a fused model.

Layout (Triton's documented model repository)::

    <repo>/<name>/config.pbtxt
    <repo>/<name>/1/model.onnx        (or model.plan for a TensorRT engine)
    <repo>/<name>/labels.txt          class names, for the classification extension on "probs"
    <repo>/<name>/contract.json       the metaerr-edge contract, for clients

The fused graph's four outputs map one to one onto Triton outputs. With ``max_batch_size > 0``
Triton owns the batch dimension, so ``dims`` omit it; outputs that are only ``[batch]`` are
declared as ``dims: [ 1 ]`` with ``reshape: { shape: [ ] }``, as Triton's docs prescribe.

Nothing here has been run against a Triton server: the config follows the documented format.

Example:
    >>> write_triton_repository("model.onnx", "repo", "fmnist_metaerr")
    PosixPath('repo/fmnist_metaerr')
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from metaerr_edge._fileio import atomic_write_bytes, atomic_write_text, replace_folder
from metaerr_edge.errors import ConfigError, ContractError
from metaerr_edge.contract.spec import OUTPUT_NAMES, Contract

_KINDS = ("KIND_GPU", "KIND_CPU")
_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8",
                 "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}
_OUTPUT_DTYPES = {"label": "int64", "probs": "float32", "failure_score": "float32", "defer": "bool"}


def write_triton_repository(model_path: str | os.PathLike[str], repo_dir: str | os.PathLike[str],
                            model_name: str, max_batch_size: int = 64,
                            preferred_batch_sizes: Sequence[int] = (8, 32), instance_count: int = 1,
                            kind: str = "KIND_GPU", max_queue_delay_microseconds: int = 100,
                            contract: Contract | None = None) -> Path:
    """Create ``<repo_dir>/<model_name>/`` for Triton from a fused ``.onnx`` (or ``.plan``) file.

    Args:
        model_path: the fused ONNX file, or a TensorRT engine (``.plan``) built from one.
        repo_dir: the model repository (created if missing); other models in it are left alone.
        model_name: the model's folder and Triton name (letters, digits, ``_ . -``).
        max_batch_size: the largest batch Triton forms (> 0; the graph's batch is dynamic).
        preferred_batch_sizes: batch sizes the dynamic batcher aims for (each <= max_batch_size).
        instance_count: model instances per device.
        kind: ``"KIND_GPU"`` or ``"KIND_CPU"``.
        max_queue_delay_microseconds: how long the batcher may hold a request to fill a batch.
        contract: required for a ``.plan`` (an engine carries none); read from the ONNX otherwise.

    Returns:
        The model folder. An existing one of that name is replaced whole, only once the new one
        is complete.
    """
    model_path, repo = Path(model_path), Path(repo_dir)
    plan = model_path.suffix in (".plan", ".engine")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", model_name) or model_name in (".", ".."):
        raise ConfigError(f"model_name {model_name!r} must be a plain folder name (letters, digits, _ . -)")
    if kind not in _KINDS:
        raise ConfigError(f"kind must be one of {_KINDS}, got {kind!r}")
    if max_batch_size < 1 or instance_count < 1 or max_queue_delay_microseconds < 0:
        raise ConfigError(f"need max_batch_size >= 1, instance_count >= 1 and a delay >= 0; got "
                          f"{max_batch_size}, {instance_count}, {max_queue_delay_microseconds}")
    bad = [b for b in preferred_batch_sizes if not 1 <= b <= max_batch_size]
    if bad:
        raise ConfigError(f"preferred batch sizes {bad} lie outside 1..max_batch_size={max_batch_size}")
    if not model_path.is_file():
        raise ConfigError(f"{model_path}: no such model file")
    _check_repository(repo, model_name)
    if plan:
        if contract is None:
            raise ConfigError("a TensorRT .plan carries no contract: pass contract=read_contract(onnx)")
        io = _io_from_contract(contract)
    else:
        from metaerr_edge.fuse.modelfile import load_checked
        from metaerr_edge.contract.reader import read_contract

        contract = contract or read_contract(model_path)
        io = _io_from_onnx(load_checked(model_path), contract)
    _check_labels(contract.classes)
    config = render_config(model_name, "tensorrt_plan" if plan else "onnxruntime_onnx", io,
                           max_batch_size, preferred_batch_sizes, instance_count, kind,
                           max_queue_delay_microseconds)
    # The folder is written whole (metaerr_edge._fileio.replace_folder): umask permissions, under its
    # lock, and swapped in only once complete; on any failure the previous one stays.
    with replace_folder(repo / model_name, writer="write_triton_repository") as staging:
        model_file = staging / "1" / ("model.plan" if plan else "model.onnx")
        atomic_write_bytes(model_file, lambda tmp: shutil.copyfile(model_path, tmp))
        atomic_write_text(staging / "config.pbtxt", config)
        atomic_write_text(staging / "labels.txt", "".join(f"{c}\n" for c in contract.classes))
        atomic_write_text(staging / "contract.json", json.dumps(json.loads(contract.to_json()), indent=2) + "\n")
    return repo / model_name


def render_config(name: str, platform: str, io: list[tuple[str, str, str, list[int]]],
                  max_batch_size: int, preferred_batch_sizes: Sequence[int], instance_count: int,
                  kind: str, max_queue_delay_microseconds: int) -> str:
    """The ``config.pbtxt`` text. ``io`` rows: (``"input"|"output"``, name, dtype, dims w/o batch)."""
    def tensor(name: str, dtype: str, dims: list[int], extra: str = "") -> str:
        shape = f"    dims: [ {', '.join(map(str, dims))} ]" if dims else \
            "    dims: [ 1 ]\n    reshape: { shape: [ ] }"
        return (f"  {{\n    name: {pbtxt_string(name)}\n    data_type: {_TRITON_TYPES[dtype]}\n{shape}\n"
                f"{extra}  }}")

    inputs = [tensor(n, t, d) for kind_, n, t, d in io if kind_ == "input"]
    outputs = [tensor(n, t, d, '    label_filename: "labels.txt"\n' if n == "probs" else "")
               for kind_, n, t, d in io if kind_ == "output"]
    sizes = ", ".join(str(b) for b in sorted(set(preferred_batch_sizes)))
    return "\n".join([
        f"name: {pbtxt_string(name)}",
        f'platform: "{platform}"',
        f"max_batch_size: {max_batch_size}",
        "input [\n" + ",\n".join(inputs) + "\n]",
        "output [\n" + ",\n".join(outputs) + "\n]",
        "dynamic_batching {" + (f"\n  preferred_batch_size: [ {sizes} ]" if sizes else "")
        + f"\n  max_queue_delay_microseconds: {max_queue_delay_microseconds}\n}}",
        f"instance_group [\n  {{\n    count: {instance_count}\n    kind: {kind}\n  }}\n]",
        "",
    ])


def pbtxt_string(text: str) -> str:
    r"""``text`` as a protobuf text-format string literal (quotes, backslashes and control bytes escaped).

    Example:
        >>> print(pbtxt_string('say "hi"'))
        "say \"hi\""
    """
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _check_repository(repo: Path, model_name: str) -> None:
    """``repo`` is a model repository (or nothing yet): refuse a folder holding anything else (a run
    folder, a project), where the new model would be mixed in with unrelated files."""
    if repo.exists() and not repo.is_dir():
        raise ConfigError(f"{repo} is a file; a Triton model repository is a folder")
    if not repo.is_dir():
        return
    strangers = sorted(p.name for p in repo.iterdir() if not p.name.startswith(".") and p.name != model_name
                       and not (p.is_dir() and (p / "config.pbtxt").is_file()))
    if strangers:
        raise ConfigError(f"{repo} is not a Triton model repository: it holds {strangers[:5]}, which are not model "
                          "folders (<name>/config.pbtxt). Pass an empty folder, or an existing model repository")


def _check_labels(classes: Sequence[str]) -> None:
    """labels.txt holds one class name per line: a name with a line break would shift every label after it."""
    bad = [c for c in classes if any(ch in c for ch in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")]
    if bad:
        raise ConfigError(f"class names {bad[:3]!r} contain a line break, which Triton's labels.txt (one name per "
                          "line) cannot hold; rename those classes (contract.classes) before exporting for Triton")


def _io_from_contract(contract: Contract) -> list[tuple[str, str, str, list[int]]]:
    spec = contract.input
    rows = [("input", spec.name, spec.dtype, [int(d) for d in spec.shape[1:]])]
    return rows + [("output", n, _OUTPUT_DTYPES[n], [contract.num_classes] if n == "probs" else [])
                   for n in OUTPUT_NAMES]


def _io_from_onnx(model: object, contract: Contract) -> list[tuple[str, str, str, list[int]]]:
    """Read names, dtypes and dims from the graph itself; every batch dim must be symbolic."""
    import onnx

    graph = model.graph  # type: ignore[attr-defined]
    rows = []
    for kind_, values in (("input", graph.input), ("output", graph.output)):
        for value in values:
            tensor_type = value.type.tensor_type
            dims = list(tensor_type.shape.dim)
            if not dims or not dims[0].dim_param:
                raise ContractError(f"'{value.name}' has no symbolic batch dimension; Triton with "
                                    "max_batch_size > 0 needs one. Re-export with metaerr-edge.")
            if any(not d.dim_value for d in dims[1:]):
                raise ContractError(f"'{value.name}' has a dynamic non-batch dimension {dims}")
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
            if dtype not in _TRITON_TYPES:
                raise ContractError(f"'{value.name}' has dtype {dtype}, which this writer does not map")
            rows.append((kind_, value.name, dtype, [d.dim_value for d in dims[1:]]))
    names = [r[1] for r in rows if r[0] == "output"]
    if tuple(names) != tuple(contract.outputs):
        raise ContractError(f"graph outputs {names} differ from the contract's {list(contract.outputs)}")
    return rows
