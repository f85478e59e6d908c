"""dlib's face-recognition ResNet rebuilt in PyTorch, checked against dlib itself on real faces."""

from __future__ import annotations

import dataclasses

import dlib
import numpy as np
import pytest
import torch

from talkinghead import assets
from talkinghead.errors import UserError
from talkinghead.models.face_identity import (
    CHIP_SIZE,
    SAME_IDENTITY_DISTANCE,
    FaceIdentityNet,
    extract_face_chips,
    face_chip_transforms,
)
from talkinghead.pretrained import read_metric_net

CLIP_FRAMES = (0, 40, 80, 115)


@dataclasses.dataclass
class Face:
    image: np.ndarray  # [H,W,3] uint8
    shape: dlib.full_object_detection
    chip: np.ndarray  # dlib.get_face_chip, [150,150,3] uint8
    descriptor: np.ndarray  # dlib's, [128]

    @property
    def landmarks(self) -> torch.Tensor:
        return torch.tensor([[p.x, p.y] for p in self.shape.parts()], dtype=torch.float32)


@pytest.fixture(scope="module")
def net() -> FaceIdentityNet:
    return FaceIdentityNet.from_dlib_file()


@pytest.fixture(scope="module")
def dlib_models():
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(assets.landmark_model_path())),
        dlib.face_recognition_model_v1(str(assets.face_recognition_model_path())),
    )


def _dlib_face(models, image: np.ndarray, upsample: int, box_scale: int = 1) -> Face:
    """dlib's whole pipeline on the largest face; ``box_scale``: detect on an image shrunk by it."""
    detector, predictor, recognizer = models
    boxes = detector(np.ascontiguousarray(image[::box_scale, ::box_scale]), upsample)
    assert len(boxes) >= 1, "dlib found no face"
    box = max(boxes, key=lambda b: b.area())
    box = dlib.rectangle(
        *(box_scale * v for v in (box.left(), box.top(), box.right(), box.bottom()))
    )
    shape = predictor(image, box)
    chip = dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=0.25)
    return Face(image, shape, chip, np.array(recognizer.compute_face_descriptor(chip)))


@pytest.fixture(scope="module")
def faces(dlib_models, clip_frames, astronaut) -> list[Face]:
    """Four frames of the carphone man (small: detector upsampled) and the astronaut."""
    clip = [_dlib_face(dlib_models, clip_frames[i], upsample=1) for i in CLIP_FRAMES]
    return [*clip, _dlib_face(dlib_models, astronaut, upsample=0)]


