import numpy as np

from segzoo.config import Preprocessing
from segzoo.training.augment import AugmentConfig, PatchSampler
from segzoo.training.pipeline import make_dataset, patch_batches


def _tiles():
    rng = np.random.default_rng(0)
    masks = [rng.random((64, 80)) > 0.7 for _ in range(2)]
    images = [np.stack([np.where(m, 255, 0), np.full(m.shape, 128), np.full(m.shape, 60)], -1).astype(np.uint8)
              for m in masks]
    return images, masks


def test_geometric_augmentation_keeps_image_and_mask_aligned():
    images, masks = _tiles()
    aug = AugmentConfig(hed_sigma=0, hed_bias=0, brightness=0, contrast=0, scale_min=1.0, scale_max=1.0)
    sampler = PatchSampler(images, masks, 32, aug)
    rng = np.random.default_rng(1)
    for _ in range(20):
        img, msk = sampler.sample(rng)
        assert img.shape == (32, 32, 3) and msk.shape == (32, 32, 1)
        np.testing.assert_array_equal(img[..., 0] > 127, msk[..., 0] > 0.5)


def test_same_seed_same_batches_and_resume_continues():
    images, masks = _tiles()
    sampler = PatchSampler(images, masks, 24)
    prep = Preprocessing()
    a = patch_batches(sampler, 2, prep, seed=5)
    b = patch_batches(sampler, 2, prep, seed=5)
    first = [next(a) for _ in range(3)]
    second = [next(b) for _ in range(3)]
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    resumed = next(patch_batches(sampler, 2, prep, seed=5, start_step=2))
    np.testing.assert_array_equal(resumed[0], first[2][0])


def test_scale_and_colour_jitter_change_pixels_not_shapes():
    images, masks = _tiles()
    sampler = PatchSampler(images, masks, 40, AugmentConfig(hed_sigma=0.2, hed_bias=0.05))
    img, msk = sampler.sample(np.random.default_rng(3))
    assert img.dtype == np.uint8 and img.shape == (40, 40, 3)
    assert set(np.unique(msk)) <= {0.0, 1.0}


def test_small_tiles_are_padded_to_patch():
    images, masks = _tiles()
    sampler = PatchSampler([images[0][:10, :10]], [masks[0][:10, :10]], 32, AugmentConfig.disabled())
    img, _ = sampler.sample(np.random.default_rng(0))
    assert img.shape == (32, 32, 3)


def test_tf_data_pipeline_shapes():
    images, masks = _tiles()
    ds = make_dataset(PatchSampler(images, masks, 16), 3, Preprocessing(), seed=0)
    x, y = next(iter(ds))
    assert tuple(x.shape) == (3, 16, 16, 3) and tuple(y.shape) == (3, 16, 16, 1)
    assert x.dtype.name == "float32"


def test_threaded_stream_is_the_same_stream():
    """Other backends draw batches in a thread pool; the batches and their order must not change."""
    images, masks = _tiles()
    sampler = PatchSampler(images, masks, 24)
    prep = Preprocessing()
    serial = patch_batches(sampler, 2, prep, seed=7, start_step=3)
    threaded = patch_batches(sampler, 2, prep, seed=7, start_step=3, workers=3, ahead=4)
    for _ in range(9):
        (x1, y1), (x2, y2) = next(serial), next(threaded)
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    threaded.close()  # stops the pool; pending batches are dropped


def test_a_counted_stream_ends_after_count_batches():
    """count= makes the stream finite (the precise-BN statistics use it), serial or threaded."""
    images, masks = _tiles()
    sampler = PatchSampler(images, masks, 16)
    prep = Preprocessing()
    serial = list(patch_batches(sampler, 1, prep, seed=2, start_step=4, count=5))
    threaded = list(patch_batches(sampler, 1, prep, seed=2, start_step=4, count=5, workers=3, ahead=2))
    assert len(serial) == len(threaded) == 5
    for (x1, _), (x2, _) in zip(serial, threaded):
        np.testing.assert_array_equal(x1, x2)


def test_intensity_augmentation_off_leaves_the_default_stream_alone(monkeypatch):
    """Off (the default), the intensity step draws nothing: a stream of patches from one generator
    equals the stream of the code without the step, so the released recipes' patches are unchanged.
    A draw when off would shift every later patch of the stream."""
    from segzoo.training import augment

    images, masks = _tiles()
    sampler = PatchSampler(images, masks, 32)
    off = sampler.augment
    assert (off.gamma_prob, off.blur_prob, off.noise_prob) == (0.0, 0.0, 0.0)

    def stream():
        rng = np.random.default_rng(11)
        return [sampler.sample(rng) for _ in range(8)]

    actual = stream()
    monkeypatch.setattr(augment, "intensity_jitter", lambda image, rng, aug: image)  # the step absent
    expected = stream()
    for (img, msk), (img_ref, msk_ref) in zip(actual, expected):
        np.testing.assert_array_equal(img, img_ref)
        np.testing.assert_array_equal(msk, msk_ref)
    assert len({img.tobytes() for img, _ in expected}) == 8  # a stream of different patches


def test_intensity_augmentation_changes_pixels_not_masks():
    images, masks = _tiles()
    always = AugmentConfig(gamma_prob=1.0, blur_prob=1.0, noise_prob=1.0)
    jittered = PatchSampler(images, masks, 32, always)
    base = PatchSampler(images, masks, 32, AugmentConfig())
    changed = 0
    for seed in range(5):
        (img_j, msk_j), (img_b, msk_b) = (jittered.sample(np.random.default_rng(seed)),
                                          base.sample(np.random.default_rng(seed)))
        np.testing.assert_array_equal(msk_j, msk_b)  # same crop and transform; only intensities move
        assert img_j.dtype == np.uint8
        changed += int(np.abs(img_j.astype(int) - img_b.astype(int)).mean() > 1)
    assert changed == 5
    assert AugmentConfig.with_intensity().blur_prob > 0
