"""Speech-like PCM for synthetic participants, and the sync beep.

L16, 16 kHz, mono. A voice is a few-second loop of formant-shaped syllables, pre-cut into packets of the
send rate; `voice_for(seed, index)` gives a meeting's participants distinct voices out of `VOICE_POOL`, so
many meetings share the same `bytes` objects."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000  # 32: 16 kHz, 16-bit, mono

BEEP_HZ = 1_000
BEEP_MS = 100
BEEP_AMPLITUDE = 0.8  # of full scale; voices peak at VOICE_PEAK, so a beep stands out clearly
VOICE_PEAK = 0.3

# A voice loop lasts this long, rounded up to a whole number of packets.
LOOP_MS = 4_000
VOICE_POOL = 256

# (F1, F2) formant centres of a few vowels, Hz.
_VOWELS = ((730, 1090), (270, 2290), (530, 1840), (570, 840), (300, 870), (660, 1720), (440, 1020))


@dataclass(frozen=True, slots=True)
class VoiceLoop:
    """One voice as a loop of PCM packets of `packet_ms` each."""

    voice: int
    packet_ms: int
    packets: tuple[bytes, ...]
    f0_hz: float

    def packet(self, window: int) -> bytes:
        """The packet for the absolute window number `window` (window k covers k*packet_ms...)."""
        return self.packets[window % len(self.packets)]


def voice_for(seed: int, index: int) -> int:
    """The voice of participant `index` in meetings of `seed`: consecutive voices per meeting."""
    return (seed * 37 + index) % VOICE_POOL


def voice_f0(voice: int) -> float:
    """Pitch 90-360 Hz; 24 consecutive voices get distinct semitones (7 is coprime with 24)."""
    jitter = np.random.default_rng([voice, 0xF0]).uniform(0.0, 0.6)
    return 90.0 * 2.0 ** (((voice * 7) % 24 + jitter) / 12.0)


def synthesize_voice(voice: int, n_samples: int) -> np.ndarray:
    """`n_samples` of speech-like float32 audio in [-VOICE_PEAK, VOICE_PEAK] for one voice."""
    rng = np.random.default_rng([voice, 0x5EEC])
    f0 = voice_f0(voice)
    syllable_s = rng.uniform(0.14, 0.24)  # speaking rate differs per person
    brightness = rng.uniform(0.6, 1.4)  # spectral tilt: timbre
    out = np.zeros(n_samples, dtype=np.float32)
    pos = 0
    while pos < n_samples:
        # one word: 1-4 syllables, then a short pause
        for _ in range(int(rng.integers(1, 5))):
            n = int(SAMPLE_RATE * syllable_s * rng.uniform(0.7, 1.4))
            n = min(n, n_samples - pos)
            if n <= 0:
                break
            t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
            # intonation: a glide of up to +-15 % over the syllable
            glide = rng.uniform(-0.15, 0.15)
            freq = f0 * (1.0 + glide * t / max(t[-1], 1e-3))
            phase = 2.0 * np.pi * np.cumsum(freq) / SAMPLE_RATE
            f1, f2 = _VOWELS[int(rng.integers(len(_VOWELS)))]
            voiced = np.zeros(n, dtype=np.float64)
            for h in range(1, int(4000 // f0) + 1):
                hf = h * f0
                gain = (
                    np.exp(-(((hf - f1) / 180.0) ** 2)) + 0.6 * np.exp(-(((hf - f2) / 250.0) ** 2)) + 0.08
                ) / h**brightness
                voiced += gain * np.sin(h * phase)
            envelope = np.sin(np.pi * np.arange(n) / n) ** 0.6
            chunk = voiced * envelope
            # consonant onset: 15-40 ms of noise
            burst = min(n, int(SAMPLE_RATE * rng.uniform(0.015, 0.04)))
            chunk[:burst] += rng.normal(0.0, 0.25 * np.abs(voiced).max(), burst) * np.linspace(1, 0, burst)
            out[pos : pos + n] = chunk
            pos += n
        pos += int(SAMPLE_RATE * rng.uniform(0.05, 0.25))
    peak = float(np.abs(out).max()) or 1.0
    return (out * (VOICE_PEAK / peak)).astype(np.float32)


def to_pcm(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] (clipped) to L16 little-endian bytes."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def from_pcm(data: bytes) -> np.ndarray:
    """L16 little-endian bytes to float32 samples in [-1, 1]."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0


_loops: OrderedDict[tuple[int, int], VoiceLoop] = OrderedDict()
_loops_lock = threading.Lock()
_LOOP_CACHE_SIZE = 2 * VOICE_POOL  # ~128 KB each: every voice at two send rates


def voice_loop(voice: int, packet_ms: int) -> VoiceLoop:
    """The cached loop of `voice`, cut into packets of `packet_ms`.

    Synthesis takes a few ms, far less than reading a file would, so this cache lives in memory
    only. The loop is LOOP_MS rounded up to whole packets (identical content for every send rate
    that divides LOOP_MS: 20, 40, 80, 100, 160, 200, 400, 500, 800, 1000 ms).
    """
    key = (voice % VOICE_POOL, packet_ms)
    with _loops_lock:
        loop = _loops.get(key)
        if loop is not None:
            _loops.move_to_end(key)
            return loop
    n_packets = -(-LOOP_MS // packet_ms)
    samples = synthesize_voice(voice % VOICE_POOL, n_packets * packet_ms * SAMPLE_RATE // 1000)
    pcm = to_pcm(samples)
    size = packet_ms * BYTES_PER_MS
    packets = tuple(pcm[i * size : (i + 1) * size] for i in range(n_packets))
    loop = VoiceLoop(voice % VOICE_POOL, packet_ms, packets, voice_f0(voice % VOICE_POOL))
    with _loops_lock:
        _loops[key] = loop
        while len(_loops) > _LOOP_CACHE_SIZE:
            _loops.popitem(last=False)
    return loop


def beep_samples() -> np.ndarray:
    """The sync beep: BEEP_MS of a BEEP_HZ sine at BEEP_AMPLITUDE, starting at phase 0."""
    t = np.arange(BEEP_MS * SAMPLE_RATE // 1000, dtype=np.float64) / SAMPLE_RATE
    return (BEEP_AMPLITUDE * np.sin(2.0 * np.pi * BEEP_HZ * t)).astype(np.float32)


_BEEP = beep_samples()


def add_beep(pcm: bytes | None, packet_ms: int, window_start_ms: int, beep_start_ms: int) -> bytes:
    """`pcm` (or silence when None) with the part of a beep starting at `beep_start_ms` that
    falls in the window [window_start_ms, window_start_ms + packet_ms) mixed in, sample-exact."""
    n = packet_ms * SAMPLE_RATE // 1000
    base = from_pcm(pcm) if pcm is not None else np.zeros(n, dtype=np.float32)
    offset = (beep_start_ms - window_start_ms) * SAMPLE_RATE // 1000  # beep sample 0 in this window
    lo = max(0, offset)
    hi = min(n, offset + len(_BEEP))
    if lo < hi:
        base = base.copy()
        base[lo:hi] += _BEEP[lo - offset : hi - offset]
    return to_pcm(base)


def mix(packets: list[bytes]) -> bytes:
    """The sum of equally long L16 packets, clipped."""
    total = np.zeros(len(packets[0]) // 2, dtype=np.int32)
    for p in packets:
        total += np.frombuffer(p, dtype="<i2")
    return np.clip(total, -32768, 32767).astype("<i2").tobytes()
