"""What ingest needs to know about one H.264 access unit, read cheaply from its Annex-B bytes.

`keyframe` (an IDR slice), `has_parameter_sets` (SPS and PPS) and the SPS's cropped picture size. Runs on
every video frame, so only an AU with an SPS pays for a bit-level parse. Arbitrary bytes give either an
`AccessUnitInfo` or an `H264Error(reason, detail)` (a dead letter in ingest), never another exception."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

_START = b"\x00\x00\x01"
_EPB = b"\x00\x00\x03"

# profile_idc values whose SPS carries chroma_format_idc, bit depths and scaling lists (7.3.2.1.1)
HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})

# A ue(v) of an SPS field never needs more than 32 bits (values up to 2^32 - 2); more leading
# zeros than this is garbage, and refusing it keeps the parse bounded on hostile input.
_MAX_LEADING_ZEROS = 31


class H264Error(ValueError):
    """An access unit whose structure cannot be trusted; ingest dead-letters it as `H264Error.<reason>`.

    `reason`: ``empty`` (no bytes), ``no_start_code`` (no 00 00 01: not Annex-B), ``leading_garbage``
    (non-zero bytes before the first start code), ``forbidden_bit`` (a NAL header with
    forbidden_zero_bit set, H.264 7.4.1), ``bad_sps`` (an SPS truncated or out of the standard's ranges).
    Anything else is an absence, not an error: no SPS gives no size, no IDR slice no keyframe, unknown
    NAL types and empty NALs are skipped. `detail` says where."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(reason + (f": {detail}" if detail else ""))


@dataclass(frozen=True, slots=True)
class AccessUnitInfo:
    """What ingest stamps on a video frame. `width`/`height` are the displayed (cropped) size from
    the AU's first SPS, None when the AU carries no SPS."""

    keyframe: bool
    has_parameter_sets: bool
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class NalUnit:
    """One NAL unit of an Annex-B buffer: `data[start:end]` is the unit from its header byte on
    (start code and trailing zero bytes excluded), still with emulation-prevention bytes."""

    nal_type: int
    ref_idc: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class SequenceParameterSet:
    """The fields of an SPS that say what a picture looks like (H.264 7.3.2.1.1, 7.4.2.1.1).
    `width`/`height` are after frame cropping; `coded_width`/`coded_height` before it."""

    profile_idc: int
    level_idc: int
    sps_id: int
    chroma_format_idc: int
    separate_colour_plane: bool
    bit_depth_luma: int
    bit_depth_chroma: int
    scaling_matrix_present: bool
    frame_mbs_only: bool
    coded_width: int
    coded_height: int
    crop_left: int
    crop_right: int
    crop_top: int
    crop_bottom: int
    width: int
    height: int


# --- NAL units ------------------------------------------------------------------------------------


def _first_start(data: bytes) -> int:
    """Offset of the first NAL header byte; checks what comes before it."""
    if not data:
        raise H264Error("empty")
    i = data.find(_START)
    if i < 0:
        raise H264Error("no_start_code", f"{len(data)} bytes without 00 00 01")
    if i and data.count(0, 0, i) != i:  # only zero bytes (a 4-byte start code's zero_byte) may lead
        raise H264Error("leading_garbage", f"{i} bytes before the first start code")
    return i + 3


def iter_nal_units(data: bytes) -> Iterator[NalUnit]:
    """The NAL units of an Annex-B buffer, in order (empty ones skipped). Raises `H264Error` for
    a buffer that is empty, has no start code, has non-zero bytes before the first one, or holds a
    NAL header with forbidden_zero_bit set."""
    start = _first_start(data)
    n = len(data)
    while True:
        nxt = data.find(_START, start)
        end = n if nxt < 0 else nxt
        while end > start and data[end - 1] == 0:  # zero_byte of a 4-byte start code, trailing zeros
            end -= 1
        if end > start:
            header = data[start]
            if header & 0x80:
                raise H264Error("forbidden_bit", f"NAL header {header:#04x} at offset {start}")
            yield NalUnit(header & 0x1F, (header >> 5) & 3, start, end)
        if nxt < 0:
            return
        start = nxt + 3


def inspect_access_unit(data: bytes) -> AccessUnitInfo:
    """Keyframe, parameter-set and picture-size facts of one Annex-B access unit.

    Raises `H264Error` as `iter_nal_units` does, and with reason ``bad_sps`` when the AU's first
    SPS cannot be parsed. Only the first SPS is parsed (an AU with two SPSs of different sizes
    is not something an encoder sends for one picture)."""
    # The same walk as iter_nal_units, inlined: this is the per-frame hot path, and a generator
    # plus a NalUnit per NAL would cost more than the scanning itself on small P-frames.
    start = _first_start(data)
    find = data.find
    n = len(data)
    keyframe = has_sps = has_pps = False
    sps: tuple[int, int] | None = None
    while True:
        nxt = find(_START, start)
        end = n if nxt < 0 else nxt
        while end > start and data[end - 1] == 0:
            end -= 1
        if end > start:
            header = data[start]
            if header & 0x80:
                raise H264Error("forbidden_bit", f"NAL header {header:#04x} at offset {start}")
            nal_type = header & 0x1F
            if nal_type == NAL_IDR:
                keyframe = True
            elif nal_type == NAL_SPS:
                if not has_sps:
                    parsed = parse_sps(data[start:end])
                    sps = (parsed.width, parsed.height)
                has_sps = True
            elif nal_type == NAL_PPS:
                has_pps = True
        if nxt < 0:
            break
        start = nxt + 3
    if sps is None:
        return AccessUnitInfo(keyframe, False)
    return AccessUnitInfo(keyframe, has_pps, sps[0], sps[1])


def unescape_rbsp(nal: bytes) -> bytes:
    """The RBSP of a NAL unit: emulation-prevention bytes removed. `bytes.replace` scans left to
    right without overlap, which is exactly the standard's loop (7.3.1): after 00 00 03 the zero
    count starts again."""
    return nal.replace(_EPB, b"\x00\x00")


# --- SPS ------------------------------------------------------------------------------------------


class _Bits:
    """An MSB-first bit reader over a whole RBSP held as one Python int (an SPS is a few dozen
    bytes, so shifts on one int beat indexing bytes). Reading past the end raises bad_sps."""

    __slots__ = ("value", "left")

    def __init__(self, rbsp: bytes) -> None:
        self.value = int.from_bytes(rbsp, "big")
        self.left = len(rbsp) * 8  # bits not read yet

    def u(self, k: int, name: str) -> int:
        if k > self.left:
            raise H264Error("bad_sps", f"truncated at {name}")
        self.left -= k
        return (self.value >> self.left) & ((1 << k) - 1)

    def flag(self, name: str) -> bool:
        return self.u(1, name) == 1

    def ue(self, name: str, maximum: int | None = None) -> int:
        rest = self.value & ((1 << self.left) - 1)
        if rest == 0:
            raise H264Error("bad_sps", f"truncated at {name}")
        zeros = self.left - rest.bit_length()
        if zeros > _MAX_LEADING_ZEROS:
            raise H264Error("bad_sps", f"{name}: {zeros} leading zero bits")
        self.left -= zeros
        value = self.u(zeros + 1, name) - 1
        if maximum is not None and value > maximum:
            raise H264Error("bad_sps", f"{name} = {value} > {maximum}")
        return value

    def se(self, name: str) -> int:
        k = self.ue(name)
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _skip_scaling_list(bits: _Bits, size: int, name: str) -> None:
    """scaling_list() of 7.3.2.1.1.1: only its length matters here, but the deltas decide when
    it stops (a next scale of 0 repeats the last one to the end)."""
    last = nxt = 8
    for _ in range(size):
        if nxt != 0:
            delta = bits.se(name)
            if not -128 <= delta <= 127:
                raise H264Error("bad_sps", f"{name}: delta_scale {delta}")
            nxt = (last + delta + 256) % 256
        last = nxt if nxt != 0 else last


def parse_sps(nal: bytes) -> SequenceParameterSet:
    """Parse an SPS NAL unit (header byte included, emulation-prevention bytes still in) up to its
    frame cropping; raises `H264Error("bad_sps", ...)` if it is truncated or out of range."""
    if not nal or nal[0] & 0x1F != NAL_SPS:
        raise H264Error("bad_sps", "not an SPS NAL unit")
    bits = _Bits(unescape_rbsp(nal[1:]))
    profile_idc = bits.u(8, "profile_idc")
    bits.u(8, "constraint_flags")
    level_idc = bits.u(8, "level_idc")
    sps_id = bits.ue("seq_parameter_set_id", 31)
    chroma_format_idc = 1  # 4:2:0 when absent (7.4.2.1.1)
    separate = False
    depth_luma = depth_chroma = 8
    scaling = False
    if profile_idc in HIGH_PROFILES:
        chroma_format_idc = bits.ue("chroma_format_idc", 3)
        if chroma_format_idc == 3:
            separate = bits.flag("separate_colour_plane_flag")
        depth_luma = 8 + bits.ue("bit_depth_luma_minus8", 6)
        depth_chroma = 8 + bits.ue("bit_depth_chroma_minus8", 6)
        bits.flag("qpprime_y_zero_transform_bypass_flag")
        scaling = bits.flag("seq_scaling_matrix_present_flag")
        if scaling:
            for i in range(8 if chroma_format_idc != 3 else 12):
                if bits.flag(f"seq_scaling_list_present_flag[{i}]"):
                    _skip_scaling_list(bits, 16 if i < 6 else 64, f"scaling_list[{i}]")
    bits.ue("log2_max_frame_num_minus4", 12)
    poc_type = bits.ue("pic_order_cnt_type", 2)
    if poc_type == 0:
        bits.ue("log2_max_pic_order_cnt_lsb_minus4", 12)
    elif poc_type == 1:
        bits.flag("delta_pic_order_always_zero_flag")
        bits.se("offset_for_non_ref_pic")
        bits.se("offset_for_top_to_bottom_field")
        cycle = bits.ue("num_ref_frames_in_pic_order_cnt_cycle", 255)
        for _ in range(cycle):
            bits.se("offset_for_ref_frame")
    bits.ue("max_num_ref_frames")
    bits.flag("gaps_in_frame_num_value_allowed_flag")
    # Level 6.2 allows 139264 macroblocks a frame; a side beyond 2^16 pixels is garbage.
    width_mbs = bits.ue("pic_width_in_mbs_minus1", 4095) + 1
    height_map_units = bits.ue("pic_height_in_map_units_minus1", 4095) + 1
    frame_mbs_only = bits.flag("frame_mbs_only_flag")
    if not frame_mbs_only:
        bits.flag("mb_adaptive_frame_field_flag")
    bits.flag("direct_8x8_inference_flag")
    crop = (0, 0, 0, 0)
    if bits.flag("frame_cropping_flag"):
        crop = (
            bits.ue("frame_crop_left_offset"),
            bits.ue("frame_crop_right_offset"),
            bits.ue("frame_crop_top_offset"),
            bits.ue("frame_crop_bottom_offset"),
        )
    coded_width = width_mbs * 16
    coded_height = (2 - frame_mbs_only) * height_map_units * 16
    # Crop units (7-19..7-22): samples for monochrome or separate planes, else the chroma
    # subsampling; vertically doubled for field coding.
    chroma_array_type = 0 if separate else chroma_format_idc
    if chroma_array_type == 0:
        unit_x, unit_y = 1, 2 - frame_mbs_only
    else:
        sub_w = 1 if chroma_array_type == 3 else 2
        sub_h = 2 if chroma_array_type == 1 else 1
        unit_x, unit_y = sub_w, sub_h * (2 - frame_mbs_only)
    left, right, top, bottom = crop
    width = coded_width - unit_x * (left + right)
    height = coded_height - unit_y * (top + bottom)
    if width <= 0 or height <= 0:
        raise H264Error("bad_sps", f"cropping {crop} leaves no picture of {coded_width}x{coded_height}")
    return SequenceParameterSet(
        profile_idc=profile_idc,
        level_idc=level_idc,
        sps_id=sps_id,
        chroma_format_idc=chroma_format_idc,
        separate_colour_plane=separate,
        bit_depth_luma=depth_luma,
        bit_depth_chroma=depth_chroma,
        scaling_matrix_present=scaling,
        frame_mbs_only=frame_mbs_only,
        coded_width=coded_width,
        coded_height=coded_height,
        crop_left=left,
        crop_right=right,
        crop_top=top,
        crop_bottom=bottom,
        width=width,
        height=height,
    )
