"""The free baselines of metaerr_edge.scores.free: hand-computed values, calib-only choices, fusable modules."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from metaerr_edge.data.labels import error_labels
from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.scores import create_score, doctor_gini_score, msp_score
from metaerr_edge.scores.free import (
    FUSABLE_SCORES,
    choose_lambda,
    choose_p,
    fit_relu_matrix,
    logit_margin_score,
    maxlogit_pnorm_score,
    relu_score,
    score_module,
)

L = -math.log(np.finfo(np.float32).tiny)  # the log floor of maxlogit-pnorm: the smallest normal float32 (about 87.3)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# rows: logits (2, 1, 0) -> centred (1, 0, -1); logits (3, 0, 0) -> centred (2, -1, -1); uniform -> 0;
# one-hot -> log floor (0, -L, -L) -> centred (2L/3, -L/3, -L/3)
P = np.vstack([softmax(np.array([[2.0, 1.0, 0.0], [3.0, 0.0, 0.0]])), [[1 / 3] * 3, [1.0, 0.0, 0.0]]])


def test_maxlogit_pnorm_hand_values() -> None:
    s6 = 2 / math.sqrt(6)  # (2, -1, -1) / ||.||_2 and (2L/3, -L/3, -L/3) / ||.||_2 have max 2 / sqrt(6)
    expected = {
        0: [1 - 1 / L, 1 - 2 / L, 1.0, 1 - (2 * L / 3) / L],  # no normalisation, divided by the bound L
        1: [1 - 1 / 2, 1 - 2 / 4, 1.0, 1 - (2 / 3) / (4 / 3)],
        2: [1 - 1 / math.sqrt(2), 1 - s6, 1.0, 1 - s6],
        8: [1 - 1 / 2 ** (1 / 8), 1 - 2 / 258 ** (1 / 8), 1.0, 1 - 2 / 258 ** (1 / 8)],  # 2^8 + 1 + 1 = 258
    }
    for p, want in expected.items():
        np.testing.assert_allclose(maxlogit_pnorm_score(P, p), want, rtol=1e-6, atol=1e-9, err_msg=f"p={p}")
        assert ((0 <= maxlogit_pnorm_score(P, p)) & (maxlogit_pnorm_score(P, p) <= 1)).all()
    # A confident float32 softmax keeps probabilities far below 1e-7 apart: logits (g, 0, 0) centre to
    # (2g/3, -g/3, -g/3), so p = 0 ranks gaps of 20, 25 and 40 apart instead of tying them at a floor.
    gaps = np.array([20.0, 25.0, 40.0])
    confident = softmax(np.stack([gaps, 0 * gaps, 0 * gaps], axis=1)).astype(np.float32)
    np.testing.assert_allclose(maxlogit_pnorm_score(confident, 0), 1 - (2 * gaps / 3) / L, rtol=1e-5)
    with pytest.raises(ConfigError, match=r"^maxlogit-pnorm p must be None \(chosen on calib\) or an integer >= 0, got -1$"):
        maxlogit_pnorm_score(P, -1)
    with pytest.raises(ConfigError, match="got 1.5"):
        create_score("maxlogit-pnorm", p=1.5)
    with pytest.raises(DataError, match=r"needs N x K probabilities with K >= 2, got shape \(3,\)"):
        maxlogit_pnorm_score([0.2, 0.3, 0.5], 2)


def test_logit_margin_hand_values() -> None:
    # exp(-(z1 - z2)): e^-1, e^-3, a tie (1), a one-hot (0); and p2 / p1 on plain probabilities
    np.testing.assert_allclose(logit_margin_score(P), [math.exp(-1), math.exp(-3), 1.0, 0.0], rtol=1e-9)
    np.testing.assert_allclose(logit_margin_score([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]]), [2 / 7, 1.0])


# correct rows c1, c2 and wrong rows w1, w2; E[pp^T | .] off the diagonal, by hand:
#   correct: (0,1) = (0.16 + 0) / 2 = 0.08, (0,2) = (0 + 0.24) / 2 = 0.12, (1,2) = 0
#   wrong:   (0,1) = (0.25 + 0) / 2 = 0.125, (0,2) = 0.125, (1,2) = 0
# lam = 0.5: (0,1) = 0.5 (0.125 - 0.08) = 0.0225, (0,2) = 0.5 (0.125 - 0.12) = 0.0025 -> / 0.0225
CALIB = np.array([[0.8, 0.2, 0.0], [0.6, 0.0, 0.4], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5]])
CALIB_ERR = np.array([0, 0, 1, 1])


def test_relu_matrix_and_score_hand_values() -> None:
    d = fit_relu_matrix(CALIB, CALIB_ERR, 0.5)
    np.testing.assert_allclose(d, [[0, 1, 1 / 9], [1, 0, 0], [1 / 9, 0, 0]], atol=1e-12)
    # q D q^T = 2 (q0 q1 D01 + q0 q2 D02 + q1 q2 D12) = 2 (0.15 + 0.1 / 9)
    np.testing.assert_allclose(relu_score([[0.5, 0.3, 0.2]], d), [0.3 + 0.2 / 9], rtol=1e-12)
    # lam = 0.2: 0.2 * 0.125 - 0.8 * 0.08 < 0 and 0.025 - 0.096 < 0: nothing positive, D = 0
    assert not fit_relu_matrix(CALIB, CALIB_ERR, 0.2).any()
    with pytest.raises(DataError, match=r"needs a K x K matrix for N x K probabilities, got \(2, 2\) and \(1, 3\)"):
        relu_score([[0.5, 0.3, 0.2]], np.zeros((2, 2)))


class FakeCtx:
    """What the free scorers read from a ScoreContext: probs and labels per split, and a seed. Reading
    a split named in ``hidden`` fails, which proves a fit never looked at it."""

    def __init__(self, hidden: tuple[str, ...] = (), seed: int = 0, **splits: tuple[np.ndarray, np.ndarray]) -> None:
        self.splits, self.hidden, self.seed = splits, hidden, seed

    def probs(self, name: str) -> np.ndarray:
        assert name not in self.hidden, f"read the {name} split"
        return self.splits[name][0]

    def labels(self, name: str) -> np.ndarray:
        assert name not in self.hidden, f"read the {name} split"
        return self.splits[name][1]

    def is_error(self, name: str) -> np.ndarray:
        return error_labels(self.probs(name), self.labels(name))


def split(probs: np.ndarray, is_error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probs, labels) with the base wrong exactly on the ``is_error`` rows."""
    pred = probs.argmax(axis=1)
    return probs, np.where(is_error.astype(bool), (pred + 1) % probs.shape[1], pred)


