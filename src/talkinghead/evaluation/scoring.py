"""Scores for the protocol: every method's frames go through this same code.

Frames are RGB uint8 [N,H,W,3] face crops; landmarks [N,68,2] crop pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from talkinghead.data.episodes import to_tensor
from talkinghead.evaluation import frechet
from talkinghead.evaluation.temporal import inter_ocular, motion_scores
from talkinghead.landmarks import detect
from talkinghead.models.face_identity import FaceIdentityNet, extract_face_chips

SAME_PERSON = 0.6  # dlib's threshold on descriptor distance: same person below it


class RealFrames(NamedTuple):
    """Real face crops of one person and what is known of them."""

    images: np.ndarray  # [N,H,W,3] uint8
    landmarks: np.ndarray  # [N,68,2] the tracked landmarks that crop (and drive) them
    found: np.ndarray | None = None  # [N,68,2] landmarks dlib finds on them, NaN: no face


class Scorer:
    """SSIM, PSNR, identity, landmark and motion scores; the identity network is loaded once."""

    def __init__(self, identity: FaceIdentityNet | None = None, fid_network=None, lpips=None):
        self.identity = identity or FaceIdentityNet.from_dlib_file()
        self.fid_network = fid_network  # FID Inception (user-provided weights) or None
        self.lpips = lpips  # LPIPS-VGG (user-provided weights) or None

    @torch.no_grad()
    def descriptors(self, frames: np.ndarray, landmarks: np.ndarray) -> torch.Tensor:
        """dlib face descriptors [N,128] of faces at known landmarks (aligned chips)."""
        chips = extract_face_chips(to_tensor(frames), torch.from_numpy(landmarks).float())
        return self.identity(chips).descriptor

    @staticmethod
    def identity_scores(fake: torch.Tensor, real: torch.Tensor) -> dict:
        """CSIM (mean cosine) and the mean euclidean distance of descriptors.

        dlib's descriptors are not centred (any two faces have cosine ~0.8), so CSIM moves in
        a narrow range; the euclidean distance is dlib's own measure (same person < 0.6).
        """
        cosine = torch.nn.functional.cosine_similarity(fake, real, dim=1)
        distance = torch.linalg.vector_norm(fake - real, dim=1)
        return {"csim": float(cosine.mean()), "identity_distance": float(distance.mean())}

    def self_reenactment(self, generated, real, targets) -> dict:
        error, misses = landmark_error(generated, targets)
        fake, true = self.descriptors(generated, targets), self.descriptors(real, targets)
        scores = {
            "ssim": ssim(generated, real),
            "psnr": psnr(generated, real),
            **self.identity_scores(fake, true),
            # Frechet distance on identity descriptors: NOT FID (other features, 128-d).
            "identity_frechet": frechet.frechet_distance(
                *frechet.statistics(fake.numpy()), *frechet.statistics(true.numpy())
            ),
            "landmark_error": error,
            "landmark_misses": misses,
        }
        if self.fid_network is not None:
            scores["fid"] = frechet.fid(real, generated, self.fid_network)
        if self.lpips is not None:
            with torch.no_grad():
                distances = self.lpips(to_tensor(generated), to_tensor(real))
            scores["lpips"] = float(distances.mean())
        return scores

    def temporal(self, generated: np.ndarray, driver_found: np.ndarray) -> dict:
        """Jitter and mouth opening of consecutive frames against the driver's real frames
        (``driver_found``: landmarks dlib found on them, see :func:`find_landmarks`)."""
        return motion_scores(find_landmarks(generated), driver_found)

    def cross_identity(
        self, generated: np.ndarray, targets: np.ndarray, source: RealFrames, driver: RealFrames
    ) -> dict:
        """Person A (``source``: A's shots) driven by B's consecutive frames (``driver``, with
        ``found``), rendered at ``targets``.

        Identity against the mean descriptor of A's shots (mean distance, and the fraction of
        frames below dlib's same-person threshold) and of B's frames; landmark error against
        the targets; jitter and mouth opening against B's real frames.
        """
        reference = self.descriptors(source.images, source.landmarks).mean(0, keepdim=True)
        other = self.descriptors(driver.images, driver.landmarks).mean(0, keepdim=True)
        fake = self.descriptors(generated, targets)
        found = find_landmarks(generated)
        error, misses = landmark_error_of(found, targets)
        to_source = torch.linalg.vector_norm(fake - reference, dim=1)
        return {
            **self.identity_scores(fake, reference.expand_as(fake)),
            "same_person_fraction": float((to_source < SAME_PERSON).double().mean()),
            "driver_distance": float(torch.linalg.vector_norm(fake - other, dim=1).mean()),
            "landmark_error": error,
            "landmark_misses": misses,
            **motion_scores(found, driver.found),
        }


def find_landmarks(frames: np.ndarray) -> np.ndarray:
    """dlib's 68 landmarks on each frame [N,H,W,3] -> [N,68,2]; NaN where no face is found."""
    found = np.full((len(frames), 68, 2), np.nan)
    for index, frame in enumerate(frames):
        faces = detect.detect_faces(frame)
        if faces:
            found[index] = detect.predict_landmarks(frame, faces[0].box)
    return found


def landmark_error(frames: np.ndarray, targets: np.ndarray) -> tuple[float | None, float]:
    """Mean landmark distance on the results, normalised by the targets' inter-ocular distance.

    Landmarks are detected on each result with dlib; frames where no face is found are counted
    as misses (their fraction is returned) and left out of the mean.
    """
    return landmark_error_of(find_landmarks(frames), targets)


def landmark_error_of(found: np.ndarray, targets: np.ndarray) -> tuple[float | None, float]:
    """:func:`landmark_error` from landmarks already found (NaN rows: no face)."""
    hit = np.isfinite(found).all(axis=(1, 2))
    scale = np.maximum(inter_ocular(targets[hit]), 1e-6)
    errors = np.linalg.norm(found[hit] - targets[hit], axis=-1).mean(axis=-1) / scale
    error = float(errors.mean()) if hit.any() else None
    return error, float(1 - hit.mean()) if len(found) else 0.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over frames of the PSNR (dB, peak 255) of uint8 images [N,H,W,3]; inf if equal."""
    values = []
    for x, y in zip(np.asarray(a, np.float64), np.asarray(b, np.float64)):
        mse = np.mean((x - y) ** 2)
        values.append(np.inf if mse == 0 else 10 * np.log10(255.0**2 / mse))
    return float(np.mean(values))


def _gaussian_window(sigma: float = 1.5, radius: int = 5) -> torch.Tensor:
    taps = torch.exp(
        -(torch.arange(-radius, radius + 1, dtype=torch.float64) ** 2) / (2 * sigma**2)
    )
    return taps / taps.sum()


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) of uint8 images [N,H,W,3]: Gaussian window sigma 1.5,
    per channel, averaged; the same definition as scikit-image's ``structural_similarity``
    with ``gaussian_weights=True, use_sample_covariance=False, data_range=255`` (a test checks).
    """
    x = torch.from_numpy(np.asarray(a, np.float64)).permute(0, 3, 1, 2)
    y = torch.from_numpy(np.asarray(b, np.float64)).permute(0, 3, 1, 2)
    window = _gaussian_window()
    channels = x.shape[1]

    def blur(t: torch.Tensor) -> torch.Tensor:
        # Separable Gaussian, 'valid' region only (skimage crops the border of width 5).
        t = torch.nn.functional.conv2d(
            t, window.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels
        )
        return torch.nn.functional.conv2d(
            t, window.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels
        )

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float((numerator / denominator).mean(dim=(1, 2, 3)).mean())