def _to_model_range(pixels: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W,3] or [H,W,3] -> float [N,3,H,W] in [-1,1]."""
    tensor = torch.from_numpy(np.array(pixels, dtype=np.float32))
    tensor = tensor[None] if tensor.ndim == 3 else tensor
    return tensor.permute(0, 3, 1, 2) / 127.5 - 1


def _to_pixels(chips: torch.Tensor) -> np.ndarray:
    return ((chips.detach() + 1) * 127.5).permute(0, 2, 3, 1).numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _descriptors(net: FaceIdentityNet, chips: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return net(chips).descriptor.double().numpy()


def test_descriptors_match_dlib_on_dlib_chips(net, faces):
    chips = _to_model_range(np.stack([face.chip for face in faces]))
    ours = _descriptors(net, chips)
    theirs = np.stack([face.descriptor for face in faces])
    cosines = _cosines(ours, theirs)
    print("cosine to dlib on dlib's chips:", cosines)
    assert cosines.min() >= 0.9999
    assert np.abs(ours - theirs).max() < 1e-4


def test_outputs_and_stage_features(net, faces):
    output = net(_to_model_range(faces[0].chip))
    assert output.descriptor.shape == (1, 128)
    shapes = [tuple(f.shape[1:]) for f in output.features]
    expected = [(32, 35, 35), (32, 35, 35), (64, 17, 17), (128, 8, 8), (256, 4, 4), (256, 2, 2)]
    assert shapes == expected
    assert not any(p.requires_grad for p in net.parameters()) and not net.training


def test_chip_geometry_matches_dlib(faces):
    """The transform's rectangle and angle equal dlib's chip_details for the same landmarks."""
    for face in faces:
        details = dlib.get_face_chip_details(face.shape, CHIP_SIZE, 0.25)
        transform = face_chip_transforms(face.landmarks[None])[0].numpy()
        linear, offset = transform[:, :2], transform[:, 2]
        centre = offset + linear.sum(axis=1) * (CHIP_SIZE - 1) / 2
        half_width = np.linalg.norm(linear[:, 0]) * (CHIP_SIZE - 1) / 2
        rect = details.rect
        expected = [rect.left(), rect.top(), rect.right(), rect.bottom()]
        found = [*(centre - half_width), *(centre + half_width)]
        np.testing.assert_allclose(found, expected, atol=1e-6)
        assert np.arctan2(linear[1, 0], linear[0, 0]) == pytest.approx(details.angle, abs=1e-9)


def test_differentiable_chips_match_dlib(net, faces):
    chips, descriptors = [], []
    for face in faces:  # images differ in size: one call each
        chip = extract_face_chips(_to_model_range(face.image), face.landmarks[None])
        chips.append(chip)
        difference = np.abs(_to_pixels(chip)[0] - face.chip)
        # dlib truncates to integers: ours sit 0..1 grey levels above.
        assert difference.mean() < 0.7 and difference.max() < 1.1
    descriptors = _descriptors(net, torch.cat(chips))
    cosines = _cosines(descriptors, np.stack([face.descriptor for face in faces]))
    print("cosine to dlib on our chips:", cosines)
    assert cosines.min() >= 0.999


def test_large_faces_use_dlib_pyramid(dlib_models, astronaut):
    """A face over twice the chip size is sampled from dlib's blurred half-size image; a batch
    mixing that with a small face (no pyramid) still matches dlib chip by chip."""
    image = np.ascontiguousarray(np.kron(astronaut, np.ones((3, 3, 1), np.uint8))[:, :-1])
    large = _dlib_face(dlib_models, image, upsample=0, box_scale=3)
    points = large.landmarks.numpy()
    small_points = (points - points.mean(0)) / 3 + points.mean(0)  # same place, a third the size
    small_shape = dlib.full_object_detection(
        large.shape.rect, [dlib.point(int(x), int(y)) for x, y in small_points.round()]
    )
    small_chip = dlib.get_face_chip(image, small_shape, size=CHIP_SIZE, padding=0.25)
    landmarks = torch.stack([large.landmarks, torch.tensor(small_points.round())]).float()
    scales = face_chip_transforms(landmarks)[:, :, 0].norm(dim=1)  # image pixels per chip pixel
    assert scales[0] > 2.1 and scales[1] < 1.5  # dlib's pyramid for the first only
    images = _to_model_range(image).expand(2, -1, -1, -1)
    chips = _to_pixels(extract_face_chips(images, landmarks))
    for ours, theirs in zip(chips, (large.chip, small_chip)):
        difference = np.abs(ours - theirs)
        # Two truncations in dlib (pyramid level, then chip): up to 2 grey levels.
        assert difference.mean() < 1.3 and difference.max() < 2.1


def test_gradients_reach_the_image(net, faces):
    face = faces[0]
    image = _to_model_range(face.image).requires_grad_(True)
    output = net(extract_face_chips(image, face.landmarks[None]))
    target = torch.from_numpy(faces[-1].descriptor).float()
    loss = (output.descriptor[0] - target).square().sum() + output.features[2].mean()
    loss.backward()
    grad = image.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    # Only pixels under the chip matter: the image corners get no gradient.
    assert grad[..., :5, :5].abs().sum() == 0


def test_identity_distances(net, faces):
    """Same man in two clip frames: closer than dlib's 0.6 threshold; astronaut: farther."""
    chips = [extract_face_chips(_to_model_range(f.image), f.landmarks[None]) for f in faces]
    descriptors = torch.from_numpy(_descriptors(net, torch.cat(chips)))
    clip, astronaut = descriptors[:-1], descriptors[-1:]
    same = torch.cdist(clip, clip)[np.triu_indices(len(clip), 1)]
    different = torch.cdist(clip, astronaut)
    print("same person:", same, "different:", different.flatten())
    assert same.max() < SAME_IDENTITY_DISTANCE < different.min()


def test_rejects_files_that_are_not_the_model(tmp_path):
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(bytes(range(256)) * 40)
    truncated = tmp_path / "truncated.dat"
    with open(assets.face_recognition_model_path(), "rb") as model_file:
        truncated.write_bytes(model_file.read(200_000))
    for path in (assets.landmark_model_path(), garbage, truncated, tmp_path / "missing.dat"):
        with pytest.raises(UserError, match=str(path.name)):
            FaceIdentityNet.from_dlib_file(path)


def test_rejects_a_different_layer_sequence():
    parsed = read_metric_net(assets.face_recognition_model_path())
    for layers in (parsed.layers[:-1], (parsed.layers[1], parsed.layers[0], *parsed.layers[2:])):
        with pytest.raises(ValueError, match="layer"):
            FaceIdentityNet.from_dlib(dataclasses.replace(parsed, layers=layers))
