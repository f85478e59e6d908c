"""Invisible watermark in the pixels: a keyed, tiled, band-limited luma pattern that turns.

Marking adds a pattern to the luma of every frame. The pattern repeats with a period of ``tile``
pixels and has energy only at wavelengths ``min_wavelength``..``max_wavelength``: short enough
for many independent frequencies in a 128 px frame, long enough to survive H.264 at CRF 28,
JPEG 75 and a halving of a 128 px video. Its phases come from ``key``; every bin's phase turns
by one full cycle every ``period`` seconds (frame ``i`` at ``fps`` has phase 2 pi i / fps /
period), so the pattern drifts slowly and its energy, hence the PSNR, is the same in every
frame. The payload id (10 bits) is the pattern's cyclic offset: it costs no detection power but
is lost when the picture is cropped.

Why it turns: in a talking-head video the face and background hardly change, so a fixed pattern
competes, in every frame alike, with the same picture content, and averaging frames does not help
(a 128 px video halved to 64 px was not detectable that way: measured). Demodulating the frames
at the known rate cancels whatever is still and keeps the turning pattern, so a video is checked
against its own motion, not against the face. A single picture is checked as it is.

Why not a library: ``invisible-watermark`` (DWT-DCT) needs >= 256 px pictures, takes 13-29 ms
per 256 px frame and lost its payload after a 10% crop when we measured it.

Detection (blind, no original needed):
1. each frame's luma is high-passed and divided by its local energy, so flat regions (where the
   pattern dominates) count and edges (where the face dominates) do not;
2. two pooled pictures: the plain mean of the frames (the vote for a single picture or a frozen
   mark) and the frames demodulated at the pattern's rate (a complex picture; still content
   cancels), with the frame times taken from the file's fps;
3. for each scale on a geometric grid each pooled picture is resized back to the marking scale
   and folded modulo the tile (crops only shift the period, folding keeps it). At that scale only
   the key's bins that still exist in the checked file are used (observed wavelength at least
   ``min_observed_wavelength``);
4. at every cyclic shift and every one of ``phase_steps`` phases the folded tile's phases are
   compared with the key's, bin by bin. For an unmarked picture the key's phases are independent
   of the picture's, so each bin adds ``cos(uniform)``: the score's distribution under "not
   marked" is known exactly, and a Chernoff bound on its tail times the number of tests (scales,
   shifts, phases, pooled pictures) bounds the false-alarm rate of the whole file.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)  # BT.601, as H.264/JPEG in these files
POOLS = ("still", "demodulated")


@dataclass(frozen=True)
class WatermarkConfig:
    key: str = "talkinghead/synthetic/v1"  # public: anyone may check, as with C2PA
    tile: int = 128  # pattern period (px at the marking scale)
    min_wavelength: float = 3.5  # px; the finest bins carry single JPEG frames
    max_wavelength: float = 16.0  # px; the coarse ones survive halving; longer is face shading
    spectral_tilt: float = 0.85  # bin amplitude ~ frequency^-tilt (1: equal energy per octave)
    strength: float = 2.5  # rms luma change in 8-bit levels: PSNR >= 40.1 dB
    period: float = 0.25  # seconds per turn of the phase: faster than head motion, slower
    # than 15 fps can no longer follow (4 Hz < 7.5 Hz)
    id_step: int = 4  # offsets on a 4 px grid: resampling moves the peak by <= 1 px
    min_scale: float = 0.4  # search range of (observed size / marked size)
    max_scale: float = 2.0
    scale_ratio: float = 1.02  # grid step: keeps misregistration < 1/4 wavelength in `window`
    phase_steps: int = 16  # phases tried: the worst costs cos(pi / 16) = 2% of the score
    window: int = 256  # px at marking scale: central region analysed
    highpass_sigma: float = 2.0  # detector's local normalisation (px, observed scale)
    energy_sigma: float = 1.5
    noise_floor: float = 0.5  # levels: below this local energy, pixels are not amplified
    min_observed_wavelength: float = 4.0  # px in the checked file: finer bins are not counted
    max_false_alarm: float = 1e-5  # per file, union bound over every test: sets the threshold

    @property
    def num_ids(self) -> int:
        return (self.tile // self.id_step) ** 2


@dataclass(frozen=True)
class Detection:
    """The watermark decision for one picture or video."""

    marked: bool
    confidence: float  # 1 - false_alarm
    score: float  # z-like: ~N(0,1) per test when unmarked
    threshold: float  # the score this test needed (it depends on the bins counted)
    false_alarm: float  # upper bound on P(a test scores this high | not marked), all counted
    payload_id: int | None  # the pattern's offset; wrong if the picture was cropped
    scale: float  # observed size / marked size
    num_frames: int
    pool: str = "still"  # which pooled picture decided: still | demodulated

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class _Pattern:
    """The key's frequency bins and phases, and the pattern tiles built from them."""

    def __init__(self, config: WatermarkConfig):
        size = config.tile
        freq = np.fft.fftfreq(size) * size
        fx, fy = np.meshgrid(freq, freq, indexing="xy")
        radius = np.hypot(fx, fy)
        # One bin of each conjugate pair: the tile is real.
        half_plane = (fy > 0) | ((fy == 0) & (fx > 0))
        band = half_plane & (radius >= size / config.max_wavelength)
        band &= radius <= size / config.min_wavelength
        self.rows, self.cols = np.nonzero(band)
        self.wavelengths = size / radius[self.rows, self.cols]
        seed = int.from_bytes(hashlib.sha256(config.key.encode()).digest()[:8], "little")
        phases = np.random.default_rng(seed).uniform(0, 2 * np.pi, len(self.rows))
        self.reference = np.exp(1j * phases)
        half = np.zeros((size, size), complex)
        # Amplitude radius^-tilt: tilt 1 gives each octave the same energy, so the coarse bins
        # that survive halving are not outnumbered by the fine ones that survive JPEG.
        amplitude = radius[self.rows, self.cols] ** -config.spectral_tilt
        half[self.rows, self.cols] = self.reference * amplitude
        # With h = ifft2(half), the real pattern at phase p is 2 Re(h e^{ip}) =
        # cos(p) * tile - sin(p) * quadrature. The two are orthogonal with the same rms, so
        # every phase has the same energy.
        complex_tile = np.fft.ifft2(half)
        rms = np.real(complex_tile).std()
        self.tile = (np.real(complex_tile) / rms).astype(np.float32)
        self.quadrature = (np.imag(complex_tile) / rms).astype(np.float32)

    @property
    def num_bins(self) -> int:
        return len(self.rows)


