"""The warp-and-refine generator: analytic flow, blending over shots, training, inference."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize
from torch.utils.data import default_collate

from talkinghead.config import preset as presets
from talkinghead.config.prep import PrepConfig
from talkinghead.data import tracks
from talkinghead.data.episodes import EpisodeDataset, to_tensor
from talkinghead.data.preprocess import run_prep
from talkinghead.evaluation.baselines import warp_nearest
from talkinghead.inference.pipeline import TalkingHead, spread_shots
from talkinghead.landmarks.rasterize import draw_landmarks_batch
from talkinghead.models import build_models, frozen_copy
from talkinghead.models.flow import fit_tps, identity_grid, pixels_to_grid, tps_grid, warp
from talkinghead.models.warp_generator import Shots
from talkinghead.training.content import build_training_content_loss
from talkinghead.training.ema import decay_at, make_ema, update_ema
from talkinghead.training.fine_tuning import FineTuneConfig, finetune
from talkinghead.training.meta_learning import MetaLearner

sys.path.insert(0, str(Path(__file__).parent))
from conftest import write_bundle
from train_helpers import fast_preset


@pytest.fixture(scope="module")
def crops(clip_frames):
    """The sample clip's face track cropped at 64 px: frames [T,64,64,3], landmarks [T,68,2]."""
    config = PrepConfig(crop_size=64)
    track = max(tracks.find_tracks(iter(clip_frames), config), key=len)
    cropped = tracks.crop_track(track, config)
    return cropped.crops, cropped.landmarks.astype(np.float64)


def _generator(seed: int = 0):
    preset = presets.load("tiny-warp")
    torch.manual_seed(seed)
    return build_models(preset.model).generator.eval(), preset


def _shots(frames: np.ndarray, landmarks: np.ndarray, size: int) -> Shots:
    images = to_tensor(frames)[None]
    drawn = to_tensor(draw_landmarks_batch(landmarks, size))[None]
    return Shots(images, drawn, torch.from_numpy(landmarks).float()[None], ())


def test_tps_maps_target_landmarks_onto_the_shot_within_half_a_pixel(crops):
    _, landmarks = crops
    target, source = torch.tensor(landmarks[[5, 60]]), torch.tensor(landmarks[[90, 10]])
    spline = fit_tps(target.float(), source.float(), 64)
    mapped = spline(pixels_to_grid(target.float(), 64))
    mapped_pixels = ((mapped.double() + 1) * 64 - 1) / 2
    assert (mapped_pixels - source).norm(dim=-1).max() < 0.5
    assert not torch.allclose(target, source, atol=0.5)  # the pairs really move


def test_shots_sharing_a_target_share_its_solve_and_match_one_solve_each(crops):
    """Rendering maps K shots onto one target: one solve for all K gives each shot's own grid."""
    _, landmarks = crops
    target = torch.tensor(landmarks[[5, 60]]).float()  # N=2 targets
    shots = torch.tensor(landmarks[[[90, 10, 33], [1, 2, 70]]]).float()  # K=3 shots each
    shared = tps_grid(target, shots, 64, 16)
    assert shared.shape == (2, 3, 16, 16, 2)
    for n in range(2):
        for k in range(3):
            alone = tps_grid(target[[n]], shots[n, [k]], 64, 16)[0]
            assert torch.allclose(shared[n, k], alone, atol=1e-5)
    assert not torch.allclose(shared[0, 0], shared[0, 1], atol=1e-2)  # the shots really differ


def test_a_closed_mouth_mapped_onto_an_open_one_is_evaluated_to_float64_accuracy(crops):
    """Inner lips 0.04 px apart in the target, 4 px apart in the shot: kernel weights in the
    thousands, whose terms cancel. The float32 map must still be the float64 one (plain
    float32 sums were 5e-3 grid units off here), and not depend on the rest of the batch."""
    _, landmarks = crops
    source = torch.tensor(landmarks[[10]])
    target = source.clone()
    upper, lower = [61, 62, 63], [67, 66, 65]
    middle = (target[:, upper] + target[:, lower]) / 2
    target[:, upper], target[:, lower] = middle - 0.02, middle + 0.02
    source[:, upper] -= torch.tensor([0.0, 1.5])
    source[:, lower] += torch.tensor([0.0, 1.5])
    spline = fit_tps(target, source, 64)
    assert spline.weights.abs().max() > 1000  # the cancelling case
    pixels = identity_grid(16, dtype=torch.float64).reshape(1, -1, 2)
    exact = spline(pixels).view(1, 16, 16, 2)
    grid = tps_grid(target.float(), source.float(), 64, 16)
    assert grid.dtype == torch.float32
    assert (grid.double() - exact).abs().max() < 1e-4
    # Batched with an ordinary pair (small weights only), each item gives its own grid.
    pair = torch.cat([target, torch.tensor(landmarks[[5]])]).float()
    batched = tps_grid(pair, torch.cat([source, torch.tensor(landmarks[[90]])]).float(), 64, 16)
    assert torch.equal(batched[0], grid[0])
    ordinary = tps_grid(pair[1:], torch.tensor(landmarks[[90]]).float(), 64, 16)
    assert torch.equal(batched[1], ordinary[0])


