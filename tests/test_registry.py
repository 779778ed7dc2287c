"""The generic Registry, and the five registries built on it (sources, bases, scores, selectors, backends)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from metaerr_edge.data import available_sources, load_dataset
from metaerr_edge.data.sources import SOURCES
from metaerr_edge.errors import ConfigError, UnknownName, UnknownParameter
from metaerr_edge.models import available_bases, create_base
from metaerr_edge.models.registry import BASES
from metaerr_edge.registry import Registry
from metaerr_edge.runtime import available_backends, open_session
from metaerr_edge.runtime.session import BACKENDS, Backend
from metaerr_edge.scores import Scorer, available_scores, create_score
from metaerr_edge.scores.base import SCORES
from metaerr_edge.semisup import available_selectors, create_selector
from metaerr_edge.semisup.selectors import SELECTORS, Selector

# --- Registry itself ---------------------------------------------------------------------------


def _widget_registry() -> Registry:
    reg: Registry = Registry("widget")

    @reg.register("zeta", colour="red")
    def zeta(size: int = 1, *, shape: str = "round") -> tuple[int, str]:
        return size, shape

    @reg.register("alpha")
    def alpha() -> str:
        return "alpha"

    return reg


def test_register_get_and_available_in_registration_order() -> None:
    reg = _widget_registry()
    assert reg.available() == ("zeta", "alpha")  # registration order, not sorted
    assert reg.get("alpha")() == "alpha"
    assert "zeta" in reg and "beta" not in reg and 3 not in reg
    entry = reg.entry("zeta")
    assert (entry.name, dict(entry.meta)) == ("zeta", {"colour": "red"})
    assert dict(reg.entry("alpha").meta) == {}
    with pytest.raises(TypeError):
        entry.meta["colour"] = "blue"  # type: ignore[index]  # metadata is read-only
    assert [e.name for e in reg.entries()] == ["zeta", "alpha"]


def test_duplicate_registration_is_refused_but_the_same_object_again_is_a_no_op() -> None:
    reg = _widget_registry()
    with pytest.raises(ConfigError, match="widget 'alpha' is registered twice"):
        reg.register("alpha")(lambda: "other")
    same = reg.get("alpha")
    assert reg.register("alpha")(same) is same
    with pytest.raises(ConfigError, match="registered twice"):  # same object, other metadata
        reg.register("alpha", colour="blue")(same)
    assert reg.available() == ("zeta", "alpha") and reg.get("alpha") is same
    with pytest.raises(ConfigError, match="non-empty name"):
        reg.register("")


def test_create_checks_options_against_the_signature() -> None:
    reg = _widget_registry()
    assert reg.params("zeta") == ("size", "shape")
    assert reg.params("alpha") == ()
    assert reg.create("zeta", size=3, shape="square") == (3, "square")
    assert reg.create("zeta") == (1, "round")
    with pytest.raises(UnknownParameter) as info:
        reg.create("zeta", size=2, colour="red", weight=1)
    assert str(info.value) == "widget 'zeta' takes options ['shape', 'size'], got unknown ['colour', 'weight']"
    assert info.value.unknown == ("colour", "weight") and info.value.accepted == ("shape", "size")
    with pytest.raises(UnknownParameter, match=r"^widget 'alpha' takes no options, got unknown \['x'\]$"):
        reg.create("alpha", x=1)


def test_unknown_name_lists_the_choices() -> None:
    reg = _widget_registry()
    for call in (lambda: reg.get("beta"), lambda: reg.create("beta", size=1), lambda: reg.params("beta")):
        with pytest.raises(UnknownName) as info:
            call()
        assert str(info.value) == "unknown widget 'beta'; expected one of ['zeta', 'alpha']"
        assert (info.value.kind, info.value.name, info.value.choices) == ("widget", "beta", ("zeta", "alpha"))
        assert isinstance(info.value, ConfigError)
    with pytest.raises(UnknownName, match=r"unknown widget \['x'\]"):
        reg.get(["x"])  # type: ignore[arg-type]


def test_typed_errors_pickle_with_their_fields() -> None:
    for err in (UnknownName("widget", "beta", ["a"]), UnknownParameter("widget", "a", ["x"], ["y"])):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)


def test_positional_arguments_are_not_options_and_kwargs_accept_anything() -> None:
    reg: Registry = Registry("model", positional=2)

    @reg.register("net")
    def net(channels: int, classes: int, width: int = 8) -> tuple[int, int, int]:
        return channels, classes, width

    @reg.register("open")
    def open_(channels: int, classes: int, **kwargs: int) -> dict:
        return kwargs

    assert reg.params("net") == ("width",)
    assert reg.create("net", 1, 10, width=4) == (1, 10, 4)
    with pytest.raises(UnknownParameter, match=r"takes options \['width'\], got unknown \['classes'\]"):
        reg.create("net", 1, classes=10)
    assert reg.params("open") is None
    assert reg.create("open", 1, 2, anything=5) == {"anything": 5}


def test_dataclass_fields_factory_hook_and_name_attribute() -> None:
    reg: Registry = Registry("gadget", factory=lambda cls: cls.build, name_attr="label")

    @reg.register("g")
    @dataclass(frozen=True)
    class Gadget:
        size: int = 1
        label = ""

        @classmethod
        def build(cls, where: str, *, size: int = 1) -> tuple[str, "Gadget"]:
            return where, cls(size)

    assert Gadget.label == "g"
    assert reg.params("g") == ("where", "size")  # the hook's signature, not the dataclass's
    assert reg.create("g", "here", size=2) == ("here", Gadget(2))
    plain: Registry = Registry("plain")
    plain.register("g")(Gadget)
    assert plain.params("g") == ("size",)  # a dataclass's fields are its options
    assert plain.create("g", size=3) == Gadget(3)


def test_loader_runs_lazily_once_and_again_only_after_a_failure() -> None:
    calls: list[int] = []
    reg: Registry = Registry("plugin", loader=lambda: (calls.append(1), reg.register(f"p{len(calls)}")(object())))
    reg.register("first")(object())  # registering does not load
    assert calls == []
    assert reg.available() == ("first", "p1") and calls == [1]
    assert reg.available() == ("first", "p1") and "p1" in reg and reg.get("p1") is not None
    assert calls == [1]

    attempts: list[int] = []

    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ImportError("not yet")
        retry.register("late")(object())

    retry: Registry = Registry("plugin", loader=flaky)
    with pytest.raises(ImportError):
        retry.available()
    assert retry.available() == ("late",) and len(attempts) == 2
    assert retry.available() == ("late",) and len(attempts) == 2


# --- the five registries --------------------------------------------------------------------------

FIVE = {"dataset": SOURCES, "base architecture": BASES, "failure score": SCORES, "selector": SELECTORS,
        "backend": BACKENDS}
PUBLIC_LISTS = {"dataset": available_sources, "base architecture": available_bases, "failure score": available_scores,
                "selector": available_selectors, "backend": available_backends}


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"  # names are checked before the file is read
    path.write_bytes(b"")
    return path


def _unknown_name(kind: str, model_file: Path) -> None:
    calls = {
        "dataset": lambda: load_dataset("nope"),
        "base architecture": lambda: create_base("nope", 1, 10, (28, 28)),
        "failure score": lambda: create_score("nope"),
        "selector": lambda: create_selector("nope"),
        "backend": lambda: open_session(model_file, backend="nope"),
    }
    calls[kind]()


@pytest.mark.parametrize("kind", FIVE)
def test_each_registry_is_a_non_empty_registry_behind_its_public_list(kind: str) -> None:
    reg = FIVE[kind]
    assert isinstance(reg, Registry) and reg.kind == kind
    assert len(reg.available()) >= 3
    assert sorted(PUBLIC_LISTS[kind]()) == sorted(reg.available())


@pytest.mark.parametrize("kind", FIVE)
def test_each_unknown_name_raises_unknown_name_naming_the_kind(kind: str, model_file: Path) -> None:
    with pytest.raises(UnknownName) as info:
        _unknown_name(kind, model_file)
    assert info.value.kind == kind and info.value.name == "nope"
    assert str(info.value).startswith(f"unknown {kind} 'nope'; expected one of [")
    assert set(FIVE[kind].available()) <= set(info.value.choices)
    assert set(info.value.choices) - set(FIVE[kind].available()) == ({"auto"} if kind == "backend" else set())


@pytest.mark.parametrize("kind,call", [
    ("base architecture", lambda f: create_base("small_cnn", 1, 10, (28, 28), colour=1)),
    ("failure score", lambda f: create_score("msp", colour=1)),
    ("selector", lambda f: create_selector("confidence", colour=1)),
    ("backend", lambda f: open_session(f, backend="onnxruntime", colour=1)),
])
def test_each_unknown_option_raises_unknown_parameter_naming_the_kind(kind: str, call, model_file: Path) -> None:
    with pytest.raises(UnknownParameter) as info:
        call(model_file)
    assert info.value.kind == kind and info.value.unknown == ("colour",)
    assert info.value.accepted == tuple(sorted(FIVE[kind].params(info.value.name)))


def test_registered_objects_have_the_expected_types_and_metadata() -> None:
    assert all(issubclass(SCORES.get(n), Scorer) for n in SCORES.available())
    assert all(issubclass(SELECTORS.get(n), Selector) for n in SELECTORS.available())
    assert all(issubclass(BACKENDS.get(n), Backend) and BACKENDS.get(n).name == n for n in BACKENDS.available())
    assert {n: BACKENDS.entry(n).meta["auto_priority"] for n in BACKENDS.available()} == {
        "tensorrt": 0, "onnxruntime-cuda": 10, "onnxruntime": 20, "torch": None}
    assert BACKENDS.params("onnxruntime") == ("intra_op_num_threads", "inter_op_num_threads")
    assert {"imagefolder:PATH", "npz:PATH", "digits"} <= set(SOURCES.available())
    assert dict(SOURCES.entry("npz:PATH").meta)["where"] == "npz file"


@pytest.mark.parametrize("name", available_scores())
def test_every_score_is_created_with_its_defaults_and_checks_its_params(name: str) -> None:
    cls = SCORES.get(name)
    scorer = create_score(name)
    assert type(scorer) is cls and scorer.name == name
    assert scorer.params == dict(cls.PARAMS)
    assert SCORES.params(name) == tuple(cls.PARAMS)
    assert create_score(name, **cls.PARAMS).params == dict(cls.PARAMS)
    with pytest.raises(UnknownParameter, match=f"failure score '{name}' takes"):
        cls(not_a_param=1)  # direct construction checks too


def test_scorer_params_are_what_each_scorer_reads() -> None:
    accepted = {n: SCORES.params(n) for n in available_scores()}
    assert accepted == {
        "msp": (), "entropy": (), "margin": (), "doctor-gini": (), "doctor-ratio": (), "temperature": (),
        "metaerr": ("mode",), "mc-dropout": ("passes", "stat", "seed"), "trustscore": ("k", "alpha", "max_per_class"),
        "confidnet": ("hidden", "layers", "epochs", "lr"),
        "maxlogit-pnorm": ("p",), "rel-u": ("lam",), "logit-margin": (),
    }
    assert create_score("trustscore", k=5).params == {"k": 5, "alpha": 0.05, "max_per_class": 1000}


@pytest.mark.parametrize("name", available_selectors())
def test_every_selector_is_created_with_its_defaults(name: str) -> None:
    sel = create_selector(name)
    assert type(sel) is SELECTORS.get(name) and sel.name == name
    assert tuple(sel.params()) == SELECTORS.params(name) and len(sel.params()) >= 1


@pytest.mark.parametrize("name", available_bases())
def test_every_base_is_created_with_its_defaults(name: str) -> None:
    net = create_base(name, 1, 10, (28, 28), seed=0).eval()
    assert isinstance(net, nn.Module)
    with torch.no_grad():
        assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    again = create_base(name, 1, 10, (28, 28), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


def test_a_backend_registered_without_an_auto_priority_is_never_tried_by_auto() -> None:
    from metaerr_edge.runtime.session import BACKENDS, Backend, auto_order

    before = auto_order()

    @BACKENDS.register("plain-test-backend")  # the generic API: no auto_priority metadata at all
    class Plain(Backend):
        pass

    try:
        assert auto_order() == before and "plain-test-backend" not in auto_order()
    finally:
        BACKENDS._entries.pop("plain-test-backend", None)
