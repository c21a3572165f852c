"""UtteranceAssembler (merge rule, derived times, partials, ids, restart) and schemas.languages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.conversation import make_participants, utterances
from processors.utterances import ESTIMATE_MS_PER_WORD, TranscriptPiece, Utterance, UtteranceAssembler
from schemas.languages import LANGUAGES, language, language_tag

T0 = 1_700_000_000_000
ALICE, BOB = 16_778_240, 16_779_264


def piece(
    who: int, start: int | None, end: int | None, text: str, *, ts: int | None = None, lang: int | None = 9
) -> TranscriptPiece:
    stamp = ts if ts is not None else (start if start is not None else T0)
    return TranscriptPiece(who, f"user {who}", stamp, text, start, end, lang)


def run(assembler: UtteranceAssembler, pieces: list[TranscriptPiece]) -> list[Utterance]:
    out = []
    for p in pieces:
        out += assembler.push(p)
    return out + assembler.flush()


# -- languages --------------------------------------------------------------------------------


def test_every_zoom_language_code_has_a_name_and_a_bcp47_tag() -> None:
    assert sorted(LANGUAGES) == list(range(-1, 37))
    assert LANGUAGES[0].name == "ARABIC" and LANGUAGES[36].name == "VIETNAMESE"
    tags = {code: language_tag(code) for code in (2, 4, 5, 9, 12, 13, 30)}
    assert tags == {2: "yue", 4: "zh-Hans", 5: "zh-Hant", 9: "en", 12: "fr-CA", 13: "fr-FR", 30: "tl"}
    assert len({lang.tag for lang in LANGUAGES.values()}) == len(LANGUAGES)


def test_unknown_absent_or_auto_language_is_und() -> None:
    assert language_tag(-1) == language_tag(None) == language_tag(99) == "und"
    assert language(99) is None and language(9) is not None


# -- merge rule -------------------------------------------------------------------------------


def test_fragments_of_one_speaker_become_one_utterance() -> None:
    out = run(
        UtteranceAssembler("s1"),
        [piece(ALICE, T0, T0 + 800, "We should"), piece(ALICE, T0 + 800, T0 + 1_500, "ship it.")],
    )
    assert len(out) == 1
    u = out[0]
    assert (u.text, u.start_ms, u.end_ms, u.piece_count) == ("We should ship it.", T0, T0 + 1_500, 2)
    assert (u.utterance_id, u.seq, u.final, u.language_code, u.language) == ("s1/0", 0, True, 9, "en")
    assert (u.speaker.participant_id, u.speaker.participant_name, u.speaker.channel_id) == (
        ALICE,
        f"user {ALICE}",
        None,
    )


def test_a_speaker_change_closes_the_utterance() -> None:
    out = run(
        UtteranceAssembler("s"), [piece(ALICE, T0, T0 + 500, "Hi."), piece(BOB, T0 + 500, T0 + 900, "Hello.")]
    )
    assert [(u.speaker.participant_id, u.text, u.seq) for u in out] == [(ALICE, "Hi.", 0), (BOB, "Hello.", 1)]


def test_a_pause_longer_than_the_limit_closes_the_utterance() -> None:
    def two(pause: int) -> list[str]:
        pieces = [
            piece(ALICE, T0, T0 + 500, "One."),
            piece(ALICE, T0 + 500 + pause, T0 + 900 + pause, "Two."),
        ]
        return [u.text for u in run(UtteranceAssembler("s", max_pause_ms=700), pieces)]

    assert two(700) == ["One. Two."]
    assert two(701) == ["One.", "Two."]


def test_pieces_carrying_the_same_utterance_timestamp_merge_across_a_long_pause() -> None:
    pieces = [
        piece(ALICE, T0, T0 + 500, "Well,", ts=T0),
        piece(ALICE, T0 + 3_000, T0 + 3_500, "maybe.", ts=T0),
    ]
    assert [u.text for u in run(UtteranceAssembler("s"), pieces)] == ["Well, maybe."]


def test_a_language_change_or_a_cap_closes_the_utterance() -> None:
    switch = [
        piece(ALICE, T0, T0 + 500, "Hello", lang=9),
        piece(ALICE, T0 + 500, T0 + 900, "Bonjour", lang=13),
    ]
    assert [u.language for u in run(UtteranceAssembler("s"), switch)] == ["en", "fr-FR"]
    unnamed = [
        piece(ALICE, T0, T0 + 500, "Hello", lang=9),
        piece(ALICE, T0 + 500, T0 + 900, "again", lang=None),
    ]
    assert [u.text for u in run(UtteranceAssembler("s"), unnamed)] == ["Hello again"]
    long = [piece(ALICE, T0 + i * 1_000, T0 + (i + 1) * 1_000, f"w{i}") for i in range(5)]
    assert [u.piece_count for u in run(UtteranceAssembler("s", max_duration_ms=3_000), long)] == [3, 2]
    assert [u.piece_count for u in run(UtteranceAssembler("s", max_chars=5), long)] == [2, 2, 1]


def test_missing_start_comes_from_timestamp_and_missing_end_is_estimated_then_bounded() -> None:
    alone = run(UtteranceAssembler("s"), [piece(ALICE, None, None, "three words here", ts=T0 + 100)])
    assert (alone[0].start_ms, alone[0].end_ms) == (T0 + 100, T0 + 100 + 3 * ESTIMATE_MS_PER_WORD)
    bounded = run(
        UtteranceAssembler("s"),
        [piece(ALICE, T0, None, "three words here"), piece(BOB, T0 + 400, T0 + 900, "Yes.")],
    )
    assert [(u.start_ms, u.end_ms) for u in bounded] == [(T0, T0 + 400), (T0 + 400, T0 + 900)]
    reversed_times = run(UtteranceAssembler("s"), [piece(ALICE, T0 + 500, T0 + 200, "odd")])
    assert (reversed_times[0].start_ms, reversed_times[0].end_ms) == (T0 + 500, T0 + 500)


def test_starts_are_kept_in_order_across_utterances() -> None:
    out = run(
        UtteranceAssembler("s"),
        [piece(ALICE, T0 + 1_000, T0 + 1_500, "a"), piece(BOB, T0 + 900, T0 + 1_200, "b")],
    )
    assert [u.start_ms for u in out] == [T0 + 1_000, T0 + 1_000]
    assert out[1].end_ms == T0 + 1_200


def test_languages_without_spaces_are_joined_without_spaces() -> None:
    pieces = [piece(ALICE, T0, T0 + 300, "我们", lang=4), piece(ALICE, T0 + 300, T0 + 600, "发布", lang=4)]
    assert [u.text for u in run(UtteranceAssembler("s"), pieces)] == ["我们发布"]


def test_partials_update_the_open_utterance_under_the_same_id_until_final() -> None:
    assembler = UtteranceAssembler("s", partials=True)
    first = assembler.push(piece(ALICE, T0, T0 + 500, "We"))
    second = assembler.push(piece(ALICE, T0 + 500, T0 + 900, "agree."))
    third = assembler.push(piece(BOB, T0 + 1_000, T0 + 1_400, "Good."))
    assert [(u.utterance_id, u.text, u.final) for u in first + second] == [
        ("s/0", "We", False),
        ("s/0", "We agree.", False),
    ]
    assert [(u.utterance_id, u.text, u.final) for u in third] == [
        ("s/0", "We agree.", True),
        ("s/1", "Good.", False),
    ]
    assert [(u.utterance_id, u.final) for u in assembler.flush()] == [("s/1", True)]
    default = UtteranceAssembler("s")
    assert default.push(piece(ALICE, T0, T0 + 500, "We")) == []  # control: no partials by default


def test_tick_closes_a_silent_speaker_only_after_the_pause_limit() -> None:
    assembler = UtteranceAssembler("s", max_pause_ms=700)
    assembler.push(piece(ALICE, T0, T0 + 500, "Done."))
    assert assembler.tick(T0 + 1_200) == []
    closed = assembler.tick(T0 + 1_201)
    assert [(u.text, u.final) for u in closed] == [("Done.", True)]
    assert assembler.flush() == [] and assembler.open_piece_count == 0


def test_invalid_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        UtteranceAssembler("s", max_chars=0)


def test_emulator_turns_split_into_fragments_are_reassembled() -> None:
    people = make_participants(7, 3)
    turns = list(utterances(7, 3, 120_000))
    pieces = []
    for turn in turns:
        words = turn.text.split()
        cut = [0, len(words) // 3, 2 * len(words) // 3, len(words)]
        span = turn.end_ms - turn.start_ms
        who = people[turn.speaker]
        for k in range(3):
            if cut[k] == cut[k + 1]:
                continue
            pieces.append(
                TranscriptPiece(
                    who.user_id,
                    who.user_name,
                    T0 + turn.start_ms,  # Zoom: when the utterance began
                    " ".join(words[cut[k] : cut[k + 1]]),
                    T0 + turn.start_ms + span * k // 3,
                    T0 + turn.start_ms + span * (k + 1) // 3,
                    9,
                )
            )
    # Turns are 300-1200 ms apart: with a 250 ms pause limit no two turns merge, fragments always do.
    out = run(UtteranceAssembler("stream-a", max_pause_ms=250, max_duration_ms=60_000), pieces)
    assert [(u.speaker.participant_name, u.start_ms, u.end_ms, u.text) for u in out] == [
        (people[t.speaker].user_name, T0 + t.start_ms, T0 + t.end_ms, t.text) for t in turns
    ]
    assert [u.utterance_id for u in out] == [f"stream-a/{i}" for i in range(len(turns))]


# -- properties -------------------------------------------------------------------------------

words_st = st.lists(
    st.sampled_from(["we", "ship", "it", "okay", "kafka", "", "data"]), min_size=0, max_size=4
)


@st.composite
def piece_streams(draw: st.DrawFn) -> list[TranscriptPiece]:
    """Pieces in arrival order: speakers alternate at random, times move forward with pauses,
    some times and languages missing."""
    t = T0
    out = []
    for _ in range(draw(st.integers(0, 40))):
        t += draw(st.integers(0, 2_000))
        length = draw(st.integers(0, 3_000))
        out.append(
            TranscriptPiece(
                draw(st.sampled_from([ALICE, BOB])),
                "n",
                t if draw(st.booleans()) else t - draw(st.integers(0, 500)),
                " ".join(w for w in draw(words_st) if w),
                t if draw(st.integers(0, 4)) else None,
                t + length if draw(st.integers(0, 4)) else None,
                draw(st.sampled_from([None, 9, 9, 9, 13])),
                draw(st.sampled_from([None, None, "ch-1"])),
            )
        )
    return out


Limits = tuple[int, int, int]  # max_pause_ms, max_duration_ms, max_chars
limits_st = st.tuples(st.integers(0, 2_000), st.integers(1, 20_000), st.integers(1, 60))


def make(limits: Limits, next_seq: int = 0, last_start_ms: int | None = None) -> UtteranceAssembler:
    pause, duration, chars = limits
    return UtteranceAssembler(
        "s",
        max_pause_ms=pause,
        max_duration_ms=duration,
        max_chars=chars,
        next_seq=next_seq,
        last_start_ms=last_start_ms,
    )


@settings(max_examples=80, deadline=None)
@given(piece_streams(), limits_st)
def test_no_text_is_lost_or_duplicated_and_utterances_are_ordered(
    pieces: list[TranscriptPiece], limits: Limits
) -> None:
    out = run(make(limits), pieces)
    assert " ".join(u.text for u in out).split() == " ".join(p.text for p in pieces).split()
    assert sum(u.piece_count for u in out) == len(pieces)
    assert all(u.final for u in out)
    assert [u.start_ms for u in out] == sorted(u.start_ms for u in out)
    assert all(u.start_ms <= u.end_ms for u in out)
    assert [u.seq for u in out] == list(range(len(out)))
    assert all(u.utterance_id == f"s/{u.seq}" for u in out)
    assert all(len(u.text) <= limits[2] or u.piece_count == 1 for u in out)


@settings(max_examples=40, deadline=None)
@given(piece_streams(), limits_st)
def test_a_rerun_gives_the_same_utterances_and_ids(pieces: list[TranscriptPiece], limits: Limits) -> None:
    assert run(make(limits), pieces) == run(make(limits), pieces)


@settings(max_examples=80, deadline=None)
@given(piece_streams(), limits_st, st.data())
def test_restart_from_the_open_utterance_reproduces_the_undisturbed_output(
    pieces: list[TranscriptPiece], limits: Limits, data: st.DataObject
) -> None:
    expected = run(make(limits), pieces)
    crash = data.draw(st.integers(0, len(pieces)), label="crash after this many pieces")
    before = make(limits)
    emitted: list[Utterance] = []
    for p in pieces[:crash]:
        emitted += before.push(p)
    next_seq, last_start = before.resume_state()
    commit = crash - before.open_piece_count  # the first piece of the open utterance
    after = make(limits, next_seq, last_start)
    assert emitted + run(after, pieces[commit:]) == expected
