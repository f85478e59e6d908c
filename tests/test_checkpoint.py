"""Checkpoint I/O: exact round trips, fp16 export, strict loading with one-line reasons."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from talkinghead import checkpoint
from talkinghead.config import preset
from talkinghead.errors import UserError
from talkinghead.models import build_models


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: threads only add contention on a shared machine (see test_models)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny():
    return preset.load("tiny")


def _models(config, seed):
    torch.manual_seed(seed)
    models = build_models(config.model)
    for model in models:
        model.eval()
    return models


def _outputs(models, config):
    gen = torch.Generator().manual_seed(7)
    size, dim = config.model.image_size, config.model.embedding_dim
    frames = torch.rand(2, 3, size, size, generator=gen) * 2 - 1
    landmarks = torch.rand(2, 3, size, size, generator=gen) * 2 - 1
    condition = torch.randn(2, dim, generator=gen)
    with torch.no_grad():
        embedding = models.embedder(frames, landmarks)
        fake = models.generator(landmarks, models.generator.project(embedding))
        score = models.discriminator(fake, landmarks, models.discriminator.condition(condition))
    return embedding, fake, score.score


def _saved(tmp_path, tiny, seed=0, **kwargs):
    models = _models(tiny, seed)
    path = tmp_path / "weights.safetensors"
    checkpoint.save_weights(path, models._asdict(), tiny, {"step": 12}, **kwargs)
    return path, models


def test_round_trip_gives_identical_outputs_and_keys(tmp_path, tiny):
    path, saved = _saved(tmp_path, tiny)
    loaded = _models(tiny, seed=1)  # different initial weights and power-iteration vectors
    info = checkpoint.load_weights(path, loaded._asdict(), expected_config=tiny)
    for a, b in zip(_outputs(saved, tiny), _outputs(loaded, tiny)):
        assert torch.equal(a, b)
    # Spectral-norm parametrisation keys (and u, v) survive as they are.
    keys = set(checkpoint.read_state_dict(path))
    assert "generator.output_conv.parametrizations.weight.original" in keys
    assert "generator.output_conv.parametrizations.weight.0._u" in keys
    assert info.model_config == tiny.model and info.config_type == "Preset"
    assert info.config["prep"]["crop_size"] == 64 and info.extra == {"step": 12}
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]  # no temp files left


def test_round_trip_resumes_training_bit_exactly(tmp_path, tiny):
    """u and v are saved, so a train-mode forward after loading matches the original."""
    path, saved = _saved(tmp_path, tiny)
    loaded = _models(tiny, seed=1)
    checkpoint.load_weights(path, loaded._asdict())
    for model in (*saved, *loaded):
        model.train()
    for a, b in zip(_outputs(saved, tiny), _outputs(loaded, tiny)):
        assert torch.equal(a, b)


def test_half_export_is_smaller_and_loads_as_float(tmp_path, tiny):
    full, saved = _saved(tmp_path, tiny)
    half = tmp_path / "half.safetensors"
    checkpoint.save_weights(half, saved._asdict(), tiny.model, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = _models(tiny, seed=1)
    info = checkpoint.load_weights(half, loaded._asdict(), expected_config=tiny)
    assert info.dtype == "float16" and info.config_type == "ModelConfig"
    assert all(p.dtype == torch.float32 for m in loaded for p in m.parameters())
    for a, b in zip(_outputs(saved, tiny), _outputs(loaded, tiny)):
        torch.testing.assert_close(a, b, atol=0.02, rtol=0.02)


def test_other_preset_fails_with_one_line_naming_the_field(tmp_path, tiny):
    path, _ = _saved(tmp_path, tiny)
    small = preset.load("small-128")
    models = build_models(small.model)
    with pytest.raises(UserError) as error:
        checkpoint.load_weights(path, models._asdict(), expected_config=small)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    assert "model.image_size is 64 in the file, 128 expected" in message
    # Without an expected config the layouts still disagree, also on one line.
    with pytest.raises(UserError, match="does not match the file: missing keys") as error:
        checkpoint.load_weights(path, {"generator": models.generator})
    assert "\n" not in str(error.value)


def test_missing_and_unexpected_keys_are_named(tmp_path, tiny):
    models = _models(tiny, seed=0)
    state = {f"generator.{k}": v for k, v in models.generator.state_dict().items()}
    del state["generator.output_conv.bias"]
    state["generator.bogus.weight"] = torch.zeros(3)
    path = tmp_path / "broken.safetensors"
    checkpoint.save_weights(path, state, tiny)
    with pytest.raises(UserError) as error:
        checkpoint.load_weights(path, {"generator": models.generator})
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    assert "missing keys generator.output_conv.bias" in message
    assert "unexpected keys generator.bogus.weight" in message


def test_modules_not_asked_for_are_left_alone_and_absent_ones_named(tmp_path, tiny):
    models = _models(tiny, seed=0)
    path = tmp_path / "eg.safetensors"
    eg_only = {"embedder": models.embedder, "generator": models.generator}
    checkpoint.save_weights(path, eg_only, tiny)
    checkpoint.load_weights(path, {"generator": models.generator})
    with pytest.raises(UserError, match="no weights for 'discriminator'"):
        checkpoint.load_weights(path, {"discriminator": models.discriminator})


def test_foreign_and_damaged_files_are_user_errors(tmp_path, tiny):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(UserError, match="not a talkinghead weights file"):
        checkpoint.read_info(foreign)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x00" * 32)
    with pytest.raises(UserError, match="not a readable safetensors file"):
        checkpoint.read_info(damaged)
    with pytest.raises(UserError, match="no such weights file"):
        checkpoint.read_info(tmp_path / "absent.safetensors")


def test_training_state_round_trip_with_weights_only(tmp_path, tiny):
    models = _models(tiny, seed=0)
    optimizer = torch.optim.Adam(models.generator.parameters(), lr=5e-5, betas=(0.0, 0.999))
    generator = models.generator.train()
    generator(torch.zeros(1, 3, 64, 64), generator.neutral_psi()[None]).sum().backward()
    optimizer.step()
    state = {"step": 3, "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}
    path = tmp_path / "state.pt"
    checkpoint.save_training_state(path, state)
    loaded = checkpoint.load_training_state(path)
    assert loaded["step"] == 3 and torch.equal(loaded["rng"], state["rng"])
    restored = torch.optim.Adam(models.generator.parameters(), lr=1.0)
    restored.load_state_dict(loaded["optimizer"])
    assert restored.param_groups[0]["lr"] == 5e-5


def test_training_state_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"object": _Unsafe()}, path)
    with pytest.raises(UserError, match="cannot load training state") as error:
        checkpoint.load_training_state(path)
    assert "\n" not in str(error.value)


class _Unsafe:
    """An arbitrary class: ``weights_only=True`` must refuse to unpickle it."""
