"""Base-model registry, the seams every base has (models/seams.py), and the training loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from metaerr_edge.data import load_dataset, make_splits
from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.models import FitConfig, available_bases, create_base, fit_classifier, predict_probs


@pytest.mark.parametrize("name", available_bases())
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_every_base_maps_images_to_logits_through_the_seams(name, shape):
    """Logits N x K; forward_features -> N x num_features, a linear classifier last, head_drop holding every dropout."""
    from metaerr_edge.scores.mc_dropout import dropout_layers

    net = create_base(name, in_channels=shape[0], num_classes=7, image_size=shape[1:], seed=0).eval()
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats, logits = net.forward_features(x), net(x)
        assert logits.shape == (3, 7)
        assert isinstance(net.num_features, int) and feats.shape == (3, net.num_features)
        assert isinstance(net.classifier, nn.Linear)
        assert (net.classifier.in_features, net.classifier.out_features) == (net.num_features, 7)
        torch.testing.assert_close(logits, net.classifier(feats), atol=1e-6, rtol=0)
        assert isinstance(net.head_drop, nn.Module) and set(dropout_layers(net)) <= set(net.head_drop.modules())
        net.train()  # the full contract, dropout and batch statistics on: the same masks for the same seed
        torch.manual_seed(2)
        train_logits = net(x)
        torch.manual_seed(2)
        torch.testing.assert_close(train_logits, net.classifier(net.head_drop(net.forward_features(x))), atol=1e-6, rtol=0)


def test_registry_lists_the_required_architectures():
    assert {"small_cnn", "resnet18", "mobilenet_v3_small"} <= set(available_bases())
    with pytest.raises(ConfigError, match="unknown base architecture 'vgg99'.*small_cnn"):
        create_base("vgg99", 1, 10, (8, 8))


def test_small_cnn_learns_digits_far_above_chance():
    ds = load_dataset("digits")
    s = make_splits(ds)
    tr, te = s.arrays(ds, "base_train"), s.arrays(ds, "test")
    pre = Preprocess(*ds.channel_stats())
    net = fit_classifier(create_base("small_cnn", 1, 10, (8, 8)), tr.images, tr.labels, pre, FitConfig(epochs=6), progress=False)
    probs = predict_probs(net, te.images, pre)
    assert probs.shape == (len(te), 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == te.labels).mean() > 0.9  # chance is 0.1


def test_training_on_an_empty_split_is_a_clear_error():
    with pytest.raises(DataError, match="empty split"):
        fit_classifier(create_base("small_cnn", 1, 10, (8, 8)), np.zeros((0, 1, 8, 8), np.uint8), np.zeros(0), Preprocess([0.0], [1.0]))
    with pytest.raises(ConfigError, match="augment"):
        FitConfig(augment="mixup")


def test_mixed_precision_is_cuda_only_and_auto_means_float32_on_cpu():
    from metaerr_edge.config import RunConfig
    from metaerr_edge.models.training import amp_dtype

    assert amp_dtype("auto", torch.device("cpu")) is None and amp_dtype("bf16", torch.device("cpu")) is None
    assert FitConfig(amp="auto").amp == "auto" and FitConfig(amp="off").amp == "off"
    for amp in ("bf16", "fp16"):
        with pytest.raises(ConfigError, match=f"amp '{amp}' is mixed precision on CUDA.*--amp auto or off"):
            FitConfig(amp=amp, device="cpu")
    with pytest.raises(ConfigError, match="amp must be"):
        FitConfig(amp="int8")
    with pytest.raises(ConfigError, match="RunConfig.amp must be one of"):
        RunConfig(amp="half")
    assert RunConfig.from_dict({k: v for k, v in RunConfig().to_dict().items() if k != "amp"}).amp == "auto"  # old config.json


def _plain_torchvision(name: str, channels: int, num_classes: int) -> nn.Module:
    """The registry's torchvision models as built before the seams (the layout older run folders hold)."""
    if name == "resnet18":
        net = torchvision.models.resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        return net
    net = torchvision.models.mobilenet_v3_small(num_classes=num_classes)
    net.features[0][0] = nn.Conv2d(channels, 16, kernel_size=3, stride=1, padding=1, bias=False)
    return net


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_bases_load_the_plain_layout_and_give_its_logits(name):
    torch.manual_seed(0)
    plain = _plain_torchvision(name, 3, 5)
    with torch.no_grad():  # lively weights: at torchvision's init MobileNetV3's logits barely depend on the image
        for m in plain.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None  # running statistics = those of the one batch below
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.3)
        plain.train()(torch.randn(16, 3, 32, 32))
    plain.eval()
    net = create_base(name, 3, 5, (32, 32))
    net.load_state_dict(plain.state_dict())  # strict: every key renamed onto the seams
    net.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = plain(x)
        assert float(expected.std(0).min()) > 1e-3  # logits that depend on the image
        torch.testing.assert_close(net(x), expected, atol=1e-6, rtol=0)
        again = create_base(name, 3, 5, (32, 32))
        again.load_state_dict(net.state_dict())  # and the new layout loads as it is
        torch.testing.assert_close(again.eval()(x), expected, atol=1e-6, rtol=0)
    assert {k.split(".")[0] for k in net.state_dict()} == {"body", "classifier"}


