"""Loopable H.264 video clips for synthetic meetings, encoded once and cached.

A clip is real libx264 output (constrained baseline, Annex-B, SPS/PPS before every IDR) starting with an
IDR, with one full-white frame on the beep period; each `ClipParams` is encoded once per machine (an
in-process LRU in front of an on-disk cache under `<cache dir>/clips/`)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np

from rtms_protocol import Resolution
from rtmsflow.logs import get_logger
from rtmsflow.settings import default_cache_dir

log = get_logger(__name__)

# Bump when the picture or the encoder settings change: it is part of every cache key.
CLIP_FORMAT_VERSION = 2

# The sizes clips come in, by label ("720p"), from the one size table (`rtms_protocol.Resolution`).
# No 1440p clip: a QHD request plays 1080p (`emulator.source`).
RESOLUTIONS: dict[str, tuple[int, int]] = {
    r.label: r.size for r in (Resolution.SD, Resolution.HD, Resolution.FHD)
}

# Average bitrate per resolution (VBV-capped ABR): close to what Zoom sends for a camera, so
# load tests move realistic byte volumes.
_BITRATE_KBPS: dict[str, int] = {"360p": 600, "720p": 1200, "1080p": 2500}

# Luma of the flash frame: white in the limited range that H.264 streams use.
FLASH_LUMA = 235

ClipKind = Literal["camera", "screen"]


@dataclass(frozen=True, slots=True)
class ClipParams:
    """Everything that determines a clip's bytes (and so its cache key)."""

    kind: ClipKind
    resolution: str
    fps: int
    frame_count: int
    gop: int
    flash_index: int | None

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"unknown resolution {self.resolution!r}; use one of {sorted(RESOLUTIONS)}")
        if not 1 <= self.fps <= 60:
            raise ValueError(f"fps must be in 1..60, got {self.fps}")
        if self.frame_count < 1 or self.gop < 1:
            raise ValueError("frame_count and gop must be positive")
        if self.flash_index is not None and not 0 <= self.flash_index < self.frame_count:
            raise ValueError(f"flash_index {self.flash_index} outside the clip (0..{self.frame_count - 1})")

    def cache_key(self) -> str:
        """A file-name-safe digest of the parameters and the clip format version."""
        blob = json.dumps({"v": CLIP_FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return (
            f"{self.kind}-{self.resolution}-{self.fps}fps-" + hashlib.sha256(blob.encode()).hexdigest()[:16]
        )


@dataclass(frozen=True, slots=True)
class VideoClip:
    """An encoded loop: one Annex-B access unit per frame, frame 0 an IDR with SPS/PPS."""

    params: ClipParams
    width: int
    height: int
    frames: tuple[bytes, ...]
    keyframes: tuple[bool, ...]

    @property
    def frame_count(self) -> int:
        return len(self.frames)


# ---------------------------------------------------------------------------------------------
# Pictures (YUV 4:2:0 planes built with numpy; the content only has to move, be recognisable and
# cost a realistic number of bits)


class _Painter:
    """Draws frame `i` of a clip as one yuv420p array of shape (h * 3 / 2, w)."""

    def __init__(self, params: ClipParams) -> None:
        self.p = params
        self.w, self.h = RESOLUTIONS[params.resolution]
        w, h = self.w, self.h
        x = np.arange(w, dtype=np.float32)
        y = np.arange(h, dtype=np.float32)
        self._x, self._y = x, y
        # Fixed grain so a frame is never flat (flat frames cost nothing and are unrealistic).
        rng = np.random.default_rng(0xC11F)
        self._grain = rng.integers(-3, 4, size=(h, w)).astype(np.float32)
        self._luma = np.empty((h, w), dtype=np.float32)  # scratch planes, reused per frame
        self._term = np.empty((h, w), dtype=np.float32)
        self._slides = [self._slide(n) for n in range(4)] if params.kind == "screen" else []

    def frame(self, i: int) -> np.ndarray:
        if i == self.p.flash_index:
            return self._flash()
        if self.p.kind == "camera":
            return self._camera(i)
        return self._screen(i)

    def _flash(self) -> np.ndarray:
        out = np.full((self.h * 3 // 2, self.w), 128, dtype=np.uint8)
        out[: self.h] = FLASH_LUMA
        return out

    def _planes(self, luma: np.ndarray, u: float, v: float) -> np.ndarray:
        out = np.empty((self.h * 3 // 2, self.w), dtype=np.uint8)
        np.clip(luma, 16, 235, out=luma)
        out[: self.h] = luma
        out[self.h : self.h + self.h // 4] = int(u)
        out[self.h + self.h // 4 :] = int(v)
        return out

    def _counter(self, luma: np.ndarray, i: int) -> None:
        """Twelve blocks bottom-left: the clip frame index in binary (bright = 1)."""
        size = max(8, self.h // 40)
        top = self.h - 2 * size
        for bit in range(12):
            left = size + bit * size * 3 // 2
            luma[top : top + size, left : left + size] = 200 if (i >> bit) & 1 else 24

    def _camera(self, i: int) -> np.ndarray:
        t = i / self.p.fps
        x, y = self._x, self._y
        # Moving blobs and a diagonal wave: sums of separable sinusoids, as outer products into
        # preallocated planes (this painting costs as much as the encoding otherwise).
        luma, term = self._luma, self._term
        np.multiply.outer(22.0 * np.cos(y / 37.0 - 1.3 * t), np.sin(x / 53.0 + 2.0 * t), out=luma)
        luma += 70.0
        np.multiply.outer(12.0 * np.cos(y / 11.0), np.sin(x / 13.0 + 5.0 * t), out=term)
        luma += term
        np.multiply.outer(12.0 * np.sin(y / 11.0), np.cos(x / 13.0 + 5.0 * t), out=term)
        luma += term
        luma += self._grain
        # A bright square bouncing left-right: obvious motion for a human eye and for tests.
        side = self.h // 6
        span = self.w - side
        pos = int((i * self.w / (2.0 * self.p.fps)) % (2 * span))
        left = pos if pos < span else 2 * span - pos
        top = self.h // 3
        luma[top : top + side, left : left + side] = 190.0
        self._counter(luma, i)
        return self._planes(luma, 128 + 18 * np.sin(t), 128 + 18 * np.cos(0.7 * t))

    def _slide(self, n: int) -> np.ndarray:
        """A dark slide with a title bar and 'text' lines of varying length."""
        rng = np.random.default_rng(0x5C4EE + n)
        luma = np.full((self.h, self.w), 40.0, dtype=np.float32)
        unit = self.h // 24
        luma[unit : 3 * unit, 2 * unit : self.w - 2 * unit] = 90.0
        for row in range(6, 21, 2):
            length = int(rng.integers(self.w // 4, self.w - 6 * unit))
            luma[row * unit : row * unit + unit // 2, 3 * unit : 3 * unit + length] = 170.0
        return luma + self._grain

    def _screen(self, i: int) -> np.ndarray:
        # A new slide every 2.5 s and a cursor gliding along a circle.
        slide = self._slides[(i * 2 // (5 * self.p.fps)) % len(self._slides)]
        luma = self._luma
        luma[:] = slide
        angle = 2 * np.pi * i / (4 * self.p.fps)
        cx = int(self.w / 2 + self.w / 4 * np.cos(angle))
        cy = int(self.h / 2 + self.h / 4 * np.sin(angle))
        c = max(6, self.h // 60)
        luma[cy : cy + 3 * c, cx : cx + c] = 230.0
        self._counter(luma, i)
        return self._planes(luma, 128, 128)


# ---------------------------------------------------------------------------------------------
# Encoding


def encode_clip(params: ClipParams) -> VideoClip:
    """Encode a clip with libx264 (CPU: ~0.2 s at 360p, ~1 s at 720p for 150 frames, one thread).

    Settings follow what a Zoom client sends and what an RTMS consumer needs: constrained
    baseline, no B-frames (one access unit out per frame in), a fixed GOP without scene-cut IDRs,
    SPS/PPS in-band at every IDR (`repeat-headers`), Annex-B start codes. One encoder thread keeps
    the bytes identical on every machine (x264's slice layout depends on its thread count).
    """
    import av  # local import: PyAV is heavy and only needed on a cache miss

    painter = _Painter(params)
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height = painter.w, painter.h
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, params.fps)
    ctx.framerate = Fraction(params.fps, 1)
    ctx.thread_count = 1
    kbps = _BITRATE_KBPS[params.resolution]
    if params.kind == "screen":
        kbps //= 2
    x264 = ":".join(
        [
            f"keyint={params.gop}",
            f"min-keyint={params.gop}",
            "scenecut=0",
            "bframes=0",
            "repeat-headers=1",
            "annexb=1",
            f"vbv-maxrate={kbps * 5 // 4}",
            f"vbv-bufsize={kbps * 5 // 4}",
        ]
    )
    ctx.options = {
        "preset": "veryfast",
        "tune": "zerolatency",
        "profile": "baseline",
        "b": f"{kbps}k",
        "x264-params": x264,
    }
    frames: list[bytes] = []
    keys: list[bool] = []
    for i in range(params.frame_count):
        picture = av.VideoFrame.from_ndarray(painter.frame(i), format="yuv420p")
        picture.pts = i
        for packet in ctx.encode(picture):
            frames.append(bytes(packet))
            keys.append(bool(packet.is_keyframe))
    for packet in ctx.encode(None):
        frames.append(bytes(packet))
        keys.append(bool(packet.is_keyframe))
    if len(frames) != params.frame_count or not keys[0]:
        raise RuntimeError(
            f"libx264 gave {len(frames)} access units for {params.frame_count} frames "
            f"(first keyframe: {keys[0] if keys else None}); expected one per frame starting with an IDR"
        )
    return VideoClip(params, painter.w, painter.h, tuple(frames), tuple(keys))


# ---------------------------------------------------------------------------------------------
# Caches

_MAGIC = b"RTMSCLIP\n"
_LRU_SIZE = 8
_lru: OrderedDict[ClipParams, VideoClip] = OrderedDict()
_lock = threading.Lock()


def clip_cache_dir() -> Path:
    """Where encoded clips are kept between runs: `<RTMSFLOW_CACHE or ~/.cache/rtmsflow>/clips`."""
    return default_cache_dir() / "clips"


def _write(path: Path, clip: VideoClip) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = json.dumps(
        {
            "params": asdict(clip.params),
            "width": clip.width,
            "height": clip.height,
            "keyframes": clip.keyframes,
        }
    ).encode()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC)
            f.write(struct.pack(">I", len(header)))
            f.write(header)
            for frame in clip.frames:
                f.write(struct.pack(">I", len(frame)))
                f.write(frame)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path, params: ClipParams) -> VideoClip | None:
    """The cached clip, or None when absent or unreadable (then it is encoded again)."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        if not blob.startswith(_MAGIC):
            raise ValueError("bad magic")
        pos = len(_MAGIC)
        (n,) = struct.unpack_from(">I", blob, pos)
        header = json.loads(blob[pos + 4 : pos + 4 + n])
        pos += 4 + n
        if header["params"] != asdict(params):
            raise ValueError("parameters differ")
        frames: list[bytes] = []
        for _ in range(params.frame_count):
            (size,) = struct.unpack_from(">I", blob, pos)
            frames.append(blob[pos + 4 : pos + 4 + size])
            if len(frames[-1]) != size:
                raise ValueError("truncated")
            pos += 4 + size
        if pos != len(blob):
            raise ValueError("trailing bytes")
        return VideoClip(params, header["width"], header["height"], tuple(frames), tuple(header["keyframes"]))
    except (ValueError, KeyError, struct.error, json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable clip cache file", extra={"path": str(path), "reason": str(exc)})
        return None


def get_clip(params: ClipParams, *, disk_cache: bool = True) -> VideoClip:
    """The clip for `params`: from memory, else from disk, else encoded (and then stored)."""
    with _lock:
        clip = _lru.get(params)
        if clip is not None:
            _lru.move_to_end(params)
            return clip
        path = clip_cache_dir() / (params.cache_key() + ".bin")
        clip = _read(path, params) if disk_cache else None
        if clip is None:
            clip = encode_clip(params)
            if disk_cache:
                try:
                    _write(path, clip)
                except OSError as exc:  # a read-only cache must not stop the emulator
                    log.warning("could not store clip", extra={"path": str(path), "reason": str(exc)})
        _lru[params] = clip
        while len(_lru) > _LRU_SIZE:
            _lru.popitem(last=False)
        return clip


def clear_memory_cache() -> None:
    """Forget in-process clips (tests use it to measure encode and disk-load times)."""
    with _lock:
        _lru.clear()
