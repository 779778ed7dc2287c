"""Base-model registry and the training loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaerr_edge.data import load_dataset, make_splits
from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.models import FitConfig, available_bases, create_base, fit_classifier, predict_probs


@pytest.mark.parametrize("name", available_bases())
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_every_base_maps_images_to_logits(name, shape):
    net = create_base(name, in_channels=shape[0], num_classes=7, image_size=shape[1:]).eval()
    with torch.no_grad():
        out = net(torch.randn(2, *shape))
    assert out.shape == (2, 7)


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
