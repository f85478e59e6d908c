"""Scores for the protocol: every method's frames go through this same code.

Frames are RGB uint8 [N,H,W,3] face crops; landmarks [N,68,2] crop pixels.
"""

from __future__ import annotations

import numpy as np
import torch

from talkinghead.data.episodes import to_tensor
from talkinghead.evaluation import frechet
from talkinghead.landmarks import detect
from talkinghead.models.face_identity import FaceIdentityNet, extract_face_chips

INTER_OCULAR = (36, 45)  # outer eye corners (iBUG)


class Scorer:
    """SSIM, PSNR, CSIM and landmark error; the identity network is loaded once."""

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

    def cross_identity(self, generated, shots, shot_landmarks, targets) -> dict:
        """Identity against the mean descriptor of the source shots; motion against targets."""
        reference = self.descriptors(shots, shot_landmarks).mean(0, keepdim=True)
        fake = self.descriptors(generated, targets)
        error, misses = landmark_error(generated, targets)
        identity = self.identity_scores(fake, reference.expand_as(fake))
        return {**identity, "landmark_error": error, "landmark_misses": misses}


def landmark_error(frames: np.ndarray, targets: np.ndarray) -> tuple[float | None, float]:
    """Mean landmark distance on the results, normalised by the targets' inter-ocular distance.

    Landmarks are detected on each result with dlib; frames where no face is found are counted
    as misses (their fraction is returned) and left out of the mean.
    """
    errors, misses = [], 0
    for frame, target in zip(frames, targets):
        faces = detect.detect_faces(frame)
        if not faces:
            misses += 1
            continue
        found = detect.predict_landmarks(frame, faces[0].box)
        scale = np.linalg.norm(target[INTER_OCULAR[0]] - target[INTER_OCULAR[1]])
        errors.append(float(np.linalg.norm(found - target, axis=1).mean() / max(scale, 1e-6)))
    return (float(np.mean(errors)) if errors else None), misses / max(len(frames), 1)


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
