"""Evaluation: metric identities on real frames, agreement with scikit-image, the temporal
measures and the bars on known numbers, the aggregate rows, full runs (function and CLI)."""

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
from talkinghead.cli import main
from talkinghead.config import preset as presets
from talkinghead.evaluation import baselines, protocol, temporal
from talkinghead.evaluation.bars import check_bars
from talkinghead.evaluation.protocol import EvalConfig, evaluate
from talkinghead.evaluation.report import (
    format_results,
    format_table,
    frames_grid,
    summarise,
    write_report,
)
from talkinghead.evaluation.scoring import Scorer, find_landmarks, landmark_error, psnr, ssim
from talkinghead.inference.faces import FaceCrop
from talkinghead.inference.pipeline import TalkingHead
from talkinghead.landmarks import detect, motion
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
    config = EvalConfig(shots=(1, 4), num_holdout=4, finetune_steps=2, num_consecutive=8)
    people: dict = {}
    samples: dict = {}
    rows, timings = evaluate(
        head, [assets.sample_clip_path()], config, scorer, False, people, samples
    )
    summary = summarise(rows)
    methods = {(r["method"], r["T"]) for r in summary}
    for shots in (1, 4):
        for method in ("nearest shot", "warp", "model (feed-forward)", "model (fine-tuned)"):
            assert (method, shots) in methods
    for row in summary:
        assert 0 <= row["ssim"] <= 1 and row["psnr"] > 0 and -1 <= row["csim"] <= 1
        assert row["identity_distance"] > 0 and 0 <= row["landmark_misses"] <= 1
        assert {"jitter", "driver_jitter", "jitter_ratio", "mouth_correlation"} <= set(row)
    warp = next(r for r in summary if r["method"] == "warp" and r["T"] == 4)
    # 64 px crops are at the edge of what dlib detects; some frames are found.
    assert warp["landmark_error"] is not None and warp["landmark_misses"] < 1.0
    assert ("carphone_pristine", 4, True) in people
    assert set(timings["carphone_pristine"]) >= {"fine-tune", "render", "metrics", "baselines"}
    # The frames picture: a header, a name strip, then landmarks | warp | ours | real rows.
    assert samples["carphone_pristine"].label == "fine-tuned, T=4"
    grid = frames_grid(samples)
    assert grid.shape == (28 + 14 + 3 * 64, 4 * 64, 3) and grid.dtype == np.uint8
    mark = OutputMark.new(head.model_hash, "evaluation grid")
    paths = write_report(tmp_path / "report", rows, timings, "tiny", grid, mark)
    labelled = verify_file(paths["frames"])  # generated frames: labelled; the chart is not
    assert labelled.manifest.signature_ok and labelled.tags["motion_mode"] == "evaluation grid"
    assert verify_file(paths["plot"]).tags is None
    saved = json.loads(paths["json"].read_text())
    assert saved["summary"] == json.loads(json.dumps(summary))
    report = paths["markdown"].read_text()
    assert "| warp |" in report and "](frames.png)" in report
    assert Image.open(paths["plot"]).size[0] > 300
    assert "identity_distance" in format_table(summary)
    # Without a grid no frames.png is written, and the report does not link one.
    unlinked = write_report(tmp_path / "plain", rows, timings, "tiny")
    assert "frames" not in unlinked and "frames.png" not in unlinked["markdown"].read_text()