def worst(score: np.ndarray, fraction: float = 0.3) -> np.ndarray:
    """Errors exactly on the rows with the highest ``score``: that score ranks them perfectly."""
    return (score >= np.quantile(score, 1 - fraction)).astype(np.int64)


def random_probs(seed: int, n: int = 60, k: int = 4, spread: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 4.0, (n, 1)) if spread else 2.0
    return softmax(rng.normal(0.0, 1.0, (n, k)) * scale)


def test_maxlogit_pnorm_chooses_p_on_calib_only_and_falls_back_to_msp() -> None:
    probs = random_probs(0)
    by_p2, by_p0 = split(probs, worst(maxlogit_pnorm_score(probs, 2))), split(probs, worst(maxlogit_pnorm_score(probs, 0)))
    assert choose_p(by_p2[0], error_labels(*by_p2)) == {"p": 2}
    assert choose_p(by_p0[0], error_labels(*by_p0)) == {"p": 0}
    fitted = create_score("maxlogit-pnorm").fit(FakeCtx(hidden=("test",), calib=by_p2, test=by_p0))
    assert fitted.chosen == {"p": 2}  # calib's choice, not the test split's p = 0
    assert create_score("maxlogit-pnorm").fit(FakeCtx(calib=by_p0, test=by_p2)).chosen == {"p": 0}
    np.testing.assert_allclose(fitted.score(FakeCtx(test=by_p0), "test"), maxlogit_pnorm_score(probs, 2))
    # MSP ranks calib's errors perfectly: no p beats it, the score is MSP
    by_msp = split(probs, worst(msp_score(probs)))
    fallback = create_score("maxlogit-pnorm").fit(FakeCtx(hidden=("test",), calib=by_msp))
    assert fallback.chosen == {"fallback": "msp"}
    np.testing.assert_allclose(fallback.score(FakeCtx(test=by_p2), "test"), msp_score(probs))
    # a pinned p is kept, whatever calib says
    assert create_score("maxlogit-pnorm", p=5).fit(FakeCtx(calib=by_p2)).chosen == {"p": 5}
    with pytest.raises(ConfigError, match=r"^maxlogit-pnorm chooses p on the calib split: call fit\(ctx\) first"):
        create_score("maxlogit-pnorm").score(FakeCtx(test=by_p2), "test")


def test_relu_chooses_lam_on_calib_only() -> None:
    def noisy(seed: int) -> tuple[np.ndarray, np.ndarray]:
        probs = random_probs(seed, n=80, spread=False)
        return split(probs, (np.random.default_rng(seed).random(80) < msp_score(probs)).astype(np.int64))

    a, b = noisy(0), noisy(5)
    lam_a, lam_b = choose_lambda(a[0], error_labels(*a)), choose_lambda(b[0], error_labels(*b))
    assert lam_a != lam_b  # the two splits prefer different lam
    fitted = create_score("rel-u").fit(FakeCtx(hidden=("test",), calib=a, test=b))
    assert fitted.chosen == {"lam": lam_a}
    assert create_score("rel-u").fit(FakeCtx(calib=b, test=a)).chosen == {"lam": lam_b}
    np.testing.assert_allclose(fitted.matrix, fit_relu_matrix(a[0], error_labels(*a), lam_a))
    np.testing.assert_allclose(fitted.score(FakeCtx(test=b), "test"), relu_score(b[0], fitted.matrix))
    d = fitted.matrix
    assert np.array_equal(d, d.T) and not np.diag(d).any() and (d >= 0).all() and d.max() == 1.0
    pinned = create_score("rel-u", lam=0.7).fit(FakeCtx(calib=a))
    assert pinned.chosen == {"lam": 0.7}
    with pytest.raises(ConfigError, match=r"^rel-u lam must be None \(chosen on calib\) or a number in \[0, 1\], got 2$"):
        create_score("rel-u", lam=2)
    with pytest.raises(ConfigError, match=r"call fit\(ctx\) before score or as_module"):
        create_score("rel-u").as_module()
    with pytest.raises(DataError, match="rel-u is fitted on the calibration split, which is empty"):
        create_score("rel-u").fit(FakeCtx(calib=(np.zeros((0, 3)), np.zeros(0, np.int64))))


