"""VGG19 / VGG-Face loaders: standard file layouts, strict checks, lookup, paper layers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from talkinghead.config.loss import LossConfig
from talkinghead.errors import UserError
from talkinghead.losses import build_content_loss
from talkinghead.pretrained.vgg import (
    VGG16_BLOCKS,
    VGG19_BLOCKS,
    layer_names,
    load_vgg19,
    load_vggface,
    vgg19_features,
    vggface_features,
)

# Written out by hand (not derived from the code under test): torchvision's conv positions in
# ``vgg19().features`` and the conv names of ``vgg_face_dag.pth`` with their VGG16 positions.
TORCHVISION_VGG19_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
VGG_FACE_DAG_CONVS = {
    "conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12,
    "conv3_3": 14, "conv4_1": 17, "conv4_2": 19, "conv4_3": 21, "conv5_1": 24, "conv5_2": 26,
    "conv5_3": 28,
}  # fmt: skip


def _he_init(network: nn.Module, seed: int) -> None:
    """He-normal weights so that activations keep their scale down to relu5_1."""
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            std = math.sqrt(2.0 / (module.in_channels * 9))
            module.weight.data = torch.randn(module.weight.shape, generator=generator) * std
            module.bias.data = torch.randn(module.bias.shape, generator=generator) * 0.01


def _conv_shape(position: int, blocks) -> tuple[int, int]:
    """(out, in) channels of the conv at a torchvision position, for the layers not built."""
    channels = [c for block in blocks for c in block]
    convs = [i for i, name in enumerate(layer_names(blocks)) if name.startswith("conv")]
    k = convs.index(position)
    return channels[k], channels[k - 1] if k else 3


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small convolutions on a shared 2-core machine run far faster on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory):
    network = vgg19_features()
    _he_init(network, seed=1)
    state = {k: v.clone() for k, v in network.state_dict().items()}
    for position in TORCHVISION_VGG19_CONVS:  # conv5_2..conv5_4 are past relu5_1: not built
        if f"features.{position}.weight" not in state:
            out_c, in_c = _conv_shape(position, VGG19_BLOCKS)
            state[f"features.{position}.weight"] = torch.randn(out_c, in_c, 3, 3)
            state[f"features.{position}.bias"] = torch.randn(out_c)
    assert len(state) == 2 * len(TORCHVISION_VGG19_CONVS)
    path = tmp_path_factory.mktemp("vgg19") / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    return path, network, state


@pytest.fixture(scope="module")
def vggface_file(tmp_path_factory):
    network = vggface_features()
    _he_init(network, seed=2)
    built = network.state_dict()
    state = {}
    for name, position in VGG_FACE_DAG_CONVS.items():
        if f"features.{position}.weight" in built:
            state[f"{name}.weight"] = built[f"features.{position}.weight"].clone()
            state[f"{name}.bias"] = built[f"features.{position}.bias"].clone()
        else:
            state[f"{name}.weight"] = torch.randn(512, 512, 3, 3)
            state[f"{name}.bias"] = torch.randn(512)
    path = tmp_path_factory.mktemp("vggface") / "vgg_face_dag.pth"
    torch.save(state, path)
    return path, network, state


@pytest.fixture
def images():
    generator = torch.Generator().manual_seed(3)
    return torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1


def _same_activations(a, b):
    assert len(a) == len(b) == 5
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.abs().mean() > 1e-3
        torch.testing.assert_close(x, y)


def test_paper_layers_are_the_torchvision_indices():
    vgg19 = layer_names(VGG19_BLOCKS)
    vgg16 = layer_names(VGG16_BLOCKS)
    paper = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    assert [vgg19.index(n) for n in paper] == [1, 6, 11, 20, 29]  # "conv1,6,11,20,29"
    assert [vgg16.index(n) for n in paper] == [1, 6, 11, 18, 25]  # "conv1,6,11,18,25"
    assert [i for i, n in enumerate(vgg19) if n.startswith("conv")] == list(TORCHVISION_VGG19_CONVS)
    assert [i for i, n in enumerate(vgg16) if n.startswith("conv")] == list(
        VGG_FACE_DAG_CONVS.values()
    )


def test_vgg19_loads_by_explicit_path(vgg19_file, images):
    path, network, _ = vgg19_file
    loaded = load_vgg19(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    _same_activations(loaded(images), network(images))


def test_vgg19_found_in_weights_folder(vgg19_file, images, monkeypatch):
    path, network, _ = vgg19_file
    monkeypatch.setenv("TALKINGHEAD_WEIGHTS", str(path.parent))
    _same_activations(load_vgg19()(images), network(images))


def test_vggface_loads_by_path_and_folder(vggface_file, images, monkeypatch):
    path, network, _ = vggface_file
    _same_activations(load_vggface(path)(images), network(images))
    monkeypatch.setenv("TALKINGHEAD_WEIGHTS", str(path.parent))
    _same_activations(load_vggface()(images), network(images))


def test_vgg19_normalises_like_imagenet(vgg19_file, images):
    path, _, state = vgg19_file
    x = (images + 1) / 2
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = F.relu(
        F.conv2d((x - mean) / std, state["features.0.weight"], state["features.0.bias"], padding=1)
    )
    torch.testing.assert_close(load_vgg19(path)(images)[0], expected)


def test_vggface_subtracts_its_rgb_mean_at_255_scale(vggface_file, images):
    path, _, state = vggface_file
    mean = torch.tensor([129.186279296875, 104.76238250732422, 93.59396362304688]).view(1, 3, 1, 1)
    x = (images + 1) * 127.5 - mean
    expected = F.relu(F.conv2d(x, state["conv1_1.weight"], state["conv1_1.bias"], padding=1))
    torch.testing.assert_close(load_vggface(path)(images)[0], expected)


def test_missing_key_is_a_one_line_error_naming_the_file(vggface_file, tmp_path):
    _, _, state = vggface_file
    broken = {k: v for k, v in state.items() if k != "conv3_2.bias"}
    path = tmp_path / "vgg_face_dag.pth"
    torch.save(broken, path)
    with pytest.raises(UserError) as info:
        load_vggface(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "missing conv3_2.bias" in message


def test_wrong_shape_is_an_error_naming_the_file(vggface_file, tmp_path):
    _, _, state = vggface_file
    broken = {**state, "conv1_1.weight": torch.zeros(64, 3, 5, 5)}
    path = tmp_path / "bad.pth"
    torch.save(broken, path)
    with pytest.raises(UserError, match=r"bad\.pth.*wrong shape conv1_1\.weight"):
        load_vggface(path)


def test_unexpected_and_wrong_head_keys_are_errors(vgg19_file, tmp_path):
    _, _, state = vgg19_file
    path = tmp_path / "bn.pth"
    torch.save({**state, "features.1.running_mean": torch.zeros(64)}, path)  # a vgg19_bn-like file
    with pytest.raises(UserError, match=r"bn\.pth.*unexpected features\.1\.running_mean"):
        load_vgg19(path)
    path = tmp_path / "head.pth"
    torch.save({**state, "classifier.6.weight": torch.zeros(10, 4096)}, path)
    with pytest.raises(UserError, match=r"head\.pth.*classifier\.6\.weight \[10, 4096\]"):
        load_vgg19(path)


def test_torchvision_key_file_is_not_a_vggface_file(vgg19_file):
    path, _, _ = vgg19_file
    with pytest.raises(UserError, match="not a VGG-Face state dict"):
        load_vggface(path)


def test_unreadable_and_absent_files(tmp_path, monkeypatch):
    garbage = tmp_path / "vgg19.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"vgg19\.pth: cannot read weights"):
        load_vgg19(garbage)
    monkeypatch.setenv("TALKINGHEAD_WEIGHTS", str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"VGG-Face weights not found.*vgg_face_dag\.pth"):
        load_vggface()


def test_safetensors_file_and_resize(vggface_file, images, tmp_path):
    _, network, state = vggface_file
    path = tmp_path / "vgg_face.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    _same_activations(load_vggface(path)(images), network(images))
    resized = load_vggface(path, input_size=48)(images)
    assert resized[0].shape[-2:] == (48, 48) and resized[-1].shape[-2:] == (3, 3)


def test_build_content_loss_chooses_vgg_when_paths_are_given(
    vgg19_file, vggface_file, images, tmp_path, monkeypatch
):
    monkeypatch.setenv("TALKINGHEAD_WEIGHTS", str(tmp_path))
    vgg19_path, vggface_path = vgg19_file[0], vggface_file[0]
    loss, description = build_content_loss(LossConfig(), vgg19_path, vggface_path)
    assert "\n" not in description and "paper's VGG" in description
    assert str(vgg19_path) in description and str(vggface_path) in description
    generated = images.flip(-1).requires_grad_(True)
    terms = loss(generated, images)
    assert set(terms.terms) == {"vgg19", "vggface"} and terms.total.item() > 0
    terms.total.backward()
    assert generated.grad is not None
    assert loss(images.clone(), images).total.item() == 0.0


def test_build_content_loss_auto_uses_what_the_folder_has(vggface_file, monkeypatch):
    monkeypatch.setenv("TALKINGHEAD_WEIGHTS", str(vggface_file[0].parent))
    loss, description = build_content_loss(LossConfig())
    assert [t.name for t in loss.feature_terms] == ["vggface"]
    assert "VGG19 weights not found" in description and "term left out" in description
    loss, description = build_content_loss(LossConfig(content_backbone="identity"))
    assert "identity" in description and all(t.name != "vggface" for t in loss.feature_terms)
