"""Who speaks when, and what they say: a lazily generated, seed-determined turn-taking script.

`utterances(seed, participants, duration_ms)` yields turns in time order, one at a time, so an
hour-long meeting costs no more memory than a minute. Turns never overlap; gaps of 0.3-1.2 s
separate them. Every boundary is a multiple of 20 ms (the audio packet grid).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

# The last turn ends this long before the meeting does, so its transcript is delivered in time.
TAIL_MS = 1_500
# Zoom delivers a transcript shortly after the utterance ends.
TRANSCRIPT_DELAY_MS = 400

_NAMES = (
    "Alice Chen", "Bruno Silva", "Chiara Rossi", "Dmitri Ivanov", "Emeka Okafor", "Fatima Zahra",
    "Gustav Lind", "Hana Sato", "Ines Moreau", "Jonas Weber", "Kavya Iyer", "Liam O'Brien",
    "Mei Lin", "Noah Cohen", "Olga Novak", "Pedro Alves", "Qi Wang", "Rosa Garcia", "Sven Berg",
    "Tara Singh", "Uma Patel", "Victor Hugo", "Wen Li", "Yara Haddad", "Zoe Martin",
)  # fmt: skip

_WORDS = (
    "the", "we", "should", "ship", "roadmap", "customer", "latency", "budget", "review", "next",
    "quarter", "kafka", "stream", "meeting", "agree", "think", "launch", "design", "test", "data",
    "because", "maybe", "today", "team", "plan", "risk", "metrics", "users", "release", "deadline",
    "feedback", "numbers", "deploy", "migrate", "cluster", "partition", "schema", "audio", "video",
    "transcript", "okay", "right", "so", "and", "then", "also", "really", "about", "with", "on",
)  # fmt: skip

# First Zoom-style participant id; later participants follow in steps of 1024 (16778240, 16779264, ...).
FIRST_USER_ID = 16_778_240
USER_ID_STEP = 1_024


@dataclass(frozen=True, slots=True)
class Participant:
    """A meeting participant as RTMS names them: an integer user id and a display name."""

    user_id: int
    user_name: str


@dataclass(frozen=True, slots=True)
class Utterance:
    """One turn: `speaker` (index into the participants) talks over [start_ms, end_ms)."""

    index: int
    speaker: int
    start_ms: int
    end_ms: int
    text: str


def make_participants(seed: int, count: int) -> list[Participant]:
    """`count` participants with Zoom-like ids and distinct names (shuffled by `seed`)."""
    if count < 1:
        raise ValueError(f"a meeting needs at least one participant, got {count}")
    names = list(_NAMES)
    random.Random(seed).shuffle(names)
    out: list[Participant] = []
    for i in range(count):
        name = names[i % len(names)]
        if i >= len(names):
            name = f"{name} {i // len(names) + 1}"
        out.append(Participant(FIRST_USER_ID + USER_ID_STEP * i, name))
    return out


def _grid(ms: float) -> int:
    return int(ms) // 20 * 20


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + rng.choice((".", ".", ".", "?", "!"))


def utterances(seed: int, participants: int, duration_ms: int) -> Iterator[Utterance]:
    """The meeting's turns in time order; the same arguments always give the same turns."""
    rng = random.Random(seed * 1_000_003 + participants)
    t = _grid(rng.uniform(300, 900))
    speaker = 0
    index = 0
    end_limit = duration_ms - TAIL_MS
    while True:
        length = _grid(rng.uniform(1_200, 6_000))
        end = min(t + length, _grid(end_limit))
        if end - t < 400:
            return
        words = max(2, (end - t) // 330)  # ~3 words a second
        yield Utterance(index, speaker, t, end, _sentence(rng, words))
        index += 1
        t = end + _grid(rng.uniform(300, 1_200))
        if participants > 1 and rng.random() < 0.85:
            speaker = (speaker + rng.randrange(1, participants)) % participants


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One line of the meeting's chat: `sender` and `recipients` are participant indices (no
    recipients: to everyone); `offset_ms` is media time."""

    index: int
    offset_ms: int
    sender: int
    text: str
    recipients: tuple[int, ...] = ()


# The chat script: a message every few seconds, about one in three private to one participant.
CHAT_EVERY_MS = (1_000, 4_000)
_CHAT_LINES = (
    "slides are in the shared folder", "can you hear me?", "+1", "link: https://example.com/doc?id=42",
    "I'll take the action item", "brb", "agreed", "let's follow up offline", "what's the ETA?",
    "Grüße aus Zürich — ça va? 👋", "see the numbers in row 7 & 8 <draft>",
)  # fmt: skip


def chat_messages(seed: int, participants: int, duration_ms: int) -> Iterator[ChatMessage]:
    """The meeting's chat in time order; the same arguments always give the same messages."""
    rng = random.Random(seed * 7_000_003 + participants)
    t = _grid(rng.uniform(*CHAT_EVERY_MS))
    index = 0
    while t < duration_ms - TAIL_MS:
        sender = rng.randrange(participants)
        recipients: tuple[int, ...] = ()
        if participants > 1 and rng.random() < 0.35:
            recipients = ((sender + rng.randrange(1, participants)) % participants,)
        text = rng.choice(_CHAT_LINES) if rng.random() < 0.6 else _sentence(rng, rng.randint(2, 12))
        yield ChatMessage(index, t, sender, text, recipients)
        index += 1
        t += _grid(rng.uniform(*CHAT_EVERY_MS))