def test_a_model_without_feature_seams_is_one_config_error_naming_them():
    from metaerr_edge.models.seams import feature_seams

    with pytest.raises(ConfigError, match=r"^trustscore reads hidden features, but Sequential has no forward_features\(x\) "
                                          r"method .* and no nn.Linear .classifier"):
        feature_seams(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), "trustscore")

    class HalfSeamed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.classifier = nn.Sequential(nn.Linear(4, 2))

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)

    with pytest.raises(ConfigError, match=r"HalfSeamed has no nn.Linear .classifier \(D -> K logits\); add") as info:
        feature_seams(HalfSeamed(), "confidnet")
    assert "forward_features(x) method" not in str(info.value)
    small = create_base("small_cnn", 1, 3, (8, 8))
    assert feature_seams(small, "x") == (small.forward_features, small.classifier)


def test_an_option_an_architecture_does_not_have_is_refused():
    from metaerr_edge.errors import UnknownParameter

    with pytest.raises(UnknownParameter, match="resnet18"):
        create_base("resnet18", 3, 10, (32, 32), width=32)  # torchvision's ResNet widths are fixed
    assert create_base("small_cnn", 1, 10, (8, 8), width=8).num_features == 4 * 8


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_a_run_identity_hashes_the_plain_torchvision_layout(arch):
    """Run.identity hashes canonical_state_dict: a model exported before the seam adapter existed
    (plain torchvision keys) still matches its run after the adapter renamed the keys."""
    import torchvision

    from metaerr_edge.meta import HeadConfig, MetaModel
    from metaerr_edge.models.seams import canonical_state_dict

    torch.manual_seed(0)
    net = create_base(arch, 3, 10, (32, 32))
    plain = getattr(torchvision.models, arch)(num_classes=10).state_dict()
    canonical = canonical_state_dict(net)
    assert sorted(canonical) == sorted(plain) and len(canonical) == len(net.state_dict())
    pointers = {t.data_ptr() for t in canonical.values()}
    assert all(t.data_ptr() in pointers for t in net.state_dict().values())  # the same tensors, other names
    meta = MetaModel(HeadConfig("mentor", mentor_arch=arch), 3, 10, (32, 32))  # a mentor inside a meta-model too
    assert {k.removeprefix("mentor.") for k in canonical_state_dict(meta) if k.startswith("mentor.")} == set(plain)
    small = create_base("small_cnn", 1, 10, (8, 8))
    assert list(canonical_state_dict(small)) == list(small.state_dict())  # no adapter: unchanged