def test_eval_command_writes_bars_aggregates_cross_rows_and_frames(
    bundle, short_videos, tmp_path, capsys
):
    """Two real videos (parts of the sample clip), the tiny model, a few frames: end to end."""
    out = tmp_path / "eval"
    videos = [str(short_videos / "part0.mp4"), str(short_videos / "part3.mp4")]
    options = ["--shots", "1", "4", "--holdout", "3", "--consecutive", "6"]
    options += ["--finetune-steps", "1", "--device", "cpu", "--no-progress"]
    assert main(["eval", *videos, "--model", str(bundle), *options, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Bars (issue 14" in printed and "Cross-person" in printed
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) >= {"model", "bars", "summary", "rows", "timings"}
    people = {r["video"] for r in saved["summary"] if r["protocol"] == "self"}
    assert people == {"part0", "part3", "all"}
    cross = [r for r in saved["summary"] if r["protocol"] == "cross"]
    assert {r["video"] for r in cross} == {"part0 <- part3", "part3 <- part0", "all"}
    for key in ("same_person_fraction", "driver_distance", "mouth_correlation", "jitter_ratio"):
        assert all(key in r for r in cross)
    assert all(0 <= r["same_person_fraction"] <= 1 for r in cross)
    names = [b["bar"] for b in saved["bars"]]
    assert len(names) == 14 and any("jitter" in n for n in names)
    assert all(b["passed"] in (True, False, None) for b in saved["bars"])
    labelled = verify_file(out / "frames.png")
    assert labelled.tags["motion_mode"] == "evaluation grid"
    assert Image.open(out / "frames.png").size == (4 * 64, 28 + 2 * (14 + 3 * 64))
    assert "](frames.png)" in (out / "report.md").read_text()


def _face_series(num_frames: int, opening: np.ndarray | None = None) -> np.ndarray:
    """A synthetic landmark series [N,68,2]: eyes 40 px apart, the inner lips ``opening`` px
    apart (0 if None)."""
    base = np.zeros((68, 2))
    base[:, 0] = np.linspace(0, 60, 68)
    base[36], base[45] = (10.0, 20.0), (50.0, 20.0)  # inter-ocular distance 40
    series = np.repeat(base[None], num_frames, axis=0)
    if opening is not None:
        for upper, lower in temporal.INNER_LIPS:
            series[:, upper] = (30.0, 50.0)
            series[:, lower, 0], series[:, lower, 1] = 30.0, 50.0 + opening
    return series


def test_jitter_on_known_series():
    still = _face_series(10)
    assert temporal.landmark_jitter(still) == 0.0
    drift = still + np.arange(10)[:, None, None] * np.array([1.5, -0.5])  # steady motion
    assert temporal.landmark_jitter(drift) == pytest.approx(0.0, abs=1e-12)
    # Every point moves +-1 px in x from frame to frame: second difference 4 px, over 40 px.
    shaking = still + ((-1.0) ** np.arange(10))[:, None, None] * np.array([1.0, 0.0])
    assert temporal.landmark_jitter(shaking) == pytest.approx(0.1)
    # A frame without a face removes the three triples around it, not the series.
    missed = shaking.copy()
    missed[5] = np.nan
    assert temporal.landmark_jitter(missed) == pytest.approx(0.1)
    assert temporal.landmark_jitter(shaking[:2]) is None
    assert temporal.landmark_jitter(np.full((5, 68, 2), np.nan)) is None
    scores = temporal.motion_scores(shaking, shaking / 2 + 3)  # half-size copy: same shaking
    assert scores["jitter_ratio"] == pytest.approx(1.0)
    assert temporal.ratio(0.2, 0.1) == pytest.approx(2.0) and temporal.ratio(0.2, 0.0) is None


def test_mouth_opening_and_its_correlation_on_known_series():
    speech = 4 + 3 * np.sin(np.linspace(0, 6, 24))
    driver, result = _face_series(24, speech), _face_series(24, 2 * speech + 1)
    np.testing.assert_allclose(temporal.mouth_opening(driver), speech / 40)
    assert temporal.correlation(temporal.mouth_opening(result), speech) == pytest.approx(1.0)
    assert temporal.correlation(-speech, speech) == pytest.approx(-1.0)
    assert temporal.motion_scores(result, driver)["mouth_correlation"] == pytest.approx(1.0)
    assert temporal.correlation(np.ones(24), speech) is None  # a mouth that never moves
    gaps = speech.copy()
    gaps[[3, 9]] = np.nan  # frames without a face are left out
    assert temporal.correlation(gaps, speech) == pytest.approx(1.0)
    # A driver who does not speak (opening varies by 0.005 inter-ocular distances): not measured.
    quiet = _face_series(24, 4 + 0.2 * np.sin(np.linspace(0, 6, 24)))
    assert temporal.motion_scores(quiet, quiet)["mouth_correlation"] is None


def test_the_run_is_the_window_where_the_mouth_moves_most():
    opening = np.r_[np.full(20, 4.0), 4 + 3 * np.sin(np.arange(10))]  # speaks from frame 20
    blank = np.zeros((8, 8, 3), np.uint8)
    crops = [FaceCrop(blank, lm, np.zeros(4), 1) for lm in _face_series(30, opening)]
    video = protocol.TestVideo("still, then speaking", crops)  # not a test class: by module
    ids = {id(c): i for i, c in enumerate(crops)}
    run = [ids[id(c)] for c in video.run(6, 1 / 3)]  # the second part: frames 10-29
    assert run == list(range(run[0], run[0] + 6)) and run[0] >= 20
    assert [ids[id(c)] for c in video.run(40, 1 / 3)] == list(range(10, 30))  # all there is


def test_relative_motion_starts_from_the_driver_frame_that_matches_the_mouth():
    """From an open-mouthed first driver frame onto a closed mouth, relative motion would cross
    the lips: the target's opening would fall as the driver's rises."""
    speech = np.r_[8.0, 5.0, 0.0, 2.0, 6.0, 9.0, 4.0, 1.0]
    driver, source = _face_series(8, speech), _face_series(1, np.zeros(1))[0]
    reference = protocol.matching_reference(source, driver)
    np.testing.assert_array_equal(reference, driver[2])  # the closed-mouth frame
    opening = temporal.mouth_opening(driver)
    for start, sign in ((driver[0], -1.0), (reference, 1.0)):
        targets = motion.retarget_relative(source, driver, start)
        correlation = temporal.correlation(temporal.mouth_opening(targets), opening)
        assert sign * correlation > 0.5


def test_motion_scores_of_real_frames(clip_frames):
    """The same real frames score a ratio of 1 and a correlation of 1; shuffled frames jitter."""
    run = find_landmarks(clip_frames[60:80])
    assert np.isfinite(run).all()
    same = temporal.motion_scores(run, run)
    assert same["jitter_ratio"] == pytest.approx(1.0) and same["jitter"] > 0
    assert same["mouth_correlation"] == pytest.approx(1.0)
    shuffled = run[np.random.default_rng(0).permutation(len(run))]
    assert temporal.motion_scores(shuffled, run)["jitter_ratio"] > 1.5


def _row(video, method, shots, protocol="self", **metrics):
    return {"video": video, "protocol": protocol, "method": method, "T": shots, **metrics}


def test_the_all_row_is_the_mean_of_the_people_rows():
    rows = [
        _row("a", "warp", 8, ssim=0.5, psnr=20.0, landmark_error=0.1),
        _row("b", "warp", 8, ssim=0.7, psnr=30.0, landmark_error=None),  # no face found
        _row("c", "warp", 8, ssim=0.9, psnr=25.0, landmark_error=0.3),
        _row("a", "warp", 1, ssim=0.1, psnr=10.0, landmark_error=0.2),
    ]
    summary = summarise(rows)
    assert [r["video"] for r in summary] == ["a", "a", "b", "c", "all", "all"]
    total = next(r for r in summary if r["video"] == "all" and r["T"] == 8)
    assert total["videos"] == 3
    assert total["ssim"] == pytest.approx(0.7) and total["psnr"] == pytest.approx(25.0)
    assert total["landmark_error"] == pytest.approx(0.2)  # the mean of the values there
    people = [r for r in summary if r["video"] != "all" and r["T"] == 8]
    for key in ("ssim", "psnr"):
        assert total[key] == pytest.approx(np.mean([r[key] for r in people]))
    assert "all" in format_table(summary)


OURS, FEED_FORWARD = "model (fine-tuned)", "model (feed-forward)"


def _bars_summary(changes: dict | None = None) -> list[dict]:
    """'all' rows that clear every bar; ``changes`` maps (method, T, protocol) to new values."""
    good = {"ssim": 0.8, "psnr": 27.0, "identity_distance": 0.3, "landmark_error": 0.04}
    good |= {"landmark_misses": 0.0, "jitter_ratio": 1.2}
    cross = {"same_person_fraction": 0.95, "identity_distance": 0.4, "driver_distance": 0.7}
    cross |= {"mouth_correlation": 0.8, "landmark_misses": 0.0}
    rows = [
        _row("all", "warp", 8, ssim=0.7, psnr=26.0, identity_distance=0.28, landmark_error=0.035),
        _row("all", OURS, 8, **good),
        _row("all", OURS, 1, **good | {"ssim": 0.6, "identity_distance": 0.4}),
        _row("all", FEED_FORWARD, 8, **good | {"ssim": 0.5, "identity_distance": 0.5}),
        _row("all", FEED_FORWARD, 1, **good | {"ssim": 0.4, "identity_distance": 0.55}),
        _row("all", OURS, 8, "cross", **cross),
    ]
    for where, values in (changes or {}).items():
        for row in rows:
            if (row["method"], row["T"], row["protocol"]) == where:
                row.update(values)
    return rows


def test_bars_pass_and_fail_on_given_numbers():
    bars = check_bars(_bars_summary())
    assert len(bars) == 14 and all(b["passed"] for b in bars), [b for b in bars if not b["passed"]]
    by_name = {b["bar"]: b for b in bars}
    assert by_name["landmark error at most 1.25x the warp's"]["threshold"] == pytest.approx(0.04375)
    plus = by_name["identity distance at most the warp's + 0.05"]
    assert plus["threshold"] == pytest.approx(0.33) and plus["T"] == 8

    failing = {
        (OURS, 8, "self"): {"ssim": 0.69, "landmark_error": 0.05, "identity_distance": 0.59},
        (FEED_FORWARD, 1, "self"): {"ssim": 0.51},
        (OURS, 8, "cross"): {"same_person_fraction": 0.85, "driver_distance": 0.3},
    }
    failing[(OURS, 8, "self")] |= {"landmark_misses": 0.06, "jitter_ratio": 1.6}
    failing[(OURS, 8, "cross")] |= {"mouth_correlation": 0.6}
    verdicts = {b["bar"]: b["passed"] for b in check_bars(_bars_summary(failing))}
    assert verdicts == {
        "SSIM above the warp's": False,
        "PSNR above the warp's": True,
        "landmark error at most 1.25x the warp's": False,  # 0.05 > 1.25 * 0.035
        "identity distance below 0.6": True,  # 0.59
        "identity distance at most the warp's + 0.05": False,  # 0.59 > 0.33
        "face found on at least 95% of frames": False,  # 94%
        "T=8 beats T=1 on ssim, feed-forward": False,  # 0.5 vs 0.51
        "T=8 beats T=1 on identity_distance, feed-forward": True,
        "T=8 beats T=1 on ssim, fine-tuned": True,
        "T=8 beats T=1 on identity_distance, fine-tuned": False,  # 0.59 vs 0.4
        "cross-person: identity distance to A below 0.6 on at least 90% of frames": False,
        "cross-person: identity distance to A below that to B": False,  # 0.4 vs 0.3
        "cross-person: mouth-opening correlation with the driver at least 0.7": False,
        "jitter at most 1.5x the driver's (consecutive frames)": False,
    }
    # One video (no cross rows) and no T = 1: those bars are not measured; a model on whose
    # frames dlib finds no face fails the landmark bar instead of skipping it.
    alone = [r for r in _bars_summary() if r["protocol"] == "self" and r["T"] == 8]
    alone[1] |= {"landmark_error": None, "landmark_misses": 1.0}
    verdicts = {b["bar"]: b["passed"] for b in check_bars(alone)}
    assert verdicts["landmark error at most 1.25x the warp's"] is False
    assert verdicts["T=8 beats T=1 on ssim, fine-tuned"] is None
    assert verdicts["cross-person: identity distance to A below that to B"] is None
    printed = format_results([r | {"video": "a"} for r in alone])  # one person's rows
    assert "not measured" in printed and "FAIL (no face found on any frame)" in printed


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