def test_relu_falls_back_to_doctor_gini_when_d_is_zero() -> None:
    scorer = create_score("rel-u", lam=0.2).fit(FakeCtx(calib=split(CALIB, CALIB_ERR)))
    assert scorer.chosen == {"lam": 0.2, "fallback": "doctor-gini"}
    np.testing.assert_allclose(scorer.score(FakeCtx(test=split(P, np.zeros(4))), "test"), doctor_gini_score(P), atol=1e-12)
    all_right = create_score("rel-u").fit(FakeCtx(calib=split(CALIB, np.zeros(4))))  # no error on calib
    assert all_right.chosen == {"lam": 0.1, "fallback": "doctor-gini"}


# --- fusable modules -------------------------------------------------------------------------------------

K = 4


def fitted_free_scorers() -> dict[str, object]:
    """Every free score fitted on one synthetic calib split (plus maxlogit-pnorm at each pinned p)."""
    probs = random_probs(3, n=200, k=K)
    rng = np.random.default_rng(3)
    calib = split(probs, (rng.random(len(probs)) < 1.3 * msp_score(probs)).astype(np.int64))
    ctx = FakeCtx(hidden=("test",), calib=calib)
    scorers = {name: create_score(name).fit(ctx) for name in FUSABLE_SCORES}
    return scorers | {f"maxlogit-pnorm-p{p}": create_score("maxlogit-pnorm", p=p).fit(ctx) for p in range(9)}


@pytest.fixture(scope="module")
def scorers() -> dict[str, object]:
    return fitted_free_scorers()


def test_every_free_module_matches_its_numpy_score(scorers: dict) -> None:
    assert scorers["temperature"].temperature != pytest.approx(1.0, abs=1e-3)  # a fitted T is exercised
    probs = np.vstack([random_probs(4, n=64, k=K), softmax(np.array([[30.0, 0, 0, -30], [0.0, 0, 0, 0]]))])
    probs32 = probs.astype(np.float32)
    for name, scorer in scorers.items():
        module = score_module(scorer)
        with torch.no_grad():
            got = module(None, torch.from_numpy(probs32))
        assert got.dtype == torch.float32 and got.shape == (len(probs),), name
        np.testing.assert_allclose(got.numpy(), scorer.score(FakeCtx(test=(probs32, None)), "test"), atol=1e-5, err_msg=name)
    with pytest.raises(ConfigError, match=r"^failure score 'trustscore' has no fusable module; the free scores have one"):
        score_module(create_score("trustscore"))


class TinyBase(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, K)
        with torch.no_grad():
            self.fc.weight.mul_(20.0)  # spread-out probabilities, not all near uniform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter, on purpose (fast)
def test_every_free_module_fuses_exports_and_runs_in_onnxruntime(scorers: dict, tmp_path: Path) -> None:
    import onnxruntime as ort  # a core dependency: always there
    from metaerr_edge.contract.spec import Contract, InputSpec, random_inputs
    from metaerr_edge.fuse.export import export_onnx
    from metaerr_edge.models.fused import FusedModel
    from metaerr_edge.models.preprocess import Preprocess

    torch.manual_seed(0)
    base = TinyBase().eval()
    contract = Contract(input=InputSpec(channels=1, height=8, width=8), classes=tuple("abcd"))
    images = random_inputs(contract.input, 16, seed=5)
    cases = [(n, False) for n in scorers if not n.startswith("maxlogit-pnorm-p")]
    cases += [("maxlogit-pnorm-p0", False), ("maxlogit-pnorm-p8", False), ("maxlogit-pnorm-p2", True)]  # + the default exporter once
    for name, dynamo in cases:
        fused = FusedModel(base, score_module(scorers[name]), Preprocess([0.5], [0.5]), threshold=0.5).eval()
        path = tmp_path / f"{name}-{dynamo}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(fused, contract, path, dynamo=dynamo)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        label, probs, score, defer = session.run(None, {contract.input.name: images})
        assert probs.std(axis=1).mean() > 0.05, "the tiny base gives near-uniform probabilities"
        np.testing.assert_allclose(score, scorers[name].score(FakeCtx(test=(probs, None)), "test"), atol=1e-5, err_msg=name)
        with torch.no_grad():
            np.testing.assert_allclose(score, fused(torch.from_numpy(images))[2].numpy(), atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(defer, score > 0.5)