def _weights(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_an_interrupted_training_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, monkeypatch):
    """Killed in epoch 2 of 3, the next call with the checkpoint goes on after epoch 1 and ends with
    the uninterrupted weights, bit for bit (dropout, augmentation and row order included); a finished
    checkpoint trains no step; another setting's or a cut-short file is ignored, not loaded."""
    from metaerr_edge.models import training

    ds = load_dataset("digits")
    tr = make_splits(ds).arrays(ds, "base_train")
    pre = Preprocess(*ds.channel_stats())
    cfg = FitConfig(epochs=3, batch_size=64)
    net = lambda: create_base("small_cnn", 1, 10, (8, 8), seed=0)  # noqa: E731
    want = _weights(fit_classifier(net(), tr.images, tr.labels, pre, cfg, progress=False))
    steps = -(-len(tr) // 64)
    real, calls = training._augment, []

    def dies_in_epoch_2(x, *a):
        calls.append(1)
        if len(calls) == steps + 2:
            raise KeyboardInterrupt
        return real(x, *a)

    ckpt = tmp_path / "resume" / "base.pt"
    monkeypatch.setattr(training, "_augment", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        fit_classifier(net(), tr.images, tr.labels, pre, cfg, progress=False, checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    calls.clear()
    monkeypatch.setattr(training, "_augment", lambda x, *a: calls.append(1) or real(x, *a))
    got = _weights(fit_classifier(net(), tr.images, tr.labels, pre, cfg, progress=False, checkpoint=ckpt))
    assert len(calls) == 2 * steps  # epochs 2 and 3 only
    assert all(torch.equal(got[k], want[k]) for k in want)
    calls.clear()
    again = _weights(fit_classifier(net(), tr.images, tr.labels, pre, cfg, progress=False, checkpoint=ckpt))
    assert calls == [] and all(torch.equal(again[k], want[k]) for k in want)  # finished: restored, no step
    # another learning rate (or other rows, or other initial weights) is another training: from scratch
    other = FitConfig(epochs=3, batch_size=64, lr=1e-3)
    fresh = _weights(fit_classifier(net(), tr.images, tr.labels, pre, other, progress=False))
    calls.clear()
    redone = _weights(fit_classifier(net(), tr.images, tr.labels, pre, other, progress=False, checkpoint=ckpt))
    assert len(calls) == 3 * steps and all(torch.equal(redone[k], fresh[k]) for k in fresh)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 3  # now the other training's
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # cut short: trained anew, the file rewritten
    calls.clear()
    fit_classifier(net(), tr.images, tr.labels, pre, cfg, progress=False, checkpoint=ckpt)
    assert len(calls) == 3 * steps and torch.load(ckpt, weights_only=True)["epoch"] == 3


def test_a_run_killed_after_its_base_trained_goes_on_from_the_finished_base(tmp_path, monkeypatch):
    """train_run(resume=True) keeps the base's per-epoch state beside the run folder: killed while
    fitting the meta-model, the same training again restores the finished base (no epoch trained
    again), writes the run an uninterrupted training writes, and removes the state. Without resume
    nothing is kept."""
    from metaerr_edge import pipeline
    from metaerr_edge.config import BaseConfig, MetaConfig, RunConfig
    from metaerr_edge.models import training

    config = RunConfig(base=BaseConfig(epochs=3), meta=MetaConfig(modes=("probs",), epochs=3))
    want = pipeline.train_run(config, tmp_path / "whole", progress=False, resume=True).predictions
    assert not (tmp_path / ".whole.resume").exists()

    def killed(*a, **k):
        raise KeyboardInterrupt

    real_fit = pipeline.fit_meta_mode
    monkeypatch.setattr(pipeline, "fit_meta_mode", killed)
    with pytest.raises(KeyboardInterrupt):
        pipeline.train_run(config, tmp_path / "plain", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whole"]  # nothing kept without resume
    with pytest.raises(KeyboardInterrupt):
        pipeline.train_run(config, tmp_path / "run", progress=False, resume=True)
    assert not (tmp_path / "run").exists() and (tmp_path / ".run.resume" / "base.pt").is_file()
    restored = []
    real_restore = training._Checkpoint.restore
    monkeypatch.setattr(training._Checkpoint, "restore", lambda self, *a: restored.append(real_restore(self, *a)) or restored[-1])
    monkeypatch.setattr(pipeline, "fit_meta_mode", real_fit)
    got = pipeline.train_run(config, tmp_path / "run", progress=False, resume=True).predictions
    assert restored == [3]  # the base's 3 epochs, none trained again
    for name in ("test_probs", "calib_probs", "test_score_probs"):
        np.testing.assert_array_equal(got[name], want[name])
    assert not (tmp_path / ".run.resume").exists()
