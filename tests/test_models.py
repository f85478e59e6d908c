"""The paper's networks: shapes, ranges, psi layout, projection score, gradients, presets."""

from __future__ import annotations

import copy
import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from talkinghead.config import preset
from talkinghead.config.model import EmbedderConfig, GeneratorConfig, ModelConfig
from talkinghead.errors import UserError
from talkinghead.models import build_models, count_parameters
from talkinghead.models.attention import SelfAttention
from talkinghead.models.blocks import (
    AdaptiveInstanceNorm,
    ResBlock,
    pooled_kernel,
    upsample_2x,
)

BATCH = 2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads, and on a shared machine a busy neighbour stalls
    every multi-threaded kernel (a 0.1 s step took 5 s with 2 threads): run single-threaded."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny() -> ModelConfig:
    return preset.load("tiny").model


def _models(config: ModelConfig, seed: int = 0):
    torch.manual_seed(seed)
    return build_models(config)


def _inputs(config: ModelConfig, batch: int = BATCH, seed: int = 1):
    """A frame and a landmark image in [-1,1], as the data pipeline delivers them."""
    gen = torch.Generator().manual_seed(seed)
    size = config.image_size
    frames = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1
    landmarks = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1
    return frames, landmarks


def _forward_all(models, config: ModelConfig, batch: int = BATCH):
    """E -> P -> G -> D, as one meta-learning generator step wires them."""
    embedder, generator, discriminator = models
    frames, landmarks = _inputs(config, batch)
    embedding = embedder(frames, landmarks)
    fake = generator(landmarks, generator.project(embedding))
    w_rows = torch.randn(batch, config.embedding_dim, generator=torch.Generator().manual_seed(2))
    out = discriminator(fake, landmarks, discriminator.condition(w_rows))
    return embedding, fake, out


@pytest.mark.parametrize("name", ["tiny", "small-128", "paper-256"])
def test_presets_load_strictly_and_crop_matches_model(name):
    loaded = preset.load(name)
    assert loaded.prep.crop_size == loaded.model.image_size


def test_paper_256_parameter_counts_match_the_paper():
    embedder, generator, discriminator = _models(preset.load("paper-256").model)
    # Paper: E ~15M, G ~38M of which P ~6.7M, D ~20M; the lab layout gives psi 13,056.
    assert generator.psi_dim == 13056
    for module, target in [
        (embedder, 15e6),
        (generator, 38e6),
        (generator.projection, 6.7e6),
        (discriminator, 20e6),
    ]:
        assert abs(count_parameters(module) - target) / target < 0.10


def test_small_128_generator_fits_its_flop_budget():
    config = preset.load("small-128").model
    _, generator, _ = _models(config)
    generator.eval()
    with torch.no_grad():
        psi = generator.project(torch.zeros(1, config.embedding_dim))
        _, landmarks = _inputs(config, batch=1)
        with FlopCounterMode(display=False) as counter:
            out = generator(landmarks, psi)
    assert out.shape == (1, 3, 128, 128)
    assert counter.get_total_flops() <= 6.0e9


def test_shapes_and_value_ranges(tiny):
    embedder, generator, discriminator = _models(tiny)
    size, dim = tiny.image_size, tiny.embedding_dim
    embedding, fake, out = _forward_all((embedder, generator, discriminator), tiny)
    assert embedding.shape == (BATCH, dim) and (embedding >= 0).all()
    assert fake.shape == (BATCH, 3, size, size)
    assert fake.min() >= -1 and fake.max() <= 1
    assert out.score.shape == (BATCH,)
    assert out.embedding.shape == (BATCH, dim) and (out.embedding >= 0).all()
    # One feature map per layer of V: blocks, attention layers and the extra 4x4 block.
    num_layers = len(discriminator.blocks.layers) + len(discriminator.extra_blocks.layers)
    assert len(out.features) == num_layers
    assert out.features[-1].shape == (BATCH, dim, 4, 4)


def test_video_embedding_is_the_mean_over_shots(tiny):
    embedder, _, _ = _models(tiny)
    embedder.eval()
    frames, landmarks = _inputs(tiny, batch=6)
    shots = (frames.view(2, 3, 3, 64, 64), landmarks.view(2, 3, 3, 64, 64))
    per_shot = embedder.embed_shots(*shots)
    assert per_shot.shape == (2, 3, tiny.embedding_dim)
    torch.testing.assert_close(per_shot[1, 2], embedder(frames[5:], landmarks[5:])[0])
    torch.testing.assert_close(embedder.embed_video(*shots), per_shot.mean(dim=1))


