"""MC Dropout (Gal & Ghahramani, 2016): average the base's softmax over stochastic dropout passes.

White-box in the weak sense: it needs the base model to contain ``nn.Dropout`` layers and to run it
several times; it reads no hidden features. Every dropout layer of the model is switched to train
mode, whatever the architecture; BatchNorm (and everything else) stays in eval mode so running
statistics are used and never updated. ``resnet18`` has no dropout, so it is refused (ConfigError).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from metaerr_edge.errors import ConfigError
from metaerr_edge.scores.base import ScoreContext, Scorer, register_score

_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """The model's dropout modules (any of torch's dropout classes)."""
    return [m for m in model.modules() if isinstance(m, _DROPOUT_TYPES)]


def _trunk_and_head(model: nn.Module):
    """``(trunk, head)`` with ``model(x) == head(trunk(x))`` and every dropout inside ``head``, or None.

    Any model with the seams of :mod:`metaerr_edge.models.seams` whose dropout all sits in
    ``head_drop`` (every registry model with dropout): the deterministic ``forward_features`` then
    runs once and only ``classifier(head_drop(.))`` is repeated, the same distribution far faster.
    The head gets a copy of the features, so an in-place ``head_drop`` cannot alter the next pass's.
    """
    from metaerr_edge.models.seams import missing_seams

    head_drop = getattr(model, "head_drop", None)
    if missing_seams(model) or not isinstance(head_drop, nn.Module):
        return None
    if not set(dropout_layers(model)) <= set(head_drop.modules()):
        return None
    return model.forward_features, lambda f: model.classifier(head_drop(f.clone()))


@torch.no_grad()
def mc_dropout_probs(
    model: nn.Module,
    images_uint8: np.ndarray,
    preprocess: nn.Module,
    passes: int = 20,
    seed: int = 0,
    batch_size: int = 512,
    device: str = "cpu",
) -> np.ndarray:
    """Softmax of ``passes`` stochastic forward passes with only the Dropout layers active.

    Args:
        model: classifier ``normalised image -> logits`` holding at least one dropout layer.
        images_uint8: N x C x H x W uint8 images.
        preprocess: the run's :class:`~metaerr_edge.models.preprocess.Preprocess` (float [0, 1] -> normalised).
        passes: number of stochastic passes T.
        seed: seeds torch's RNG for the dropout masks (the global RNG state is restored afterwards).
        batch_size: images per forward pass.
        device: torch device string.

    Returns:
        float32 array of shape ``[passes, N, K]``.

    Raises:
        ConfigError: ``passes < 1`` or the model has no dropout layer.

    Example:
        >>> p = mc_dropout_probs(run.base, images, run.preprocess, passes=10)
        >>> p.mean(0).shape  # (N, K)
    """
    if passes < 1:
        raise ConfigError(f"passes must be >= 1, got {passes}")
    drops = dropout_layers(model)
    if not drops:
        raise ConfigError(
            f"MC Dropout needs a base model with nn.Dropout layers; {type(model).__name__} has none. "
            "Use a registry model with dropout (small_cnn, mobilenet_v3_small) or a different score."
        )
    from metaerr_edge.models.training import resolve_device, to_float

    dev = resolve_device(device)
    was_training = {m: m.training for m in model.modules()}
    model.to(dev).eval()
    for m in drops:
        m.train()
    pre = preprocess.to(dev)
    cpu_state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if dev.type == "cuda" else None
    torch.manual_seed(seed)
    try:
        n = len(images_uint8)
        out: np.ndarray | None = None
        split = _trunk_and_head(model)
        for start in range(0, n, batch_size):
            x = pre(to_float(images_uint8[start : start + batch_size]).to(dev))
            trunk, head = split if split is not None else ((lambda v: v), model)
            h = trunk(x)
            for t in range(passes):
                p = torch.softmax(head(h).float(), dim=1).cpu().numpy()
                if out is None:
                    out = np.empty((passes, n, p.shape[1]), np.float32)
                out[t, start : start + len(p)] = p
        return out if out is not None else np.zeros((passes, 0, 0), np.float32)
    finally:
        for m, flag in was_training.items():
            m.train(flag)
        torch.random.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)


def mc_dropout_stat(mc_probs: np.ndarray, stat: str = "msp") -> np.ndarray:
    """Failure score from ``[passes, N, K]`` probabilities (higher = more likely wrong).

    ``"msp"``: ``1 - max_k mean_t p``; ``"entropy"``: entropy of the mean probabilities (predictive
    entropy); ``"variance"``: variance over passes of the probability of the mean prediction's class.
    """
    mean = mc_probs.mean(axis=0).astype(np.float64)
    if stat == "msp":
        return 1.0 - mean.max(axis=1)
    if stat == "entropy":
        return -(mean * np.log(np.clip(mean, 1e-300, None))).sum(axis=1)
    if stat == "variance":
        top = mean.argmax(axis=1)
        return mc_probs[:, np.arange(mc_probs.shape[1]), top].astype(np.float64).var(axis=0)
    raise ConfigError(f"mc-dropout stat must be 'msp', 'entropy' or 'variance', got {stat!r}")


@register_score("mc-dropout")
class MCDropoutScore(Scorer):
    """MC Dropout failure score. Params: ``passes`` (20), ``stat`` ("msp", default; "entropy", "variance"), ``seed``.

    The default ``stat="msp"`` scores ``1 - max`` of the mean probabilities over passes.
    Note the prediction being judged is the deterministic base's argmax (what the device outputs).
    """

    white_box = True
    PARAMS = {"passes": 20, "stat": "msp", "seed": None}  # seed None: the context's seed

    def fit(self, ctx: ScoreContext) -> MCDropoutScore:
        if not dropout_layers(ctx.base):
            raise ConfigError(
                f"mc-dropout needs a base model with dropout layers; {type(ctx.base).__name__} has none"
            )
        mc_dropout_stat(np.full((1, 1, 2), 0.5, np.float32), self.params["stat"])  # validates stat
        return self

    def score(self, ctx: ScoreContext, split: str) -> np.ndarray:
        images, _ = ctx.split(split)
        probs = mc_dropout_probs(
            ctx.base,
            images,
            ctx.preprocess,
            passes=int(self.params["passes"]),
            seed=int(ctx.seed if self.params["seed"] is None else self.params["seed"]),
            device=ctx.run.config.device,
        )
        return mc_dropout_stat(probs, self.params["stat"])
