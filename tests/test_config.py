"""RunConfig: nested frozen sections, each setting written once, read back from every config.json."""

from __future__ import annotations

import pytest

from metaerr_edge.config import BaseConfig, DataConfig, MetaConfig, RunConfig
from metaerr_edge.errors import ConfigError

#: a config.json "config" as train_run wrote it before configs were nested
FLAT = {"dataset": "digits", "root": None, "download": False, "arch": "small_cnn", "arch_kwargs": {"width": 8},
        "meta_modes": ["probs", "mentor"], "labels": "heldout", "folds": 3, "epochs": 2, "batch_size": 64, "lr": 0.01,
        "augment": "auto", "meta_epochs": 7, "meta_hidden": 32, "meta_image_width": 8, "mentor_arch": "small_cnn",
        "mentor_kwargs": {}, "meta_target": "error", "meta_fraction": 0.3, "calib_fraction": 0.15, "test_fraction": 0.2,
        "max_pool": 500, "max_test": None, "seed": 4, "device": "cpu"}


def test_a_flat_config_from_an_older_run_folder_reads_into_the_sections():
    cfg = RunConfig.from_dict(FLAT)
    assert cfg == RunConfig(
        DataConfig(meta_fraction=0.3, calib_fraction=0.15, max_pool=500),
        BaseConfig(arch_kwargs={"width": 8}, epochs=2, batch_size=64, lr=0.01),
        MetaConfig(modes=("probs", "mentor"), labels="heldout", folds=3, epochs=7, target="error", hidden=32, image_width=8,
                   skip="none"),  # trained before stacked heads existed: unstacked, whatever today's default
        seed=4,
    )  # fmt: skip
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # and the nested form round-trips
    assert cfg.to_dict()["meta"]["modes"] == ("probs", "mentor")


def test_the_stage_configs_are_derived_from_the_sections():
    from metaerr_edge.pipeline import fit_config, head_config, meta_fit_config, split_config

    cfg = RunConfig.from_dict(FLAT)
    fit = fit_config(cfg, channels=3, seed_offset=7)
    assert (fit.epochs, fit.batch_size, fit.lr, fit.augment, fit.seed) == (2, 64, 0.01, "shift_flip", 11)
    assert fit_config(cfg, channels=1).augment == "shift"
    head = head_config(cfg, "mentor-features")
    assert (head.mode, head.hidden, head.image_width, head.target) == ("mentor-features", 32, 8, "error")
    assert head_config(RunConfig(), "mentor-features").target == "tcp" and head_config(RunConfig(), "probs").target == "error"
    split = split_config(cfg)
    assert (split.meta_fraction, split.calib_fraction, split.max_pool, split.seed) == (0.3, 0.15, 500, 4)
    assert (meta_fit_config(cfg, 2).epochs, meta_fit_config(cfg, 2).seed) == (7, 6)


@pytest.mark.parametrize("raw, message", [
    ({"meta": {"modes": ["weights"]}}, "meta modes ['weights']: each must be one of"),
    ({"meta": {"modes": ["probs", "probs"]}}, "name a mode more than once"),
    ({"meta": {"folds": 1}}, "MetaConfig fields must be integers >= 2: {'folds': 1}"),
    ({"meta": {"labels": "both"}}, "labels must be 'crossfit' or 'heldout'"),
    ({"meta": {"widht": 3}}, "unknown RunConfig.meta field(s) ['widht']"),
    ({"base": {"epochs": 0}}, "BaseConfig fields must be integers >= 1: {'epochs': 0}"),
    ({"base": {"lr": float("nan")}}, "lr must be a finite number > 0"),
    ({"base": {"arch_kwargs": None}}, "BaseConfig fields have the wrong type: {'arch_kwargs': 'NoneType'}"),
    ({"data": {"download": "yes"}}, "DataConfig fields have the wrong type: {'download': 'str'}"),
    ({"meta": {"mentor_kwargs": []}}, "MetaConfig fields have the wrong type: {'mentor_kwargs': 'list'}"),
    ({"data": {"calib_fraction": 1.5}}, "strictly between 0 and 1: {'calib_fraction': 1.5}"),
    ({"data": {"max_pool": True}}, "DataConfig fields must be integers >= 1: {'max_pool': True}"),
    ({"data": []}, "RunConfig.data must be a JSON object, got list"),
    ({"seed": -1}, "RunConfig fields must be integers from 0 to 2147483647"),
    ({"epochs": 3, "base": {"epochs": 2}}, "unknown RunConfig field(s) ['epochs']"),
])  # fmt: skip
def test_a_wrong_setting_is_one_clear_error(raw, message):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(raw)
    assert message in str(info.value)