def test_psi_width_is_derived_from_the_adain_layers(tiny):
    _, generator, _ = _models(tiny)
    norms = [m for m in generator.modules() if isinstance(m, AdaptiveInstanceNorm)]
    assert generator.psi_dim == sum(norm.num_adain_params for norm in norms)
    assert generator.psi_dim == generator.projection.out_features == sum(generator.adain_sizes)


def test_neutral_psi_reaches_every_adain_as_scale_one_shift_zero(tiny):
    """The layout neutral_psi assumes is the one forward hands out."""
    _, generator, _ = _models(tiny)
    norms = [m for m in generator.modules() if isinstance(m, AdaptiveInstanceNorm)]
    received = []
    for norm in norms:
        norm.register_forward_hook(lambda m, args, out: received.append((m, args[1])))
    _, landmarks = _inputs(tiny)
    generator(landmarks, generator.neutral_psi().expand(BATCH, -1))
    assert [m for m, _ in received] == norms  # each AdaIN once, in registration order
    for norm, params in received:
        expected = torch.cat([torch.ones(norm.channels), torch.zeros(norm.channels)])
        torch.testing.assert_close(params, expected.expand(BATCH, -1))


def test_projection_score_is_the_dot_product_plus_bias(tiny):
    _, _, discriminator = _models(tiny)
    with torch.no_grad():
        discriminator.b.fill_(0.25)
    frames, landmarks = _inputs(tiny)
    w_rows = torch.randn(BATCH, tiny.embedding_dim)
    condition = discriminator.condition(w_rows)
    torch.testing.assert_close(condition, w_rows + discriminator.w0)
    with torch.no_grad():
        out = discriminator(frames, landmarks, condition)
    v = torch.relu(out.features[-1]).sum(dim=(2, 3))
    condition = condition.detach()
    for i in range(BATCH):
        hand = sum(float(v[i, j]) * float(condition[i, j]) for j in range(tiny.embedding_dim))
        assert float(out.score[i]) == pytest.approx(hand + 0.25, rel=1e-5, abs=1e-5)


def test_gradients_reach_every_parameter_of_e_g_p_and_d(tiny):
    models = _models(tiny)
    for model in models:
        for module in model.modules():
            if isinstance(module, SelfAttention):
                # gamma starts at 0, which (by design) blocks gradients to q/k/v at step 0.
                torch.nn.init.constant_(module.gamma, 0.5)
    _, fake, out = _forward_all(models, tiny)
    feature_term = sum(feature.abs().mean() for feature in out.features)
    (out.score.sum() + fake.mean() + feature_term).backward()
    for group, model in zip(("E", "G", "D"), models):
        for name, parameter in model.named_parameters():
            assert parameter.grad is not None, f"{group}: no gradient for {name}"
            assert torch.isfinite(parameter.grad).all(), f"{group}: non-finite gradient, {name}"
            assert parameter.grad.abs().sum() > 0, f"{group}: zero gradient for {name}"
    assert {"w0", "b"} <= dict(models.discriminator.named_parameters()).keys()
    assert "projection.bias" in dict(models.generator.named_parameters())


def test_adain_with_one_psi_for_the_batch_equals_per_item_adain():
    # Rendering expands one person's psi over the batch; AdaIN then folds the scale and shift
    # into the norm's own affine. The result is per-item AdaIN with equal parameters.
    torch.manual_seed(0)
    norm, x = AdaptiveInstanceNorm(4), torch.randn(3, 4, 5, 5)
    one = torch.randn(1, 8)
    per_item = norm(x, one.repeat(3, 1))  # a copy per item: the general path
    expected = (x - x.mean((2, 3), keepdim=True)) / (x.var((2, 3), False, True) + 1e-5).sqrt()
    expected = expected * one[0, :4, None, None] + one[0, 4:, None, None]
    torch.testing.assert_close(per_item, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm(x, one.expand(3, -1)), per_item, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm(x[:1], one), per_item[:1], atol=1e-5, rtol=1e-5)


