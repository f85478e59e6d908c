"""The content loss a training run uses: VGG when the user provides weights, else identity."""

from __future__ import annotations

from torch import nn

from talkinghead.config.loss import LossConfig
from talkinghead.losses import build_content_loss
from talkinghead.models.face_identity import FaceIdentityNet, extract_face_chips


def build_training_content_loss(
    config: LossConfig, vgg19: str | None = None, vggface: str | None = None
) -> tuple[nn.Module, str]:
    """Content loss and one line saying which networks it uses and why (printed at start)."""
    wants_identity = config.identity_features or config.identity_descriptor
    identity = None
    if config.content_backbone != "vgg" and wants_identity:
        identity = FaceIdentityNet.from_dlib_file()  # dlib's CC0 face-recognition ResNet
    return build_content_loss(
        config, vgg19, vggface, identity_net=identity, chip_fn=extract_face_chips
    )
