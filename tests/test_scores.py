"""Failure-score baselines: hand-computed values, recovery of known parameters, orientation."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

from metaerr_edge.errors import ConfigError
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.metrics import auroc
from metaerr_edge.scores import (
    ScoreContext,
    available_scores,
    create_score,
    doctor_gini_score,
    doctor_ratio_score,
    entropy_score,
    margin_score,
    msp_score,
)
from metaerr_edge.scores.mc_dropout import mc_dropout_probs, mc_dropout_stat
from metaerr_edge.scores.temperature import fit_temperature, scaled_probs
from metaerr_edge.scores.trustscore import TrustScoreIndex

P = np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2], [1.0, 0.0, 0.0]])


def test_softmax_scores_hand_values() -> None:
    np.testing.assert_allclose(msp_score(P), [0.3, 0.6, 0.0])
    np.testing.assert_allclose(margin_score(P), [0.5, 1.0, 0.0])
    np.testing.assert_allclose(doctor_gini_score(P), [1 - 0.54, 1 - 0.36, 0.0])
    np.testing.assert_allclose(doctor_ratio_score(P), [0.3 / 0.7, 0.6 / 0.4, 0.0])
    ent = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))
    np.testing.assert_allclose(entropy_score(P), [ent, -(0.8 * np.log(0.4) + 0.2 * np.log(0.2)), 0.0])
    # orientation: the confident row scores lowest (least likely wrong) under every score
    for fn in (msp_score, margin_score, doctor_gini_score, doctor_ratio_score, entropy_score):
        s = fn(P)
        assert s[2] < s[0] < s[1]


def test_temperature_recovers_known_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 5))
    true_t = 2.5
    p_true = scaled_probs(np.exp(logits - logits.max(1, keepdims=True)), true_t)
    labels = np.array([rng.choice(5, p=row) for row in p_true])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert fit_temperature(probs.astype(np.float32), labels) == pytest.approx(true_t, rel=0.1)
    # T = 1 leaves probabilities as they are; log p works as logits
    np.testing.assert_allclose(scaled_probs(P[:2], 1.0), P[:2], atol=1e-12)


def test_trustscore_two_dimensional_toy() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.5, (200, 2))
    b = rng.normal(0, 0.5, (200, 2)) + [10.0, 0.0]
    index = TrustScoreIndex(np.vstack([a, b]), np.repeat([0, 1], 200), 2, k=5, alpha=0.1)
    queries = np.array([[0.0, 0.0], [0.0, 0.0], [9.0, 0.0]])
    trust = index.trust(queries, np.array([0, 1, 1]))
    assert trust[0] > 10 and trust[1] < 0.1 and trust[2] > 5
    # the point (0,0) predicted as class 1 is the one most likely wrong: highest failure score
    failure = -trust
    assert failure.argmax() == 1
    # exact distance ratio with no filtering
    idx = TrustScoreIndex(np.array([[0.0, 0.0], [4.0, 0.0]]), np.array([0, 1]), 2, alpha=0.0)
    assert idx.trust(np.array([[1.0, 0.0]]), np.array([0]))[0] == pytest.approx(3.0)


class _DropNet(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(p), nn.Linear(8, 3))

    def forward(self, x):
        return self.body(x)


def test_mc_dropout_p0_equals_deterministic_and_keeps_batchnorm_eval() -> None:
    from metaerr_edge.models import create_base, predict_probs

    torch.manual_seed(0)
    x = np.random.default_rng(0).integers(0, 255, (6, 1, 4, 4), dtype=np.uint8)
    pre = Preprocess([0.5], [0.5])
    net = _DropNet(0.0).eval()
    net.body[2].running_mean.fill_(0.3)
    before = net.body[2].running_mean.clone()
    mc = mc_dropout_probs(net, x, pre, passes=4)
    assert mc.shape == (4, 6, 3)
    np.testing.assert_allclose(mc, np.broadcast_to(predict_probs(net, x, pre), mc.shape), atol=1e-6)
    assert torch.equal(net.body[2].running_mean, before) and not net.training
    cnn = create_base("small_cnn", 1, 3, (8, 8), dropout=0.0).eval()  # the fast (trunk once) path
    x8 = np.random.default_rng(1).integers(0, 255, (5, 1, 8, 8), dtype=np.uint8)
    np.testing.assert_allclose(mc_dropout_probs(cnn, x8, pre, passes=3)[2], predict_probs(cnn, x8, pre), atol=1e-6)
    # with dropout on, passes differ but are reproducible by seed
    noisy = _DropNet(0.5).eval()
    a, b = mc_dropout_probs(noisy, x, pre, passes=5, seed=1), mc_dropout_probs(noisy, x, pre, passes=5, seed=1)
    np.testing.assert_array_equal(a, b)
    assert a.std(axis=0).max() > 0


def test_mc_dropout_stats_and_no_dropout_error() -> None:
    mc = np.array([[[0.9, 0.1]], [[0.5, 0.5]]])  # two passes, one sample
    assert mc_dropout_stat(mc, "msp")[0] == pytest.approx(0.3)
    assert mc_dropout_stat(mc, "variance")[0] == pytest.approx(0.04)
    assert mc_dropout_stat(mc, "entropy")[0] == pytest.approx(-(0.7 * np.log(0.7) + 0.3 * np.log(0.3)))
    with pytest.raises(ConfigError):
        mc_dropout_stat(mc, "mode")
    no_drop = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with pytest.raises(ConfigError, match="dropout"):
        mc_dropout_probs(no_drop, np.zeros((2, 1, 4, 4), np.uint8), Preprocess([0.5], [0.5]))


FAST_PARAMS = {"mc-dropout": {"passes": 8}, "confidnet": {"epochs": 8}}  # every other score runs with its defaults


@pytest.mark.parametrize("name", available_scores())
def test_every_registered_score_on_digits_run_beats_random(digits_run, name: str) -> None:
    assert set(FAST_PARAMS) <= set(available_scores())
    ctx = ScoreContext(digits_run, seed=0)
    scorer = create_score(name, **FAST_PARAMS.get(name, {})).fit(ctx)
    s = scorer.score(ctx, "test")
    err = ctx.is_error("test")
    assert s.shape == err.shape and np.isfinite(s).all()
    assert auroc(s, err) > 0.6  # higher score = more likely wrong


def _lively(net: nn.Module) -> nn.Module:
    """At torchvision's init MobileNetV3's logits barely depend on the image (features ~1e-9): give every
    base BatchNorm statistics of one random batch and wider linear layers, so features and dropout matter."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None  # running statistics = those of the one batch below
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.3)
        net.train()(torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    return net.eval()


class _TinyRun:
    """What :class:`ScoreContext` reads from a Run: a registry base (untrained), random 3x8x8 splits and
    the default config (cross-fit labels: the base's training split is ``pool``). Built once per base."""

    def __init__(self, arch: str) -> None:
        from metaerr_edge.models import create_base, predict_probs
        from metaerr_edge.pipeline import RunConfig

        self.base = _lively(create_base(arch, 3, 4, (8, 8), seed=0))
        self.preprocess = Preprocess([0.5] * 3, [0.25] * 3)
        self.classes, self.config = ("a", "b", "c", "d"), RunConfig()
        rng = np.random.default_rng(0)
        self.splits = {name: (rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), np.arange(n) % 4)
                       for name, n in (("pool", 32), ("calib", 12), ("test", 12))}  # fmt: skip
        self.predictions = {}
        for name in ("calib", "test"):
            images, labels = self.splits[name]
            self.predictions |= {f"{name}_labels": labels, f"{name}_probs": predict_probs(self.base, images, self.preprocess)}

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.splits[name]

    @classmethod
    @functools.cache
    def of(cls, arch: str) -> "_TinyRun":
        return cls(arch)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_feature_scores_read_the_seams_of_torchvision_bases(arch: str) -> None:
    from metaerr_edge.models.training import to_float
    from metaerr_edge.scores._features import context_features

    run = _TinyRun.of(arch)
    ctx = ScoreContext(run)
    feats, probs = context_features(ctx, "test")
    with torch.no_grad():
        expected = run.base.forward_features(run.preprocess(to_float(run.splits["test"][0]))).numpy()
    assert feats.shape == (12, run.base.num_features) and float(feats.std(0).max()) > 1e-3
    np.testing.assert_allclose(feats, expected, atol=1e-6)
    np.testing.assert_allclose(probs, run.predictions["test_probs"], atol=1e-6)  # the deployed model's own
    for name, params in (("trustscore", {"k": 3}), ("confidnet", {"epochs": 2, "hidden": 16, "layers": 1})):
        s = create_score(name, **params).fit(ctx).score(ctx, "test")
        assert s.shape == (12,) and np.isfinite(s).all() and s.std() > 0, name


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_mc_dropout_on_torchvision_bases_repeats_only_the_head(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import metaerr_edge.scores.mc_dropout as mc_dropout

    run = _TinyRun.of(arch)
    ctx = ScoreContext(run)
    scorer = create_score("mc-dropout", passes=4)
    if arch == "resnet18":  # torchvision's ResNet has no dropout
        with pytest.raises(ConfigError, match="mc-dropout needs a base model with dropout layers; TorchvisionBase has none"):
            scorer.fit(ctx)
        return
    images = run.splits["test"][0]
    fast = mc_dropout_probs(run.base, images, run.preprocess, passes=4, seed=3)
    monkeypatch.setattr(mc_dropout, "_trunk_and_head", lambda model: None)  # every pass through the whole model
    np.testing.assert_allclose(fast, mc_dropout_probs(run.base, images, run.preprocess, passes=4, seed=3), atol=1e-6)
    assert fast.std(axis=0).max() > 1e-3  # the passes differ: the dropout is on
    s = scorer.fit(ctx).score(ctx, "test")
    assert s.shape == (12,) and np.isfinite(s).all()


def test_feature_scores_name_the_missing_seam_of_a_users_model() -> None:
    from metaerr_edge.scores._features import penultimate_features

    images, pre = np.zeros((2, 1, 4, 4), np.uint8), Preprocess([0.5], [0.5])
    with pytest.raises(ConfigError, match=r"^white-box scores \(trustscore, confidnet\) reads hidden features, but _DropNet "
                                          r"has no forward_features\(x\) method .* and no nn.Linear .classifier"):
        penultimate_features(_DropNet(0.1), images, pre)

    class Unpooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.classifier = nn.Linear(16, 3)

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return x  # N x 1 x 4 x 4, not flattened

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(x.flatten(1))

    with pytest.raises(ConfigError, match=r"Unpooled.forward_features returned shape \(2, 1, 4, 4\); the seam contract is N x 16"):
        penultimate_features(Unpooled(), images, pre)


def test_only_metaerr_takes_a_bracket_in_a_score_spec(digits_run):
    from metaerr_edge.evaluate import evaluate_run, parse_score_spec

    assert parse_score_spec("metaerr[image+probs]") == ("metaerr[image+probs]", "metaerr", {"mode": "image+probs"})
    with pytest.raises(ConfigError, match=r"'trustscore\[x\]': only metaerr takes a \[meta mode\]"):
        evaluate_run(digits_run, ["trustscore[x]"], progress=False)
