"""Evaluation: metric identities on real frames, agreement with scikit-image, a full run."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from talkinghead import assets
from talkinghead.checkpoint import save_weights
from talkinghead.config import preset as presets
from talkinghead.evaluation import baselines
from talkinghead.evaluation.protocol import EvalConfig, evaluate
from talkinghead.evaluation.report import format_table, summarise, write_report
from talkinghead.evaluation.scoring import Scorer, landmark_error, psnr, ssim
from talkinghead.inference.pipeline import TalkingHead
from talkinghead.landmarks import detect
from talkinghead.models import build_models
from talkinghead.provenance import OutputMark, verify_file


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer()


def _jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def test_ssim_and_psnr_identities_and_agreement_with_skimage(clip_frames):
    a, b, degraded = clip_frames[0], clip_frames[10], _jpeg(clip_frames[0], 20)
    assert ssim(a[None], a[None]) == pytest.approx(1.0)
    assert psnr(a[None], a[None]) == float("inf")
    for x, y in ((a, b), (a, degraded)):
        reference = structural_similarity(
            x,
            y,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            channel_axis=-1,
            data_range=255,
        )
        assert ssim(x[None], y[None]) == pytest.approx(reference, abs=1e-6)
        assert psnr(x[None], y[None]) == pytest.approx(
            peak_signal_noise_ratio(x, y, data_range=255)
        )
    assert ssim(a[None], degraded[None]) > ssim(a[None], b[None])


def _face(image: np.ndarray) -> np.ndarray:
    return detect.predict_landmarks(image, detect.detect_faces(image)[0].box)


def test_identity_scores_separate_people(scorer, clip_frames, astronaut):
    frames = [clip_frames[0], clip_frames[60], astronaut]
    descriptors = [scorer.descriptors(f[None], _face(f)[None]) for f in frames]
    same = Scorer.identity_scores(descriptors[0], descriptors[1])
    other = Scorer.identity_scores(descriptors[0], descriptors[2])
    assert same["csim"] > other["csim"]
    assert same["identity_distance"] < 0.6 < other["identity_distance"]


def test_landmark_error_of_a_frame_with_itself_is_small(clip_frames):
    frames = clip_frames[[0, 50]]
    own = np.stack([_face(f) for f in frames])
    error, misses = landmark_error(frames, own)
    assert misses == 0 and error < 0.01
    swapped, _ = landmark_error(frames, own[::-1].copy())
    assert swapped > 5 * error


def test_baselines_pick_the_nearest_shot_and_warp_onto_targets(clip_frames):
    shots = clip_frames[[0, 60]]
    landmarks = np.stack([_face(f) for f in shots])
    assert baselines.nearest_shot(landmarks, landmarks[1] * 1.1 + 3) == 1  # scale/shift-free
    copied = baselines.copy_nearest(shots, landmarks, landmarks[[1, 0]])
    np.testing.assert_array_equal(copied, shots[[1, 0]])
    warped = baselines.warp_nearest(shots, landmarks, landmarks[[0]])
    assert np.abs(warped[0].astype(int) - shots[0]).mean() < 1.0  # identity warp


def test_full_eval_on_the_tiny_model_produces_every_column(tmp_path, scorer):
    preset = presets.load("tiny")
    torch.manual_seed(0)
    bundle = tmp_path / "tiny.safetensors"
    save_weights(bundle, dict(build_models(preset.model)._asdict()), preset, half=True)
    head = TalkingHead.from_checkpoint(bundle)
    config = EvalConfig(shots=(1, 4), num_holdout=4, finetune_steps=2)
    people: dict = {}
    rows, timings = evaluate(head, [assets.sample_clip_path()], config, scorer, False, people)
    summary = summarise(rows)
    methods = {(r["method"], r["T"]) for r in summary}
    for shots in (1, 4):
        for method in ("nearest shot", "warp", "model (feed-forward)", "model (fine-tuned)"):
            assert (method, shots) in methods
    for row in summary:
        assert 0 <= row["ssim"] <= 1 and row["psnr"] > 0 and -1 <= row["csim"] <= 1
        assert row["identity_distance"] > 0 and 0 <= row["landmark_misses"] <= 1
    warp = next(r for r in summary if r["method"] == "warp" and r["T"] == 4)
    # 64 px crops are at the edge of what dlib detects; some frames are found.
    assert warp["landmark_error"] is not None and warp["landmark_misses"] < 1.0
    assert ("carphone_pristine", 4, True) in people
    assert set(timings["carphone_pristine"]) >= {"fine-tune", "render", "metrics", "baselines"}
    grid, mark = np.zeros((8, 8, 3), np.uint8), OutputMark.new(head.model_hash, "evaluation grid")
    paths = write_report(tmp_path / "report", rows, timings, "tiny", grid, mark)
    labelled = verify_file(paths["frames"])  # generated frames: labelled; the chart is not
    assert labelled.manifest.signature_ok and labelled.tags["motion_mode"] == "evaluation grid"
    assert verify_file(paths["plot"]).tags is None
    saved = json.loads(paths["json"].read_text())
    assert saved["summary"] == json.loads(json.dumps(summary))
    assert "| warp |" in paths["markdown"].read_text().replace("| self ", "")
    assert Image.open(paths["plot"]).size[0] > 300
    assert "identity_distance" in format_table(summary)


def test_frechet_distance_identities():
    from talkinghead.evaluation.frechet import frechet_distance

    mu, sigma = np.zeros(3), np.diag([1.0, 2.0, 3.0])
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    # Diagonal covariances: |dmu|^2 + sum (sqrt(a) - sqrt(b))^2.
    other = np.diag([4.0, 2.0, 1.0])
    expected = 1.0 + (1 - 2) ** 2 + 0 + (np.sqrt(3) - 1) ** 2
    assert frechet_distance(mu, sigma, mu + [1, 0, 0], other) == pytest.approx(expected)


def test_fid_path_with_weights_in_the_standard_format(tmp_path, clip_frames, monkeypatch):
    from talkinghead.errors import UserError
    from talkinghead.evaluation.frechet import fid
    from talkinghead.pretrained.inception import FIDInception, load_fid_inception

    torch.manual_seed(0)
    network = FIDInception()
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(network.state_dict(), path)
    loaded = load_fid_inception(path)
    frames = clip_frames[[0, 30, 60]]
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(torch.zeros(1, 3, 64, 64)), network.eval()(torch.zeros(1, 3, 64, 64))
        )
    monkeypatch.setenv("TALKINGHEAD_WEIGHTS", str(tmp_path))
    from_folder = load_fid_inception()
    assert fid(frames, frames, from_folder) == pytest.approx(0.0, abs=1e-3)
    assert fid(frames, clip_frames[[90, 100, 110]][:, ::-1], from_folder) > 0
    state = network.state_dict()
    state.pop("Mixed_7c.branch_pool.conv.weight")
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(UserError, match=r"broken.pth: not the FID Inception weights"):
        load_fid_inception(tmp_path / "broken.pth")


def test_lpips_loads_the_standard_files_and_is_zero_for_identical_images(tmp_path, clip_frames):
    from talkinghead.data.episodes import to_tensor
    from talkinghead.errors import UserError
    from talkinghead.pretrained.lpips import LPIPS, LPIPS_CHANNELS, load_lpips

    torch.manual_seed(0)
    reference = LPIPS()
    # torchvision's VGG16 keys are features.N.*, exactly the trunk's own.
    torch.save(reference.trunk.state_dict(), tmp_path / "vgg16-397923af.pth")
    linear = {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(LPIPS_CHANNELS)
    }
    torch.save(linear, tmp_path / "vgg.pth")
    model = load_lpips(tmp_path / "vgg16-397923af.pth", tmp_path / "vgg.pth")
    x = to_tensor(clip_frames[[0, 40]][:, :64, :64])
    y = to_tensor(clip_frames[[80, 40]][:, :64, :64])
    with torch.no_grad():
        distances = model(x, y)
    assert distances[1] == pytest.approx(0.0, abs=1e-6) and distances[0] > 0
    linear.pop("lin4.model.1.weight")
    torch.save(linear, tmp_path / "bad.pth")
    with pytest.raises(UserError, match=r"bad.pth: not the LPIPS linear layers"):
        load_lpips(tmp_path / "vgg16-397923af.pth", tmp_path / "bad.pth")