def test_zero_flow_reproduces_the_shot(crops):
    frames, landmarks = crops
    points = torch.tensor(landmarks[[7]]).float()
    image = to_tensor(frames[7])[None]
    assert torch.allclose(warp(image, tps_grid(points, points, 64, 64)), image, atol=1e-5)
    generator, _ = _generator()
    shots = _shots(frames[[7]], landmarks[[7]], 64)
    psi = generator.project(torch.rand(1, generator.embedding_dim))
    with torch.no_grad():
        out = generator(shots.landmark_images[0], shots.points[0], psi, shots)
    # Untrained: zero flow residual, so the blended warp is the shot itself.
    assert torch.allclose(out.warped, image, atol=1e-4)
    assert out.flow_residual.abs().max() == 0
    assert 0.9 < float(out.mask.mean()) < 1.0  # starts mostly from the warped pixels


def test_blend_prefers_the_shot_closest_in_pose_and_sums_to_one(crops):
    frames, landmarks = crops
    generator, _ = _generator()
    target = torch.tensor(landmarks[[40]]).float()
    # A shot with the target's own pose and one from far away in the clip.
    distances = np.linalg.norm(landmarks - landmarks[40], axis=(1, 2))
    far = int(distances.argmax())
    shots = _shots(frames[[far, 40]], landmarks[[far, 40]], 64)
    drawn = to_tensor(draw_landmarks_batch(landmarks[[40]], 64))
    psi = generator.project(torch.rand(1, generator.embedding_dim))
    with torch.no_grad():
        out = generator(drawn, target, psi, shots)
    weights = out.shot_weights[0]
    assert torch.allclose(weights.sum(0), torch.ones_like(weights[0]), atol=1e-5)
    assert weights[1].mean() > 0.9


def test_output_depends_on_the_shots_and_on_psi(crops):
    frames, landmarks = crops
    generator, _ = _generator()
    drawn = to_tensor(draw_landmarks_batch(landmarks[[50]], 64))
    target = torch.tensor(landmarks[[50]]).float()
    psi = generator.project(torch.rand(1, generator.embedding_dim))
    with torch.no_grad():
        first = generator(drawn, target, psi, _shots(frames[[0]], landmarks[[0]], 64)).image
        second = generator(drawn, target, psi, _shots(frames[[100]], landmarks[[100]], 64)).image
        other_psi = generator(drawn, target, psi * 2, _shots(frames[[0]], landmarks[[0]], 64))
        again = generator(drawn, target, psi, _shots(frames[[0]], landmarks[[0]], 64)).image
    assert (first - second).abs().mean() > 0.01
    assert (first - other_psi.image).abs().mean() > 1e-4
    assert torch.equal(first, again)  # deterministic in eval mode


def test_ema_warm_up_follows_the_ramp():
    assert decay_at(0.999, 1) == pytest.approx(2 / 11)
    assert decay_at(0.999, 90) == pytest.approx(91 / 100)
    assert decay_at(0.999, 100_000) == 0.999
    module = torch.nn.Linear(2, 2)
    ema = make_ema(module)
    start = ema.weight.detach().clone()
    with torch.no_grad():
        module.weight.add_(1.0)
    update_ema(ema, module, decay_at(0.999, 1))
    expected = 2 / 11 * start + 9 / 11 * module.weight.detach()
    assert torch.allclose(ema.weight, expected, atol=1e-6)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, short_videos) -> Path:
    root = tmp_path_factory.mktemp("warp_data")
    run_prep([short_videos], root, PrepConfig(crop_size=64, min_track_frames=8), progress=False)
    return root


def test_overfitting_one_episode_beats_the_landmark_warp(dataset):
    preset = fast_preset("tiny-warp", batch_size=1, num_shots=2, lr_generator=1e-3)
    data = EpisodeDataset(dataset, 2, 64, 0.0, 0)
    content, _ = build_training_content_loss(preset.loss)
    learner = MetaLearner(preset, data.num_videos, content, torch.device("cpu"))
    batch = default_collate([data[(0, 3)]])
    for _ in range(80):
        result = learner.generator_step(batch)
        learner.discriminator_step(batch, result.generated)
    shots = ((batch.source_frames[0].movedim(1, -1) + 1) * 127.5).round().byte().numpy()
    warped = warp_nearest(
        shots, batch.source_points[0].double().numpy(), batch.target_points.double().numpy()
    )
    real = batch.target_frame
    warp_error = (to_tensor(warped) - real).abs().mean()
    model_error = (result.generated - real).abs().mean()
    assert model_error < 0.9 * warp_error


