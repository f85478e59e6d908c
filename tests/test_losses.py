"""Losses: hinge, generator adversarial, feature matching, L_MCH, content loss and its builder."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.config.loss import LossConfig
from talkinghead.errors import UserError
from talkinghead.losses import (
    ContentLoss,
    FeatureTerm,
    IdentityFeatures,
    LossTerms,
    build_content_loss,
    discriminator_loss,
    embedding_match_loss,
    embedding_match_terms,
    feature_matching_loss,
    generator_adversarial_loss,
    generator_adversarial_terms,
    ssim,
)


class TinyFeatures(nn.Module):
    """A two-stage conv net standing in for VGG: returns a list of activations."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, images):
        first = self.stage1(images)
        return [first, self.stage2(first)]


class IdentityOutput(NamedTuple):
    descriptor: torch.Tensor
    features: list[torch.Tensor]


class TinyIdentityNet(nn.Module):
    """Stands in for the face-identity net: chips -> (descriptor [N,8], features)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = TinyFeatures()
        self.fc = nn.Linear(8, 8)
        self.seen_sizes: list[tuple[int, int]] = []

    def forward(self, chips):
        self.seen_sizes.append(tuple(chips.shape[-2:]))
        features = self.body(chips)
        return IdentityOutput(self.fc(features[-1].mean(dim=(2, 3))), features)


@pytest.fixture
def images():
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(2, 3, 24, 24, generator=generator) * 2 - 1
    fake = torch.rand(2, 3, 24, 24, generator=generator) * 2 - 1
    return real, fake


@pytest.fixture
def empty_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TALKINGHEAD_WEIGHTS", str(tmp_path))
    return tmp_path


# --- adversarial -------------------------------------------------------------------------------


def test_hinge_is_zero_at_the_margins():
    terms = discriminator_loss(torch.ones(4), -torch.ones(4))
    assert terms.total.item() == 0.0
    assert set(terms.terms) == {"hinge_real", "hinge_fake"}


def test_hinge_known_values():
    real = torch.tensor([0.5, 2.0, -1.0])  # 1 - x: 0.5, -1 -> 0, 2
    fake = torch.tensor([0.0, -2.0, 1.0])  # 1 + x: 1, -1 -> 0, 2
    terms = discriminator_loss(real, fake)
    assert terms["hinge_real"].item() == pytest.approx(2.5 / 3)
    assert terms["hinge_fake"].item() == pytest.approx(1.0)
    assert terms.total.item() == pytest.approx(2.5 / 3 + 1.0)


def test_generator_term_is_minus_mean():
    score = torch.tensor([0.3, -1.2, 2.0, 0.1])
    assert generator_adversarial_loss(score).item() == pytest.approx(-score.mean().item())


def test_feature_matching_zero_for_identical_features():
    features = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)]
    assert feature_matching_loss(features, [f.clone() for f in features]).item() == 0.0


def test_feature_matching_hand_value_and_real_side_detached():
    real = [torch.zeros(2, 3, requires_grad=True), torch.zeros(1, 4, requires_grad=True)]
    fake = [torch.full((2, 3), 2.0, requires_grad=True), torch.tensor([[0.5, -0.5, 0.5, -0.5]])]
    fake[1].requires_grad_(True)
    loss = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx((2.0 + 0.5) / 2)  # mean L1 per block, averaged
    loss.backward()
    assert all(r.grad is None for r in real)
    assert fake[0].grad is not None


def test_feature_matching_rejects_block_count_mismatch():
    with pytest.raises(ValueError):
        feature_matching_loss([torch.zeros(1)], [torch.zeros(1), torch.zeros(1)])


def test_generator_adversarial_terms_use_config_weights():
    config = LossConfig()
    score = torch.tensor([1.0, 3.0])
    real, fake = [torch.zeros(2, 2)], [torch.ones(2, 2)]
    terms = generator_adversarial_terms(config, score, real, fake)
    assert terms["adversarial"].item() == pytest.approx(-2.0 * config.adversarial)
    assert terms["feature_matching"].item() == pytest.approx(config.feature_matching)
    assert terms.total.item() == pytest.approx(-2.0 + config.feature_matching)


# --- embedding match ---------------------------------------------------------------------------


def test_embedding_match_hand_value():
    video = torch.tensor([[1.0, 2.0]])  # W_i, [N=1, D=2]
    frames = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])  # e_k, [N=1, K=2, D=2]
    # k=1: (1 + 2) / 2 = 1.5; k=2: (0 + 1) / 2 = 0.5; mean over k = 1.0
    assert embedding_match_loss(video, frames).item() == pytest.approx(1.0)
    assert embedding_match_loss(video, frames[:, 0]).item() == pytest.approx(1.5)


def test_embedding_match_trains_both_sides_and_weight_zero_drops_it():
    video = torch.randn(3, 5, requires_grad=True)
    frames = torch.randn(3, 4, 5, requires_grad=True)
    terms = embedding_match_terms(LossConfig(), video, frames)
    terms.total.backward()
    assert video.grad is not None and frames.grad is not None
    assert embedding_match_terms(LossConfig(embedding_match=0.0), video, frames).terms == {}


# --- loss terms --------------------------------------------------------------------------------


def test_loss_terms_add_and_log():
    a = LossTerms({"x": torch.tensor(1.0)})
    b = LossTerms({"y": torch.tensor(2.5)})
    both = a + b
    assert both.total.item() == pytest.approx(3.5)
    assert both.scalars() == {"total": 3.5, "x": 1.0, "y": 2.5}
    assert LossTerms().total.item() == 0.0
    with pytest.raises(ValueError, match="x"):
        _ = a + a


# --- content loss ------------------------------------------------------------------------------


def test_content_loss_zero_for_identical_images(images):
    real, _ = images
    loss = ContentLoss([(TinyFeatures(), 0.5)], pixel_l1=1.0, ssim=0.5)
    terms = loss(real.clone(), real)
    assert set(terms.terms) == {"features", "pixel_l1", "ssim"}
    assert terms.total.item() == pytest.approx(0.0, abs=1e-6)


def test_content_loss_positive_and_matches_hand_computation(images):
    real, fake = images
    net = TinyFeatures()
    loss = ContentLoss([FeatureTerm(net, 0.5, "tiny")], pixel_l1=2.0)
    terms = loss(fake, real)
    expected = sum(F.l1_loss(f, r) for f, r in zip(net(fake), net(real)))
    assert terms["tiny"].item() == pytest.approx(0.5 * expected.item(), rel=1e-5)
    assert terms["pixel_l1"].item() == pytest.approx(2.0 * F.l1_loss(fake, real).item(), rel=1e-6)
    assert terms.total.item() > 0


def test_content_loss_gradients_reach_generated_image_only(images):
    real, fake = images
    real = real.clone().requires_grad_(True)
    fake = fake.clone().requires_grad_(True)
    net = TinyFeatures()
    loss = ContentLoss([(net, 1.0)], pixel_l1=1.0, ssim=1.0)
    loss(fake, real).total.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert real.grad is None
    assert all(p.grad is None for p in net.parameters())


def test_content_loss_keeps_networks_frozen_in_eval_mode():
    net = TinyFeatures()
    loss = ContentLoss([(net, 1.0)])
    loss.train()
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())
    assert list(loss.parameters()) == list(net.parameters())  # registered: .to() moves it


def test_ssim_identity_and_range(images):
    real, fake = images
    assert ssim(real, real).item() == pytest.approx(1.0, abs=1e-5)
    value = ssim(fake, real).item()
    assert -1.0 < value < 0.5  # independent noise images are dissimilar
    assert ssim(real[..., :6, :6], fake[..., :6, :6]).dim() == 0  # window shrinks to fit


def test_identity_term_uses_descriptor_and_center_crop(images):
    real, fake = images
    identity_net = TinyIdentityNet()
    network = IdentityFeatures(identity_net, crop=0.5, chip_size=20)
    loss = ContentLoss([FeatureTerm(network, 1.0, "identity", descriptor_weight=2.0)])
    zero = loss(real.clone(), real)
    assert zero["identity"].item() == pytest.approx(0.0)
    assert zero["identity_descriptor"].item() == pytest.approx(0.0, abs=1e-6)
    terms = loss(fake, real)
    assert terms["identity"].item() > 0 and terms["identity_descriptor"].item() > 0
    assert set(identity_net.seen_sizes) == {(20, 20)}
    # The central 12x12 of the 24x24 image is what the network sees.
    assert torch.allclose(
        network.chips(real), F.interpolate(real[..., 6:18, 6:18], size=(20, 20), mode="bilinear")
    )


def test_identity_term_passes_landmarks_to_chip_fn(images):
    real, fake = images
    calls = []

    def chip_fn(batch, landmarks):
        calls.append(landmarks)
        return batch[..., :16, :16]

    network = IdentityFeatures(TinyIdentityNet(), chip_fn=chip_fn)
    loss = ContentLoss([FeatureTerm(network, 1.0, "identity", 1.0, uses_landmarks=True)])
    landmarks = torch.zeros(2, 68, 2)
    assert loss(fake, real, landmarks=landmarks).total.item() > 0
    assert len(calls) == 2 and all(c is landmarks for c in calls)
    with pytest.raises(ValueError, match="landmarks"):
        loss(fake, real)


def test_build_content_loss_defaults_to_identity_and_pixel(images, empty_weights):
    real, fake = images
    loss, description = build_content_loss(LossConfig(), identity_net=TinyIdentityNet())
    assert "\n" not in description
    assert "identity + pixel" in description and "no VGG19/VGG-Face weights" in description
    assert "central 0.62 crops" in description
    terms = loss(fake, real)
    assert set(terms.terms) == {"identity", "identity_descriptor", "pixel_l1", "ssim"}
    assert terms.total.item() > 0


def test_build_content_loss_without_identity_net_says_pixel_only(empty_weights):
    loss, description = build_content_loss(LossConfig())
    assert "pixel-only" in description and "no identity network" in description
    assert loss.feature_terms == []


def test_build_content_loss_vgg_backbone_without_weights_is_an_error(empty_weights):
    with pytest.raises(UserError, match="no VGG19 or VGG-Face weights"):
        build_content_loss(LossConfig(content_backbone="vgg"))


def test_build_content_loss_explicit_missing_path_is_an_error(empty_weights, tmp_path):
    with pytest.raises(UserError, match="not found"):
        build_content_loss(LossConfig(), vgg19_path=tmp_path / "nope.pth")


def test_default_weights_follow_the_paper():
    config = LossConfig()
    assert (config.vgg19, config.vggface) == (1.5e-1, 2.5e-2)
    assert (config.adversarial, config.feature_matching, config.embedding_match) == (
        1.0,
        10.0,
        10.0,
    )
    assert config.content_backbone == "auto"
