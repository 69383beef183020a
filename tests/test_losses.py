import numpy as np
import pytest

from segzoo.training.losses import LOSSES, get_loss


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_prefers_correct_predictions(name):
    y = (np.random.default_rng(0).random((2, 8, 8, 1)) > 0.5).astype("float32")
    good = np.clip(y, 0.05, 0.95)
    bad = 1.0 - good
    loss = get_loss(name)
    assert float(loss(y, good)) < float(loss(y, bad))


def test_unknown_loss_lists_valid():
    with pytest.raises(ValueError, match="bce_dice"):
        get_loss("l2")


def _lovasz_reference(labels: np.ndarray, logits: np.ndarray) -> float:
    """Berman et al.'s binary Lovasz hinge for one image, written plainly in numpy."""
    errors = 1.0 - logits * (2.0 * labels - 1.0)
    order = np.argsort(-errors, kind="stable")
    gt = labels[order]
    intersection = gt.sum() - np.cumsum(gt)
    union = gt.sum() + np.cumsum(1.0 - gt)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return float(np.dot(np.maximum(errors[order], 0.0), jaccard))


def test_lovasz_hinge_matches_the_reference_and_is_zero_when_confidently_right():
    rng = np.random.default_rng(1)
    y = (rng.random((3, 6, 5, 1)) > 0.6).astype("float32")
    prob = rng.uniform(0.02, 0.98, y.shape).astype("float32")
    logits = np.log(prob) - np.log1p(-prob)
    expected = np.mean([_lovasz_reference(y[i].ravel(), logits[i].ravel()) for i in range(3)])
    assert float(get_loss("lovasz")(y, prob)) == pytest.approx(expected, rel=1e-4)
    confident = np.where(y > 0, 0.999, 0.001).astype("float32")  # every margin > 1: no hinge error
    assert float(get_loss("lovasz")(y, confident)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="binary"):
        get_loss("lovasz")(np.zeros((1, 4, 4, 2), "float32"), np.full((1, 4, 4, 2), 0.5, "float32"))