def test_sections_are_frozen_and_typed():
    cfg = RunConfig()
    with pytest.raises(AttributeError):
        cfg.base.epochs = 3  # type: ignore[misc]
    with pytest.raises(ConfigError, match="RunConfig.meta must be a MetaConfig, got dict"):
        RunConfig(meta={"epochs": 3})  # type: ignore[arg-type]
    assert MetaConfig(modes=["probs"]).modes == ("probs",)  # a list is kept as a tuple (hashable, comparable)
    assert BaseConfig().arch_kwargs is not BaseConfig().arch_kwargs  # no shared mutable default


def test_what_only_training_can_check_is_checked_when_training_starts(tmp_path):
    from metaerr_edge.errors import UnknownName
    from metaerr_edge.pipeline import check_config, train_run

    gpu_run = RunConfig(device="cuda:7")  # a run trained elsewhere on a GPU: its config reads on any machine
    assert RunConfig.from_dict(gpu_run.to_dict()).device == "cuda:7"
    with pytest.raises(UnknownName, match="unknown base architecture 'vgg99'; expected one of"):
        check_config(RunConfig(base=BaseConfig(arch="vgg99")))
    with pytest.raises(UnknownName, match="'vgg99'"):
        train_run(RunConfig(meta=MetaConfig(mentor_arch="vgg99")), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before any work


def test_the_flat_keywords_of_earlier_versions_say_where_they_went():
    with pytest.raises(ConfigError) as info:
        RunConfig(epochs=5, meta_modes=("probs",))  # type: ignore[call-arg]
    assert "epochs -> base=BaseConfig(epochs=...)" in str(info.value)
    assert "meta_modes -> meta=MetaConfig(modes=...)" in str(info.value)


def test_modes_given_as_one_string_are_a_comma_list_not_letters():
    assert MetaConfig(modes="probs").modes == ("probs",)
    assert MetaConfig(modes="probs, mentor").modes == ("probs", "mentor")


def test_the_stage_configs_share_the_run_config_defaults():
    """The library's own configs (for callers outside a run) default to what a run uses."""
    from metaerr_edge.data import SplitConfig
    from metaerr_edge.meta import HeadConfig, MetaFitConfig
    from metaerr_edge.models import FitConfig

    d, b, m = DataConfig(), BaseConfig(), MetaConfig()
    fit, head, meta_fit, split = FitConfig(), HeadConfig(), MetaFitConfig(), SplitConfig()
    assert (fit.epochs, fit.batch_size, fit.lr) == (b.epochs, b.batch_size, b.lr)
    assert (head.hidden, head.image_width, head.mentor_arch) == (m.hidden, m.image_width, m.mentor_arch)
    assert meta_fit.epochs == m.epochs
    assert (split.meta_fraction, split.calib_fraction, split.test_fraction) == (d.meta_fraction, d.calib_fraction, d.test_fraction)


def test_a_preset_sets_its_fields_and_an_option_given_explicitly_wins():
    import argparse

    from metaerr_edge.commands.train import add_parser
    from metaerr_edge.config import PRESETS, config_from_args

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    plain = config_from_args(parser.parse_args(["train"]))
    for name, fields_ in PRESETS.items():
        cfg = config_from_args(parser.parse_args(["train", "--preset", name]))
        for path, value in fields_.items():
            section, _, field_name = path.partition(".")
            assert getattr(getattr(cfg, section), field_name) == value, (name, path)
        assert cfg.base == plain.base and cfg.data == plain.data  # a preset touches its own fields only
    # an explicit option wins, even when it spells the field's default
    cfg = config_from_args(parser.parse_args(["train", "--preset", "robust", "--shift-views", "0", "--meta-skip", "auto"]))
    assert (cfg.meta.modes, cfg.meta.shift_views, cfg.meta.skip) == (PRESETS["robust"]["meta.modes"], 0, "auto")
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--preset", "fastest"])