def test_finetune_and_render_with_a_warp_bundle(tmp_path, crops):
    frames, landmarks = crops
    preset = presets.load("tiny-warp")
    loss = dataclasses.replace(preset.loss, identity_features=0.0, identity_descriptor=0.0)
    preset = dataclasses.replace(preset, loss=loss)
    head = TalkingHead.from_checkpoint(write_bundle(tmp_path / "tiny-warp.safetensors", preset))
    shots = (to_tensor(frames[:3]), to_tensor(draw_landmarks_batch(landmarks[:3], 64)))
    points = torch.from_numpy(landmarks[:3]).float()
    result = finetune(
        head.generator,
        head.discriminator,
        head.content_loss,
        preset.loss,
        (*shots, points),
        torch.rand(preset.model.embedding_dim),
        FineTuneConfig(steps=3),
        progress=False,
    )
    assert result.steps == 3 and all(np.isfinite(result.content_losses))
    from talkinghead.inference.faces import FaceCrop

    crop_list = [
        FaceCrop(frames[i], landmarks[i], np.array([0.0, 0, 64, 64]), 1) for i in (0, 40, 80)
    ]
    person = head.personalize_crops(crop_list, finetune_steps=0, progress=False)
    rendered = head.render(person, landmarks[100:104])
    assert rendered.shape == (4, 64, 64, 3) and rendered.dtype == np.uint8
    assert np.array_equal(rendered, head.render(person, landmarks[100:104]))
    # Starting from the warp: the render is close to the real frame, far closer than noise.
    error = np.abs(rendered.astype(float) - frames[100:104]).mean()
    assert error < 40


def test_spread_shots_covers_the_poses():
    landmarks = np.random.default_rng(0).normal(size=(20, 68, 2))
    picks = spread_shots(landmarks, 5)
    assert len(set(picks.tolist())) == 5 and picks[0] == 0
    assert np.array_equal(spread_shots(landmarks[:3], 5), np.arange(3))


def test_frozen_copy_renders_as_g_and_follows_changes_to_its_weights(tmp_path, crops):
    """Rendering runs a copy of G with spectral norms and pooling folded: the same frames as G's
    own forward; a change to G's weights in place (a training step) is not hidden by it."""
    frames, landmarks = crops
    preset = presets.load("tiny-warp")
    head = TalkingHead.from_checkpoint(write_bundle(tmp_path / "tiny-warp.safetensors", preset))
    copy = frozen_copy(head.generator, preset.model)
    assert not any(parametrize.is_parametrized(m) for m in copy.modules())
    assert not any(p.requires_grad for p in copy.parameters())
    drawn = to_tensor(draw_landmarks_batch(landmarks[[50, 70]], 64))
    target = torch.tensor(landmarks[[50, 70]]).float()
    psi = head.generator.project(torch.rand(1, head.generator.embedding_dim)).expand(2, -1)
    shots = _shots(frames[[0, 100]], landmarks[[0, 100]], 64)
    with torch.no_grad():
        expected = head.generator(drawn, target, psi, shots).image
        frozen = copy(drawn, target, psi, shots).image
    assert torch.allclose(frozen, expected, atol=1e-5)
    assert (expected - expected.mean()).abs().mean() > 0.01  # not a flat image

    from talkinghead.inference.faces import FaceCrop

    crop_list = [FaceCrop(frames[i], landmarks[i], np.array([0.0, 0, 64, 64]), 1) for i in (0, 80)]
    person = head.personalize_crops(crop_list, finetune_steps=0, progress=False)
    before = head.render(person, landmarks[100:102])
    assert np.array_equal(before, head.render(person, landmarks[100:102]))
    with torch.no_grad():
        head.generator.output_conv.weight.mul_(-1.0)  # in place, as an optimiser step is
    after = head.render(person, landmarks[100:102])
    assert np.abs(after.astype(int) - before).mean() > 1.0
    fresh = TalkingHead(head.preset, build_models(preset.model), "x")
    fresh.generator.load_state_dict(head.generator.state_dict())
    fresh.embedder.load_state_dict(head.embedder.state_dict())
    assert np.array_equal(after, fresh.render(person, landmarks[100:102]))
