"""Every output marked as synthetic: animate (video and PNG frames), the CLI's flags and
``talkinghead verify``, and the web page's check, with the tiny model on real media.

The tiny model renders 64 px faces, below the size whose watermark survives H.264 (see
:mod:`talkinghead.provenance.watermark`), so the watermark checks paste the face back into the
512 px astronaut photo, as ``--paste-back`` does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from talkinghead import assets, video
from talkinghead.cli import main
from talkinghead.errors import UserError
from talkinghead.inference import jobs
from talkinghead.inference.render import AnimateOptions
from talkinghead.provenance import UNMARKED_WARNING, MarkingOptions, signing, verify_file
from talkinghead.web.app import DemoRunner, WebConfig

NUM_FRAMES = 12


@pytest.fixture(scope="module")
def driver(tmp_path_factory, clip_frames) -> Path:
    path = tmp_path_factory.mktemp("driver") / "driver.mp4"
    with video.VideoWriter(path, 25) as writer:
        for frame in clip_frames[:NUM_FRAMES]:
            writer.write(frame)
    return path


@pytest.fixture(scope="module")
def marked(head, person, driver, tmp_path_factory) -> jobs.AnimateReport:
    """An animate output with the default marking, its frames also written as PNGs."""
    folder = tmp_path_factory.mktemp("marked")
    options = AnimateOptions(mode="absolute", paste_back=True)
    return jobs.animate_file(
        head, person, driver, folder / "out.mp4", options, folder / "png", progress=False
    )


def test_animate_output_is_marked_in_pixels_tags_and_c2pa(head, marked):
    report = verify_file(marked.out)
    assert report.marked and report.watermark.marked
    assert report.manifest.signature_ok and report.manifest.synthetic
    for record in (report.manifest.record, report.tags):
        assert record["checkpoint_sha256"] == head.model_hash
        assert record["motion_mode"] == "absolute" and record["synthetic"] is True
    assert report.tags["watermark_id"] == report.watermark.payload_id
    assert video.read_tags(marked.out)["comment"].startswith("SYNTHETIC")
    assert any(note.startswith("provenance: tags and a C2PA manifest") for note in marked.notes)
    assert marked.times.seconds["mark"] > 0  # its own stage in the report
    pngs = sorted((marked.out.parent / "png").glob("frame-*.png"))
    assert len(pngs) == NUM_FRAMES
    still = verify_file(pngs[0])
    assert still.watermark.marked and still.manifest.signature_ok
    assert still.tags["checkpoint_sha256"] == head.model_hash


def test_marking_off_leaves_the_output_unmarked_with_a_warning(head, person, driver, tmp_path):
    out = tmp_path / "unmarked.mp4"
    options = AnimateOptions(paste_back=True)
    off = MarkingOptions(enabled=False)
    report = jobs.animate_file(
        head, person, driver, out, options, tmp_path / "png", progress=False, marking=off
    )
    assert UNMARKED_WARNING in report.notes and UNMARKED_WARNING in str(report)
    for path in (out, tmp_path / "png" / "frame-000000.png"):
        checked = verify_file(path)
        assert not checked.marked and checked.manifest is None and checked.tags is None


def test_cli_verify_exit_codes(marked, tmp_path, capsys):
    assert main(["verify", str(marked.out)]) == 1
    assert "MARKED as synthetic" in capsys.readouterr().out
    assert main(["verify", "--json", str(assets.astronaut_path())]) == 0
    assert '"marked": false' in capsys.readouterr().out
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n" * 20)
    result = subprocess.run(
        [sys.executable, "-m", "talkinghead.cli", "verify", str(marked.out), str(notes)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == ""  # no report when one file is bad
    assert result.stderr.strip().splitlines() == [
        f"talkinghead verify: error: {notes}: not a video or image file"
    ]


def test_cli_animate_marking_flags(bundle, driver, tmp_path, capsys):
    base = ["animate", "--model", str(bundle), "--source", str(assets.astronaut_path())]
    base += ["--driver", str(driver), "--no-progress", "--out"]
    out = tmp_path / "off.mp4"
    assert main([*base, str(out), "--no-watermark"]) == 0
    captured = capsys.readouterr()
    assert UNMARKED_WARNING in captured.err and not verify_file(out).marked
    # The user's certificate (here a generated one standing in for it) signs the manifest.
    chain, key = signing._generate_local_credentials()
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    out = tmp_path / "signed.mp4"
    cert = ["--c2pa-cert", str(tmp_path / "chain.pem")]
    assert main([*base, str(out), *cert, "--c2pa-key", str(tmp_path / "key.pem")]) == 0
    assert f"signed with {tmp_path / 'chain.pem'}" in capsys.readouterr().out
    assert verify_file(out).manifest.signature_ok
    # Half a certificate, or a missing file, is refused before any rendering.
    assert main([*base, str(tmp_path / "a.mp4"), *cert]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "talkinghead animate: error: give both --c2pa-cert and --c2pa-key, or neither"
    ]
    assert main([*base, str(tmp_path / "b.mp4"), *cert, "--c2pa-key", "missing.pem"]) == 2
    assert "missing.pem: no such file" in capsys.readouterr().err
    assert not list(tmp_path.glob("[ab].mp4"))


def test_web_results_are_marked_and_the_page_checks_files(bundle, driver, tmp_path):
    runner = DemoRunner(WebConfig(bundle), tmp_path / "out")
    result = runner.run([assets.astronaut_path()], driver, AnimateOptions(paste_back=True))
    report = runner.check(result.video)
    assert report.startswith(f"{result.video}: MARKED as synthetic")
    assert "watermark: DETECTED" in report and "signature valid" in report
    assert "provenance: tags and a C2PA manifest" in result.summary
    assert "no synthetic marking found" in runner.check(assets.astronaut_path())
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n" * 20)
    with pytest.raises(UserError, match=r"notes\.txt: not a video or image file"):
        runner.check(notes)
    with pytest.raises(UserError, match="give a video or picture"):
        runner.check(None)
