import numpy as np
import torch

from trainer.augment import Transform, apply_transform, draw_transform
from trainer.losses import ImagePool, blur_l1, shift_l1
from trainer.models import Generator, PatchDiscriminator, fold_batchnorm, init_weights

torch.set_num_threads(1)


def _trained_stats_generator(maps: int = 8, blocks: int = 2) -> Generator:
    torch.manual_seed(0)
    g = Generator(maps, blocks)
    init_weights(g)
    g.train()
    with torch.no_grad():
        for _ in range(3):  # move running statistics away from their initial values
            g(torch.rand(2, 1, 32, 32) * 2 - 1)
    return g.eval()


def test_generator_keeps_size_and_range():
    g = _trained_stats_generator()
    x = torch.rand(2, 1, 40, 56) * 2 - 1
    y = g(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0


def test_crop_of_output_equals_output_of_crop_away_from_borders():
    g = _trained_stats_generator()
    x = torch.rand(1, 1, 128, 128) * 2 - 1
    with torch.no_grad():
        full = g(x)
        crop = g(x[..., 32:96, 28:100])  # offsets multiples of 4
    margin = 28  # larger than this network's reach (measured in test_export)
    inner_full = full[..., 32 + margin:96 - margin, 28 + margin:100 - margin]
    inner_crop = crop[..., margin:-margin, margin:-margin]
    assert torch.allclose(inner_full, inner_crop, atol=1e-5)
    # a different tile content must not change the normalisation: scale the rest of the image
    x2 = x.clone()
    x2[..., :16, :] = 1.0
    with torch.no_grad():
        assert torch.allclose(g(x2)[..., 64:, :], full[..., 64:, :], atol=1e-6)


def test_no_instance_norm_in_generator():
    g = Generator(8, 1)
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in g.modules())


def test_folded_batchnorm_matches_eval_model():
    g = _trained_stats_generator()
    folded = fold_batchnorm(g)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 1, 48, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(g(x), folded(x), atol=1e-5)


def test_patchgan_receptive_field_is_70():
    torch.manual_seed(0)
    d = PatchDiscriminator(1, maps=8, layers=3)
    init_weights(d)
    for i, m in enumerate(d.net):  # instance statistics couple all pixels; measure the convs
        if isinstance(m, torch.nn.InstanceNorm2d):
            d.net[i] = torch.nn.Identity()
    x = torch.rand(1, 1, 160, 160, requires_grad=True)
    out = d(x)
    out[0, 0, out.shape[-2] // 2, out.shape[-1] // 2].backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    assert int(rows.max() - rows.min()) + 1 == 70
    assert int(cols.max() - cols.min()) + 1 == 70


def test_shift_l1_ignores_small_misregistration():
    torch.manual_seed(0)
    target = torch.rand(2, 1, 32, 32)
    shifted = torch.roll(target, shifts=(2, -1), dims=(-2, -1))
    assert shift_l1(shifted, target, 3) < 1e-7
    assert torch.nn.functional.l1_loss(shifted, target) > 0.1
    assert shift_l1(shifted, target, 1) > 0.1  # outside the window it still counts
    assert blur_l1(shifted, target, 2.0) < torch.nn.functional.l1_loss(shifted, target)


def test_image_pool_state_round_trip_reproduces_queries():
    pool = ImagePool(3, seed=1)
    batches = [torch.full((1, 1, 2, 2), float(i)) for i in range(8)]
    for b in batches[:4]:
        pool.query(b)
    clone = ImagePool(3, seed=99)
    clone.load_state_dict(pool.state_dict())
    for b in batches[4:]:
        assert torch.equal(pool.query(b), clone.query(b))


def test_identity_transform_is_a_plain_crop():
    image = np.random.default_rng(0).random((48, 64)).astype(np.float32)
    t = Transform(False, False, 0.0, 1.0, (0.0, 0.0))
    assert np.array_equal(apply_transform(image, t, 32), image[:32, :32])


def test_quarter_turn_turns_a_horizontal_ramp_vertical():
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    out = apply_transform(ramp, Transform(False, False, 90.0, 1.0, (0.5, 0.5)), 32)
    assert np.allclose(out, out[:, :1], atol=1e-5)  # constant along each row
    assert abs(out[-1, 0] - out[0, 0]) > 0.4


def test_random_transforms_have_crop_shape():
    rng = np.random.default_rng(0)
    image = rng.random((40, 40)).astype(np.float32)
    for _ in range(20):
        t = draw_transform(rng, (0.0, 30.0, 45.0, 60.0, 90.0), (0.8, 1.25))
        out = apply_transform(image, t, 32)
        assert out.shape == (32, 32) and 0.0 <= out.min() and out.max() <= 1.0
