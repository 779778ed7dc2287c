"""Corpus: options given through the Python API are checked where they are taken, and generated files
cannot be injected (Triton's config.pbtxt and labels.txt)."""

from __future__ import annotations

import shutil

import pytest

from metaerr_edge.errors import ConfigError
from metaerr_edge.contract.spec import Contract, InputSpec
from metaerr_edge.fuse.triton_repo import pbtxt_string, render_config, write_triton_repository
from metaerr_edge.runtime import open_session


@pytest.mark.parametrize(("options", "fragment"), [
    ({"intra_op_num_threads": -1}, "intra_op_num_threads must be an integer from 1 to 1024"),
    ({"intra_op_num_threads": 0}, "intra_op_num_threads must be an integer from 1 to 1024"),
    ({"intra_op_num_threads": "two"}, "got 'two'"),
    ({"intra_op_num_threads": 10**6}, "got 1000000"),  # ONNX Runtime would try to start them all: a hang
    ({"intra_op_num_threads": 1.5}, "got 1.5"),
    ({"intra_op_num_threads": True}, "got True"),
    ({"inter_op_num_threads": -2}, "inter_op_num_threads must be an integer from 1 to 1024"),
])
def test_thread_options_are_refused_before_a_session_starts(tiny_model, options, fragment):
    path, _ = tiny_model
    for backend in ("onnxruntime", "auto"):
        with pytest.raises(ConfigError, match=fragment):
            open_session(path, backend=backend, **options)


@pytest.mark.parametrize("threads", [1, 2, None])
def test_valid_thread_options_run(tiny_model, threads):
    path, _ = tiny_model
    import numpy as np

    with open_session(path, backend="onnxruntime", intra_op_num_threads=threads) as s:
        assert len(s.predict(np.zeros((2, 1, 8, 8), np.float32))) == 2


@pytest.mark.parametrize(("text", "literal"), [
    ("image", '"image"'),
    ('im"age', '"im\\"age"'),
    ("back\\slash", '"back\\\\slash"'),
    ("new\nline", '"new\\nline"'),
    ("tab\tand\x7f", '"tab\\011and\\177"'),
    ("ünïcode ok", '"ünïcode ok"'),
])
def test_pbtxt_strings_are_escaped(text, literal):
    assert pbtxt_string(text) == literal


def test_a_tensor_name_cannot_inject_config_lines():
    io = [("input", 'image"\n  data_type: TYPE_STRING #', "float32", [1, 8, 8])]
    text = render_config("m", "onnxruntime_onnx", io, 8, (), 1, "KIND_CPU", 0)
    lines = text.splitlines()
    assert '    name: "image\\"\\n  data_type: TYPE_STRING #"' in lines  # one line, one escaped literal
    assert [line.strip() for line in lines if line.strip().startswith("data_type:")] == ["data_type: TYPE_FP32"]


@pytest.mark.parametrize("bad", ["two\nlines", "carriage\rreturn", "line\u2028separator"])
def test_class_names_with_line_breaks_are_refused_for_triton(tiny_model, tmp_path, bad):
    path, _ = tiny_model
    contract = Contract(input=InputSpec(channels=1, height=8, width=8), classes=("a", bad, "c"))
    plan = tmp_path / "model.plan"
    shutil.copy(path, plan)  # an engine carries no contract: this is the path where a user passes one
    with pytest.raises(ConfigError, match="contain a line break"):
        write_triton_repository(plan, tmp_path / "repo", "m", contract=contract)
    assert not (tmp_path / "repo" / "m").exists()