@functools.lru_cache(maxsize=4)
def _pattern(config: WatermarkConfig) -> _Pattern:
    return _Pattern(config)


def id_offset(payload_id: int, config: WatermarkConfig) -> tuple[int, int]:
    """(dy, dx) cyclic offset of the pattern that encodes ``payload_id``."""
    if not 0 <= payload_id < config.num_ids:
        raise ValueError(f"payload_id must be in [0, {config.num_ids}), got {payload_id}")
    per_row = config.tile // config.id_step
    return (payload_id // per_row) * config.id_step, (payload_id % per_row) * config.id_step


class Marker:
    """Adds the watermark to RGB uint8 frames [H,W,3]; a no-op when ``enabled`` is False.

    Frames are numbered in the order they are marked unless ``mark_frame(frame, index)`` gives
    the number; ``fps`` converts numbers to the times the pattern turns with.
    """

    def __init__(
        self,
        payload_id: int = 0,
        enabled: bool = True,
        config: WatermarkConfig | None = None,
        fps: float = 30.0,
    ):
        self.config = config or WatermarkConfig()
        self.payload_id, self.enabled, self.fps = payload_id, enabled, fps
        self._offset = id_offset(payload_id, self.config)
        self._tiles: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._next_index = 0

    def _full_tiles(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        key = (height, width)
        if key not in self._tiles:
            pattern = _pattern(self.config)
            reps = (-(-height // self.config.tile), -(-width // self.config.tile))
            self._tiles[key] = tuple(
                np.tile(np.roll(t, self._offset, axis=(0, 1)), reps)[:height, :width]
                * self.config.strength
                for t in (pattern.tile, pattern.quadrature)
            )
        return self._tiles[key]

    def phase(self, index: int) -> float:
        return 2 * math.pi * index / (self.fps * self.config.period)

    def delta(self, height: int, width: int, index: int = 0) -> np.ndarray:
        """The integer luma change [H,W] int16 for frame ``index`` of this size."""
        tile, quadrature = self._full_tiles(height, width)
        phase = self.phase(index)
        return np.rint(math.cos(phase) * tile - math.sin(phase) * quadrature).astype(np.int16)

    def mark_frame(self, frame: np.ndarray, index: int | None = None) -> np.ndarray:
        """The marked copy of ``frame`` (the same luma change in R, G and B: chroma untouched)."""
        if not self.enabled:
            return frame
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"expected an RGB uint8 frame [H,W,3], got {frame.dtype} {frame.shape}"
            )
        if index is None:
            index, self._next_index = self._next_index, self._next_index + 1
        delta = self.delta(*frame.shape[:2], index)[..., None]
        return np.clip(frame + delta, 0, 255).astype(np.uint8)


def _gaussian(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N,1,H,W] with reflected borders."""
    radius = max(1, int(3 * sigma + 0.5))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    pad_x, pad_y = (radius, radius, 0, 0), (0, 0, radius, radius)
    image = F.conv2d(F.pad(image, pad_x, mode="reflect"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(image, pad_y, mode="reflect"), kernel.view(1, 1, -1, 1))


def normalised_luma(frames: np.ndarray, config: WatermarkConfig) -> torch.Tensor:
    """High-passed luma divided by its local rms: [N,1,H,W] float32, ~unit variance."""
    rgb = torch.from_numpy(np.ascontiguousarray(frames)).float()
    luma = (rgb @ torch.tensor(LUMA)).unsqueeze(1)
    if min(luma.shape[-2:]) <= 3 * config.highpass_sigma + 1:
        return torch.zeros_like(luma)
    highpass = luma - _gaussian(luma, config.highpass_sigma)
    energy = _gaussian(highpass * highpass, config.energy_sigma)
    return highpass / torch.sqrt(energy + config.noise_floor**2)


def _fold(image: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over all tiles of ``image`` [..., H, W] taken modulo ``size`` (partial tiles count)."""
    height, width = image.shape[-2:]
    pad = (0, -width % size, 0, -height % size)
    total = F.pad(image - image.mean((-2, -1), keepdim=True), pad)
    count = F.pad(torch.ones_like(image), pad)
    rows, cols = total.shape[-2] // size, total.shape[-1] // size
    shape = (*total.shape[:-2], rows, size, cols, size)
    total = total.reshape(shape).sum((-4, -2))
    count = count.reshape(shape).sum((-4, -2))
    return total / count.clamp(min=1)


def scale_grid(config: WatermarkConfig) -> np.ndarray:
    """Powers of ``scale_ratio`` within the range: 1 (untouched) and ~1/2 are on the grid."""
    step = math.log(config.scale_ratio)
    first = math.ceil(math.log(config.min_scale) / step)
    last = math.floor(math.log(config.max_scale) / step)
    return config.scale_ratio ** np.arange(first, last + 1, dtype=float)


def _score_map(spectrum: np.ndarray, pattern: _Pattern, keep: np.ndarray, phase_steps: int):
    """The best phase's agreement with the key at every cyclic shift, over the bins ``keep`` of
    ``spectrum`` (the folded tile's FFT), scaled to unit variance under H0."""
    size = spectrum.shape[0]
    rows, cols = pattern.rows[keep], pattern.cols[keep]
    bins = spectrum[rows, cols]
    magnitude = np.abs(bins)
    phasors = np.where(magnitude > 1e-9, bins / np.maximum(magnitude, 1e-9), 0)
    product = np.zeros((size, size), complex)
    product[rows, cols] = phasors * np.conj(pattern.reference[keep])
    # agreement(shift, p) = Re(e^{-ip} c(shift)): the best of the tried phases p.
    c = np.fft.ifft2(product) * size * size
    step = 2 * math.pi / phase_steps
    offset = np.angle(c) - step * np.round(np.angle(c) / step)
    return np.abs(c) * np.cos(offset) / math.sqrt(keep.sum() / 2)


def cos_sum_tail(score: float, num_terms: int) -> float:
    """Chernoff bound on P(sum of ``num_terms`` cos(uniform) >= score * sqrt(num_terms / 2)).

    E exp(l cos U) = I0(l), so P(S >= t) <= min_l I0(l)^n exp(-l t).
    """
    if score <= 0 or num_terms <= 0:
        return 1.0
    total = score * math.sqrt(num_terms / 2)
    lam = np.linspace(1e-3, 20, 4000)
    log_bound = num_terms * np.log(np.i0(lam)) - lam * total
    return float(min(1.0, np.exp(log_bound.min())))


def num_tests(config: WatermarkConfig, num_pools: int = len(POOLS)) -> int:
    """Every (pooled picture, scale, shift, phase) the detector tries: the union bound's factor.
    A single picture has one pooled picture (nothing to demodulate)."""
    return num_pools * len(scale_grid(config)) * config.tile**2 * config.phase_steps


def false_alarm_bound(
    score: float, config: WatermarkConfig, num_terms: int | None = None, num_pools: int = len(POOLS)
) -> float:
    """Union bound over every test, for a picture independent of the key: P(some test reaches
    this tail) when the best test scored ``score`` over ``num_terms`` bins (default: all)."""
    num_terms = _pattern(config).num_bins if num_terms is None else num_terms
    return min(1.0, num_tests(config, num_pools) * cos_sum_tail(score, num_terms))


def score_threshold(
    config: WatermarkConfig, num_terms: int | None = None, num_pools: int = len(POOLS)
) -> float:
    """The smallest score over ``num_terms`` bins whose false-alarm bound is within budget."""
    num_terms = _pattern(config).num_bins if num_terms is None else num_terms
    return _threshold(config, num_terms, num_pools)


@functools.lru_cache(maxsize=256)
def _threshold(config: WatermarkConfig, num_terms: int, num_pools: int) -> float:
    low, high = 0.0, 40.0
    for _ in range(50):
        mid = (low + high) / 2
        if false_alarm_bound(mid, config, num_terms, num_pools) > config.max_false_alarm:
            low = mid
        else:
            high = mid
    return high


def pooled_luma(
    frames: Iterable[np.ndarray], config: WatermarkConfig, fps: float = 30.0
) -> tuple[torch.Tensor, int]:
    """The pooled pictures [3,H,W]: the mean normalised luma (the vote of a still mark), then the
    real and imaginary parts of the frames demodulated at the pattern's rate (weights
    e^{-i w t} less their mean, so still content cancels); and the number of frames.

    (A Hann window on the weights, against leakage from slow motion, lowered the scores of
    48-frame videos: measured, so the weights are flat.)"""
    sums, weight_sums, count, chunk = None, np.zeros(3), 0, []
    omega = 2 * math.pi / (fps * config.period)

    def flush():
        nonlocal sums
        luma = normalised_luma(np.stack(chunk), config)[:, 0]
        index = np.arange(count - len(chunk), count)
        weights = np.stack([np.ones(len(chunk)), np.cos(omega * index), -np.sin(omega * index)])
        weight_sums[:] += weights.sum(1)
        part = torch.einsum("wn,nhv->whv", torch.from_numpy(weights).float(), luma)
        sums = part if sums is None else sums + part
        chunk.clear()

    for frame in frames:
        if chunk and frame.shape != chunk[0].shape:
            raise ValueError(f"frame size changed from {chunk[0].shape} to {frame.shape}")
        chunk.append(frame)
        count += 1
        if len(chunk) == 16:
            flush()
    if chunk:
        flush()
    if sums is None:
        raise ValueError("no frames to check")
    mean = sums[0] / count
    # sum_n (w_n - mean(w)) L_n = sum_n w_n L_n - mean(w) * sum_n L_n
    offsets = torch.from_numpy(weight_sums[1:] / count).float()[:, None, None]
    return torch.cat([mean[None], (sums[1:] - offsets * sums[0]) / count]), count


def detect_frames(
    frames: Iterable[np.ndarray], config: WatermarkConfig | None = None, fps: float = 30.0
) -> Detection:
    """Search pooled pictures, scales, shifts and phases for the pattern in RGB uint8 frames of
    one size, shown at ``fps``. The test with the smallest false-alarm bound decides."""
    config = config or WatermarkConfig()
    pooled, num_frames = pooled_luma(frames, config, fps)
    pattern = _pattern(config)
    num_pools = len(POOLS) if num_frames > 1 else 1  # one picture has nothing to demodulate
    best = None  # (false alarm, -score, score, bins, scale, shift, origin, pool)
    height, width = pooled.shape[-2:]
    for scale in scale_grid(config):
        keep = pattern.wavelengths * scale >= config.min_observed_wavelength
        if keep.sum() < 16:
            continue
        # The central window, resized back to the marking scale.
        crop_h = min(height, round(config.window * scale))
        crop_w = min(width, round(config.window * scale))
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        window = pooled[:, top : top + crop_h, left : left + crop_w]
        size = (max(8, round(crop_h / scale)), max(8, round(crop_w / scale)))
        resized = F.interpolate(
            window[None], size=size, mode="bilinear", antialias=True, align_corners=False
        )[0]
        spectra = np.fft.fft2(_fold(resized, config.tile).numpy())
        pools = [spectra[0], spectra[1] + 1j * spectra[2]][:num_pools]
        for pool, spectrum in zip(POOLS, pools):
            scores = _score_map(spectrum, pattern, keep, config.phase_steps)
            index = int(np.argmax(scores))
            score, terms = float(scores.flat[index]), int(keep.sum())
            false_alarm = false_alarm_bound(score, config, terms, num_pools)
            candidate = (false_alarm, -score)
            if best is None or candidate < best[:2]:
                origin = (top * size[0] / crop_h, left * size[1] / crop_w)
                shift = divmod(index, config.tile)
                best = (*candidate, score, terms, float(scale), shift, origin, pool)
    if best is None:
        raise ValueError(f"picture too small to check ({height}x{width})")
    false_alarm, _, score, terms, scale, shift, origin, pool = best
    marked = false_alarm <= config.max_false_alarm
    return Detection(
        marked=marked,
        confidence=1.0 - false_alarm,
        score=score,
        threshold=score_threshold(config, terms, num_pools),
        false_alarm=false_alarm,
        payload_id=_payload_id(shift, origin, config) if marked else None,
        scale=scale,
        num_frames=num_frames,
        pool=pool,
    )


def _payload_id(shift: tuple[int, int], origin: tuple[float, float], config) -> int:
    """The id whose offset best explains the peak (window origin added back)."""
    per_row = config.tile // config.id_step
    dy, dx = (round((s + o) / config.id_step) % per_row for s, o in zip(shift, origin))
    return dy * per_row + dx
