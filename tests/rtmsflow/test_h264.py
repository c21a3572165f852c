"""The H.264 access-unit inspector, checked against what libx264 writes and FFmpeg's decoder
reads (through PyAV), against SPSs built bit by bit for the syntax x264 never writes, and against
arbitrary bytes (only `H264Error` may come out)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.clips import ClipParams, get_clip
from rtmsflow.h264 import (
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    AccessUnitInfo,
    H264Error,
    inspect_access_unit,
    iter_nal_units,
    parse_sps,
    unescape_rbsp,
)

# --- real streams ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """One libx264 run: an Annex-B access unit per frame, with the encoder's keyframe flag, and
    what FFmpeg's decoder made of the stream."""

    aus: list[bytes]
    encoder_keyframes: list[bool]
    decoded: list[tuple[int, int, bool]]  # (width, height, key_frame) per picture, in order
    profile: str | None


def encode(
    width: int,
    height: int,
    pix_fmt: str = "yuv420p",
    profile: str = "baseline",
    preset: str = "veryfast",
    x264_params: str = "",
    frames: int = 7,
    gop: int = 3,
) -> Encoded:
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = pix_fmt
    ctx.time_base = Fraction(1, 25)
    ctx.framerate = Fraction(25, 1)
    ctx.thread_count = 1
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0" + (
        f":{x264_params}" if x264_params else ""
    )
    ctx.options = {"preset": preset, "profile": profile, "x264-params": params}
    rng = np.random.default_rng(width * 7919 + height)
    ramp = np.add.outer(np.arange(height), np.arange(width)).astype(np.int64)
    aus: list[bytes] = []
    keys: list[bool] = []
    for i in range(frames):
        rgb = np.stack([(ramp + 9 * i) % 256, (ramp // 2) % 256, (ramp * 3) % 256], axis=-1)
        rgb = (rgb + rng.integers(0, 16, size=rgb.shape)) % 256
        picture = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24").reformat(format=pix_fmt)
        picture.pts = i
        for packet in ctx.encode(picture):
            aus.append(bytes(packet))
            keys.append(bool(packet.is_keyframe))
    for packet in ctx.encode(None):
        aus.append(bytes(packet))
        keys.append(bool(packet.is_keyframe))
    dec = av.CodecContext.create("h264", "r")
    decoded: list[tuple[int, int, bool]] = []
    for au in [*aus, None]:
        for frame in dec.decode(av.Packet(au) if au is not None else None):
            decoded.append((frame.width, frame.height, bool(frame.key_frame)))
    return Encoded(aus, keys, decoded, dec.profile)


def first_sps(au: bytes) -> bytes:
    (nal,) = [au[n.start : n.end] for n in iter_nal_units(au) if n.nal_type == NAL_SPS]
    return nal


# (width, height, pix_fmt, x264 profile, preset, x264 params, profile_idc, FFmpeg's profile name)
STREAMS = [
    pytest.param(640, 360, "yuv420p", "baseline", "veryfast", "", 66, "Constrained Baseline", id="360p-baseline"),
    pytest.param(642, 362, "yuv420p", "baseline", "veryfast", "", 66, "Constrained Baseline", id="642x362-baseline"),
    pytest.param(1920, 1080, "yuv420p", "high", "veryfast", "", 100, "High", id="1080p-high"),
    pytest.param(1920, 1080, "yuv420p", "high", "veryfast", "interlaced=1", 100, "High", id="1080i-high-fields"),
    pytest.param(642, 362, "yuv420p10le", "high10", "veryfast", "", 110, "High 10", id="642x362-high10"),
    pytest.param(642, 361, "yuv422p10le", "high422", "veryfast", "", 122, "High 4:2:2", id="642x361-high422-10bit"),
    pytest.param(641, 361, "yuv444p", "high444", "veryfast", "", 244, "High 4:4:4 Predictive", id="641x361-high444"),
    pytest.param(641, 361, "gray", "high", "veryfast", "", 100, "High", id="641x361-monochrome"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("width", "height", "pix_fmt", "profile", "preset", "x264", "profile_idc", "name"), STREAMS
)
def test_every_access_unit_matches_what_pyav_encodes_and_decodes(
    width: int, height: int, pix_fmt: str, profile: str, preset: str, x264: str, profile_idc: int, name: str
) -> None:
    enc = encode(width, height, pix_fmt, profile, preset, x264)
    assert enc.profile == name
    assert len(enc.decoded) == len(enc.aus)  # no B-frames: one picture out per AU, in order
    infos = [inspect_access_unit(au) for au in enc.aus]
    assert [i.keyframe for i in infos] == enc.encoder_keyframes == [d[2] for d in enc.decoded]
    # both kinds occur, so neither flag can pass by being constant
    assert any(enc.encoder_keyframes) and not all(enc.encoder_keyframes)
    for info, (dec_w, dec_h, _) in zip(infos, enc.decoded, strict=True):
        assert (dec_w, dec_h) == (width, height)
        # FFmpeg's libx264 wrapper repeats SPS + PPS in-band before every IDR, and only there
        assert info.has_parameter_sets == info.keyframe
        if info.keyframe:
            assert (info.width, info.height) == (dec_w, dec_h)
        else:
            assert (info.width, info.height) == (None, None)
    sps = parse_sps(first_sps(enc.aus[0]))
    assert sps.profile_idc == profile_idc
    assert (sps.width, sps.height) == (width, height)


def test_sps_fields_of_the_cropped_and_high_profile_streams() -> None:
    """The fields behind the sizes above: cropping, field coding, chroma format, bit depth."""
    fhd = parse_sps(first_sps(encode(1920, 1080, profile="high").aus[0]))
    assert (fhd.coded_width, fhd.coded_height, fhd.crop_bottom, fhd.frame_mbs_only) == (1920, 1088, 4, True)
    fields = parse_sps(first_sps(encode(1920, 1080, profile="high", x264_params="interlaced=1").aus[0]))
    # 34 map units of 32 lines; a crop unit is 4 lines when pictures are coded as fields
    assert (fields.coded_height, fields.crop_bottom, fields.frame_mbs_only) == (1088, 2, False)
    odd = parse_sps(first_sps(encode(641, 361, "yuv444p", "high444").aus[0]))
    assert (odd.chroma_format_idc, odd.crop_right, odd.crop_bottom) == (3, 15, 7)  # 4:4:4: 1-sample units
    deep = parse_sps(first_sps(encode(642, 361, "yuv422p10le", "high422").aus[0]))
    assert (deep.chroma_format_idc, deep.bit_depth_luma, deep.bit_depth_chroma) == (2, 10, 10)
    assert (deep.crop_right, deep.crop_bottom) == (7, 7)  # 4:2:2: 2 samples across, 1 line down
    mono = parse_sps(first_sps(encode(641, 361, "gray", "high").aus[0]))
    assert (mono.chroma_format_idc, mono.crop_right, mono.crop_bottom) == (0, 15, 7)


def test_emulator_clip_frames_are_stamped_like_the_clip_says() -> None:
    clip = get_clip(ClipParams("camera", "360p", 25, 10, 5, None), disk_cache=False)
    infos = [inspect_access_unit(f) for f in clip.frames]
    assert [i.keyframe for i in infos] == list(clip.keyframes) == [True] + [False] * 4 + [True] + [False] * 4
    assert [(i.width, i.height) for i in infos if i.keyframe] == [(clip.width, clip.height)] * 2
    assert all(i.has_parameter_sets for i in infos if i.keyframe)


# --- NAL splitting ---------------------------------------------------------------------------------


def test_nal_units_split_on_three_and_four_byte_start_codes() -> None:
    data = b"\x00\x00\x00\x01\x09\xf0" + b"\x00\x00\x01\x67\x42" + b"\x00\x00\x00\x01\x65\x88\x84\x00\x00"
    units = list(iter_nal_units(data))
    assert [(u.nal_type, u.ref_idc) for u in units] == [(9, 0), (NAL_SPS, 3), (NAL_IDR, 3)]
    # the zero_byte of a following 4-byte start code and trailing zeros belong to no unit
    assert [data[u.start : u.end] for u in units] == [b"\x09\xf0", b"\x67\x42", b"\x65\x88\x84"]


def test_empty_nal_units_are_skipped_and_leading_zeros_allowed() -> None:
    info = inspect_access_unit(b"\x00\x00\x00\x00\x01" + b"\x00\x00\x01" + b"\x00\x00\x01\x65\x88")
    assert info == AccessUnitInfo(keyframe=True, has_parameter_sets=False)
    assert inspect_access_unit(b"\x00\x00\x01\x41\x9a") == AccessUnitInfo(False, False)


def test_a_pps_without_an_sps_is_not_a_parameter_set_pair() -> None:
    sps = build_sps(width_mbs=40, height_map_units=23, crop=(0, 0, 0, 4))
    idr = b"\x00\x00\x01\x65\x88"
    pps = b"\x00\x00\x01\x68\xce"
    assert inspect_access_unit(pps + idr) == AccessUnitInfo(True, False)
    assert inspect_access_unit(b"\x00\x00\x01" + sps + idr) == AccessUnitInfo(True, False, 640, 360)
    assert inspect_access_unit(b"\x00\x00\x01" + sps + pps + idr) == AccessUnitInfo(True, True, 640, 360)
    assert [u.nal_type for u in iter_nal_units(b"\x00\x00\x01" + sps + pps)] == [NAL_SPS, NAL_PPS]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x65\x88\x84\x21", "no_start_code"),
        (b"\x00\x00\x02\x65", "no_start_code"),
        (b"\x09\x00\x00\x01\x65\x88", "leading_garbage"),
        (b"\x00\x00\x01\xe5\x88", "forbidden_bit"),
        (b"\x00\x00\x01\x65\x88\x00\x00\x01\x81", "forbidden_bit"),
        (b"\x00\x00\x01\x67", "bad_sps"),  # an SPS of a header byte only
    ],
)
def test_malformed_access_units_raise_a_typed_reason(data: bytes, reason: str) -> None:
    with pytest.raises(H264Error) as err:
        inspect_access_unit(data)
    assert err.value.reason == reason
    assert str(err.value).startswith(reason)


def test_a_truncated_sps_is_bad_but_the_whole_one_parses() -> None:
    au = encode(642, 362, profile="high").aus[0]
    sps = first_sps(au)
    assert parse_sps(sps).width == 642
    for cut in (2, 4, 6, 9):
        with pytest.raises(H264Error) as err:
            inspect_access_unit(b"\x00\x00\x01" + sps[:cut])
        assert err.value.reason == "bad_sps" and "truncated" in err.value.detail


def test_cropping_that_leaves_no_picture_is_bad_sps() -> None:
    assert parse_sps(build_sps(width_mbs=1, height_map_units=1, crop=(3, 4, 0, 7))).width == 2
    with pytest.raises(H264Error, match="leaves no picture") as err:
        parse_sps(build_sps(width_mbs=1, height_map_units=1, crop=(4, 4, 0, 0)))
    assert err.value.reason == "bad_sps"


# --- SPSs built bit by bit -------------------------------------------------------------------------


class BitWriter:
    """Writes u(n), ue(v), se(v) MSB first; `rbsp()` adds the stop bit and alignment."""

    def __init__(self) -> None:
        self.bits: list[str] = []

    def u(self, value: int, n: int) -> None:
        self.bits.append(format(value, f"0{n}b") if n else "")

    def ue(self, value: int) -> None:
        code = value + 1
        self.bits.append("0" * (code.bit_length() - 1) + format(code, "b"))

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        text = "".join(self.bits) + "1"
        text += "0" * (-len(text) % 8)
        return int(text, 2).to_bytes(len(text) // 8, "big")


def escape(rbsp: bytes) -> bytes:
    """Insert emulation-prevention bytes (7.4.1): 03 after 00 00 when 00..03 follows."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def build_sps(
    *,
    profile_idc: int = 66,
    level_idc: int = 30,
    constraint_flags: int = 0xC0,
    sps_id: int = 0,
    chroma_format_idc: int = 1,
    separate: bool = False,
    depth_luma: int = 8,
    depth_chroma: int = 8,
    scaling_lists: list[list[int] | None] | None = None,
    poc_type: int = 0,
    poc_cycle: tuple[int, ...] = (),
    max_ref_frames: int = 1,
    width_mbs: int = 40,
    height_map_units: int = 23,
    frame_mbs_only: bool = True,
    crop: tuple[int, int, int, int] | None = None,
) -> bytes:
    """An SPS NAL unit (header 0x67, escaped) with the given fields; `scaling_lists` holds, per
    list, the delta_scale values to write (None: list not present)."""
    w = BitWriter()
    w.u(profile_idc, 8)
    w.u(constraint_flags, 8)
    w.u(level_idc, 8)
    w.ue(sps_id)
    if profile_idc in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        w.ue(chroma_format_idc)
        if chroma_format_idc == 3:
            w.u(int(separate), 1)
        w.ue(depth_luma - 8)
        w.ue(depth_chroma - 8)
        w.u(0, 1)
        w.u(int(scaling_lists is not None), 1)
        if scaling_lists is not None:
            for deltas in scaling_lists:
                w.u(int(deltas is not None), 1)
                for d in deltas or ():
                    w.se(d)
    w.ue(0)  # log2_max_frame_num_minus4
    w.ue(poc_type)
    if poc_type == 0:
        w.ue(2)
    elif poc_type == 1:
        w.u(0, 1)
        w.se(-3)
        w.se(5)
        w.ue(len(poc_cycle))
        for offset in poc_cycle:
            w.se(offset)
    w.ue(max_ref_frames)
    w.u(0, 1)
    w.ue(width_mbs - 1)
    w.ue(height_map_units - 1)
    w.u(int(frame_mbs_only), 1)
    if not frame_mbs_only:
        w.u(1, 1)
    w.u(1, 1)  # direct_8x8_inference_flag
    w.u(int(crop is not None), 1)
    for offset in crop or ():
        w.ue(offset)
    w.u(0, 1)  # no VUI
    return b"\x67" + escape(w.rbsp())


def spec_size(
    chroma_format_idc: int,
    separate: bool,
    width_mbs: int,
    height_map_units: int,
    frame_mbs_only: bool,
    crop: tuple[int, int, int, int],
) -> tuple[int, int]:
    """The cropped size by Table 6-1 (SubWidthC, SubHeightC) and equations 7-18..7-22."""
    field_factor = 1 if frame_mbs_only else 2
    if chroma_format_idc == 0 or separate:
        unit_x, unit_y = 1, field_factor
    else:
        sub_w, sub_h = {1: (2, 2), 2: (2, 1), 3: (1, 1)}[chroma_format_idc]
        unit_x, unit_y = sub_w, sub_h * field_factor
    left, right, top, bottom = crop
    return (
        width_mbs * 16 - unit_x * (left + right),
        field_factor * height_map_units * 16 - unit_y * (top + bottom),
    )


def full_list(size: int, first: int) -> list[int]:
    """Deltas for a scaling list of `size` entries that never hits a next scale of 0."""
    return [first] + [-1 if j % 2 else 1 for j in range(size - 1)]


def _read_ue(bits: str, pos: int) -> tuple[int, int]:
    zeros = bits.index("1", pos) - pos
    end = pos + 2 * zeros + 1
    return int(bits[pos + zeros : end], 2) - 1, end


def with_sps_scaling_lists(au: bytes, lists: list[list[int] | None]) -> bytes:
    """`au` with its SPS rewritten to carry `lists` (delta_scale values per list, None: absent):
    x264 always writes seq_scaling_matrix_present_flag = 0 (its matrices go in the PPS), so the
    flag's bit is found and replaced by 1 + the lists, every other bit kept."""
    nal = first_sps(au)
    rbsp = unescape_rbsp(nal[1:])
    bits = format(int.from_bytes(rbsp, "big"), f"0{len(rbsp) * 8}b").rstrip("0")[:-1]  # drop stop bit
    _, pos = _read_ue(bits, 24)  # seq_parameter_set_id
    chroma, pos = _read_ue(bits, pos)
    pos += chroma == 3  # separate_colour_plane_flag
    _, pos = _read_ue(bits, pos)
    _, pos = _read_ue(bits, pos)
    pos += 1  # qpprime_y_zero_transform_bypass_flag
    assert bits[pos] == "0" and len(lists) == (12 if chroma == 3 else 8)
    w = BitWriter()
    for deltas in lists:
        w.u(int(deltas is not None), 1)
        for d in deltas or ():
            w.se(d)
    text = bits[:pos] + "1" + "".join(w.bits) + bits[pos + 1 :] + "1"
    text += "0" * (-len(text) % 8)
    new = nal[:1] + escape(int(text, 2).to_bytes(len(text) // 8, "big"))
    return au.replace(nal, new, 1)


def decode_pictures(aus: list[bytes]) -> list[np.ndarray]:
    dec = av.CodecContext.create("h264", "r")
    out: list[np.ndarray] = []
    for au in [*aus, None]:
        for frame in dec.decode(av.Packet(au) if au is not None else None):
            out.append(np.concatenate([np.frombuffer(bytes(p), np.uint8) for p in frame.planes]))
    return out


@pytest.mark.parametrize(
    ("pix_fmt", "profile", "width", "height", "lists"),
    [("yuv420p", "high", 642, 362, 8), ("yuv444p", "high444", 641, 361, 12)],
)
def test_sps_scaling_lists_are_skipped_exactly_as_ffmpeg_reads_them(
    pix_fmt: str, profile: str, width: int, height: int, lists: int
) -> None:
    enc = encode(width, height, pix_fmt, profile, frames=4)
    # explicit flat lists (every scale 16) decode exactly like no matrix at all, so FFmpeg's
    # pictures prove the rewritten SPS says what we mean
    flat: list[list[int] | None] = [[8] + [0] * (15 if i < 6 else 63) for i in range(lists)]
    rewritten = [
        with_sps_scaling_lists(au, flat) if inspect_access_unit(au).keyframe else au for au in enc.aus
    ]
    assert rewritten[0] != enc.aus[0] and rewritten[1] == enc.aus[1]
    sps = parse_sps(first_sps(rewritten[0]))
    assert sps.scaling_matrix_present and (sps.width, sps.height) == (width, height)
    assert not parse_sps(first_sps(enc.aus[0])).scaling_matrix_present
    assert [inspect_access_unit(au) for au in rewritten] == [inspect_access_unit(au) for au in enc.aus]
    original = decode_pictures(enc.aus)
    assert len(original) == len(enc.aus)
    assert all(np.array_equal(a, b) for a, b in zip(decode_pictures(rewritten), original, strict=True))
    # lists that end early ("use the default", next scale 0) and ones left out change the
    # pictures but not the size
    mixed: list[list[int] | None] = [[-8] if i % 3 == 0 else None if i % 3 == 1 else full_list(16 if i < 6 else 64, 5)
                                     for i in range(lists)]  # fmt: skip
    other = with_sps_scaling_lists(enc.aus[0], mixed)
    assert (inspect_access_unit(other).width, inspect_access_unit(other).height) == (width, height)
    assert len(decode_pictures([other])) == 1


def test_picture_order_count_type_1_and_its_cycle_are_skipped() -> None:
    sps = parse_sps(build_sps(poc_type=1, poc_cycle=(1, -2, 300, -4000), width_mbs=80, height_map_units=45))
    assert (sps.width, sps.height) == (1280, 720)
    assert parse_sps(build_sps(poc_type=2, width_mbs=80, height_map_units=45)).height == 720


def test_separate_colour_planes_crop_in_luma_samples() -> None:
    nal = build_sps(profile_idc=244, chroma_format_idc=3, separate=True, width_mbs=41, height_map_units=12,
                    frame_mbs_only=False, crop=(1, 6, 1, 2))  # fmt: skip
    sps = parse_sps(nal)
    assert sps.separate_colour_plane and not sps.frame_mbs_only
    assert (sps.width, sps.height) == (41 * 16 - 7, 12 * 32 - 2 * 3)


def test_a_scaling_list_that_switches_to_its_default_ends_early() -> None:
    # delta -8 from the start value 8 gives a next scale of 0: "use the default list", one delta only
    lists: list[list[int] | None] = [[-8], None, full_list(16, 3), None, None, None, [-8], full_list(64, -5)]
    sps = parse_sps(build_sps(profile_idc=100, scaling_lists=lists, crop=(0, 0, 0, 4)))
    assert sps.scaling_matrix_present and (sps.width, sps.height) == (640, 360)
    # a delta outside -128..127 is not H.264
    with pytest.raises(H264Error, match="delta_scale"):
        parse_sps(build_sps(profile_idc=100, scaling_lists=[[200]] + [None] * 7))


def test_emulation_prevention_bytes_are_removed_before_parsing() -> None:
    # profile 0, no constraint flags and level 1 make the RBSP start 00 00 01: escaped as 00 00 03 01
    nal = build_sps(profile_idc=0, constraint_flags=0, level_idc=1, sps_id=7, width_mbs=8, height_map_units=6)
    assert nal.startswith(b"\x67\x00\x00\x03\x01")
    sps = parse_sps(nal)
    assert (sps.profile_idc, sps.level_idc, sps.sps_id, sps.width, sps.height) == (0, 1, 7, 128, 96)
    assert unescape_rbsp(b"\x00\x00\x03\x00\x00\x03\x01") == b"\x00\x00\x00\x00\x01"
    assert unescape_rbsp(b"\x00\x00\x03\x03") == b"\x00\x00\x03"


@st.composite
def sps_fields(draw: st.DrawFn) -> dict[str, Any]:
    high = draw(st.booleans())
    chroma = draw(st.integers(0, 3)) if high else 1
    separate = chroma == 3 and draw(st.booleans())
    size = 12 if chroma == 3 else 8
    lists: list[list[int] | None] | None = None
    if high and draw(st.booleans()):
        lists = [
            draw(st.sampled_from([None, [-8], full_list(16 if i < 6 else 64, draw(st.integers(-7, 7)))]))
            for i in range(size)
        ]
    poc_type = draw(st.integers(0, 2))
    width_mbs = draw(st.integers(1, 240))
    height_map_units = draw(st.integers(1, 135))
    frame_mbs_only = draw(st.booleans())
    crop = (
        draw(st.integers(0, 3)),
        draw(st.integers(0, 3)),
        draw(st.integers(0, 3)),
        draw(st.integers(0, 3)),
    )
    return {
        "profile_idc": draw(st.sampled_from([100, 110, 122, 244]))
        if high
        else draw(st.sampled_from([66, 77, 88])),
        "level_idc": draw(st.integers(0, 255)),
        "constraint_flags": draw(st.integers(0, 255)),
        "sps_id": draw(st.integers(0, 31)),
        "chroma_format_idc": chroma,
        "separate": separate,
        "depth_luma": draw(st.integers(8, 14)) if high else 8,
        "depth_chroma": draw(st.integers(8, 14)) if high else 8,
        "scaling_lists": lists,
        "poc_type": poc_type,
        "poc_cycle": tuple(draw(st.lists(st.integers(-5000, 5000), max_size=4))) if poc_type == 1 else (),
        "max_ref_frames": draw(st.integers(0, 16)),
        "width_mbs": width_mbs,
        "height_map_units": height_map_units,
        "frame_mbs_only": frame_mbs_only,
        "crop": crop,
    }


@settings(max_examples=150, deadline=None)
@given(sps_fields())
def test_any_valid_sps_gives_the_size_of_the_standards_formula(fields: dict[str, Any]) -> None:
    sps = parse_sps(build_sps(**fields))
    expected = spec_size(
        fields["chroma_format_idc"],
        fields["separate"],
        fields["width_mbs"],
        fields["height_map_units"],
        fields["frame_mbs_only"],
        fields["crop"],
    )
    assert (sps.width, sps.height) == expected
    assert (sps.profile_idc, sps.level_idc, sps.sps_id) == (
        fields["profile_idc"],
        fields["level_idc"],
        fields["sps_id"],
    )
    assert (sps.bit_depth_luma, sps.bit_depth_chroma) == (fields["depth_luma"], fields["depth_chroma"])


# --- garbage ---------------------------------------------------------------------------------------

_START_CODES = st.sampled_from([b"\x00\x00\x01", b"\x00\x00\x00\x01"])
# NAL bodies that start like an SPS, an IDR, a PPS or anything, so the SPS parser sees garbage too
_NAL = st.tuples(st.sampled_from([b"\x67", b"\x65", b"\x68", b"\x27", b""]), st.binary(max_size=40))
_ANNEX_B_ISH = st.lists(st.tuples(_START_CODES, _NAL), max_size=6).map(
    lambda parts: b"".join(sc + head + body for sc, (head, body) in parts)
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=120), _ANNEX_B_ISH))
def test_arbitrary_bytes_raise_nothing_but_h264error(data: bytes) -> None:
    try:
        info = inspect_access_unit(data)
    except H264Error as exc:
        assert exc.reason in {"empty", "no_start_code", "leading_garbage", "forbidden_bit", "bad_sps"}
        return
    assert isinstance(info, AccessUnitInfo)
    assert (info.width is None) == (info.height is None)
    if info.width is not None:
        assert info.width > 0 and info.height is not None and info.height > 0
    try:
        types = [u.nal_type for u in iter_nal_units(data)]
    except H264Error:  # pragma: no cover - inspect_access_unit accepted the same structure
        pytest.fail("iter_nal_units refused what inspect_access_unit accepted")
    assert info.keyframe == (NAL_IDR in types)


def test_garbage_control_a_real_access_unit_passes_the_same_checks() -> None:
    """Positive control for the property above: a real AU is accepted and fully stamped."""
    au = encode(640, 360).aus[0]
    assert inspect_access_unit(au) == AccessUnitInfo(True, True, 640, 360)
    with pytest.raises(H264Error):
        inspect_access_unit(au[4:])  # start code cut off: now it is garbage
