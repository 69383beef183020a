import numpy as np
import pytest

from segzoo.losses import LOSSES, get_loss


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