def test_adain_on_constant_input_is_finite_with_finite_gradients():
    norm = AdaptiveInstanceNorm(4)
    x = torch.full((2, 4, 8, 8), 3.0, requires_grad=True)
    params = torch.randn(2, 8, requires_grad=True)
    out = norm(x, params)
    out.square().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert torch.isfinite(params.grad).all()
    # A constant channel normalises to 0 (up to rounding of its mean), leaving the shift.
    shift = params[:, 4:, None, None].expand_as(out).detach()
    torch.testing.assert_close(out.detach(), shift, atol=1e-3, rtol=0)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_fast_kernels_compute_instance_norm_and_nearest_upsampling(memory_format):
    x = torch.randn(2, 5, 6, 6).contiguous(memory_format=memory_format)
    norm = AdaptiveInstanceNorm(5)  # neutral parameters: plain instance norm, on group norm
    plain = norm(x, norm.neutral_params().expand(2, -1).contiguous())
    torch.testing.assert_close(plain, torch.nn.functional.instance_norm(x))
    expected = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
    assert torch.equal(upsample_2x(x), expected)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_inference_downsampling_is_the_training_blocks_function(memory_format):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 10, 10).contiguous(memory_format=memory_format)
    expected = torch.nn.functional.avg_pool2d(conv(x), 2)
    fused = torch.nn.functional.conv2d(
        x, pooled_kernel(conv.weight), conv.bias, stride=2, padding=1
    )
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)
    # The block takes the fused path only without gradients, and gives the same result.
    block = ResBlock(4, 6, resample="down", norm="instance")
    with torch.no_grad():
        block.norm1.weight.uniform_(0.5, 1.5)
    trained = block(x)  # train mode, gradients on: conv then pool
    block.eval()
    with torch.no_grad():
        inferred = block(x)
        block.fix_pooling()  # the same with the kernel stored (exports)
        fixed = block(x)
    torch.testing.assert_close(inferred, trained.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fixed, inferred, atol=1e-6, rtol=1e-6)
    assert trained.requires_grad and inferred.shape == (2, 6, 5, 5)


def test_generator_on_a_blank_landmark_image_is_finite(tiny):
    _, generator, _ = _models(tiny)
    blank = torch.full((BATCH, 3, 64, 64), -1.0)  # black canvas, no landmarks
    psi = generator.project(torch.zeros(BATCH, tiny.embedding_dim))
    fake = generator(blank, psi)
    fake.sum().backward()
    assert torch.isfinite(fake).all()
    assert all(torch.isfinite(p.grad).all() for p in generator.parameters() if p.grad is not None)


def test_same_seed_same_output_and_eval_is_deterministic(tiny):
    first, second = _models(tiny, seed=3), _models(tiny, seed=3)
    for model in (*first, *second):
        model.eval()
    with torch.no_grad():
        a = _forward_all(first, tiny)
        b = _forward_all(second, tiny)
        c = _forward_all(first, tiny)  # eval runs no power iteration: nothing drifts
    for x, y, z in zip(a[:2], b[:2], c[:2]):
        assert torch.equal(x, y) and torch.equal(x, z)
    assert torch.equal(a[2].score, b[2].score) and torch.equal(a[2].score, c[2].score)


def test_models_deep_copy_for_ema(tiny):
    _, generator, _ = _models(tiny)
    generator.eval()
    ema = copy.deepcopy(generator)
    _, landmarks = _inputs(tiny)
    psi = generator.neutral_psi().expand(BATCH, -1)
    with torch.no_grad():
        assert torch.equal(ema(landmarks, psi), generator(landmarks, psi))
    assert ema.state_dict().keys() == generator.state_dict().keys()


def test_config_errors_name_the_field():
    with pytest.raises(UserError, match=r"model\.embedder\.attention_resolutions"):
        ModelConfig(embedder=EmbedderConfig(attention_resolutions=(48,)))
    with pytest.raises(UserError, match=r"model\.embedder\.channels ends with 256"):
        ModelConfig(embedder=EmbedderConfig(channels=(64, 128, 256)))
    with pytest.raises(UserError, match=r"model\.generator\.decoder_channels"):
        ModelConfig(generator=GeneratorConfig(decoder_channels=(512, 256, 128)))


def test_tiny_forward_backward_is_fast(tiny):
    models = _models(tiny)
    timings = []
    for _ in range(3):  # the first pass also pays for oneDNN kernel selection
        start = time.perf_counter()
        _, fake, out = _forward_all(models, tiny)
        (out.score.sum() + fake.mean()).backward()
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.5
