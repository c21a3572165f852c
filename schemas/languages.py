"""Zoom's transcript language codes (RTMS_TRANSCRIPT_LANGUAGE) with names and BCP-47 tags.

The codes are Zoom's (the data handshake's `src_language`, a transcript's `language`); -1 means
"none / auto-detect". An unknown or absent code reads as tag "und" (BCP-47 "undetermined"), so a code
Zoom adds later never breaks a consumer."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LANGUAGES", "UNDETERMINED", "Language", "language", "language_tag"]

UNDETERMINED = "und"


@dataclass(frozen=True, slots=True)
class Language:
    """One RTMS transcript language.

    `spaced` is False for scripts written without spaces between words (Chinese, Cantonese,
    Japanese, Thai): transcript fragments in them are joined without inserting a space.
    """

    code: int
    name: str
    tag: str
    spaced: bool = True


_TABLE = (
    (-1, "NONE", UNDETERMINED),
    (0, "ARABIC", "ar"),
    (1, "BENGALI", "bn"),
    (2, "CANTONESE", "yue"),
    (3, "CATALAN", "ca"),
    (4, "CHINESE_SIMPLIFIED", "zh-Hans"),
    (5, "CHINESE_TRADITIONAL", "zh-Hant"),
    (6, "CZECH", "cs"),
    (7, "DANISH", "da"),
    (8, "DUTCH", "nl"),
    (9, "ENGLISH", "en"),
    (10, "ESTONIAN", "et"),
    (11, "FINNISH", "fi"),
    (12, "FRENCH_CANADA", "fr-CA"),
    (13, "FRENCH_FRANCE", "fr-FR"),
    (14, "GERMAN", "de"),
    (15, "HEBREW", "he"),
    (16, "HINDI", "hi"),
    (17, "HUNGARIAN", "hu"),
    (18, "INDONESIAN", "id"),
    (19, "ITALIAN", "it"),
    (20, "JAPANESE", "ja"),
    (21, "KOREAN", "ko"),
    (22, "MALAY", "ms"),
    (23, "PERSIAN", "fa"),
    (24, "POLISH", "pl"),
    (25, "PORTUGUESE", "pt"),
    (26, "ROMANIAN", "ro"),
    (27, "RUSSIAN", "ru"),
    (28, "SPANISH", "es"),
    (29, "SWEDISH", "sv"),
    (30, "TAGALOG", "tl"),
    (31, "TAMIL", "ta"),
    (32, "TELUGU", "te"),
    (33, "THAI", "th"),
    (34, "TURKISH", "tr"),
    (35, "UKRAINIAN", "uk"),
    (36, "VIETNAMESE", "vi"),
)
_UNSPACED = frozenset({"yue", "zh-Hans", "zh-Hant", "ja", "th"})

LANGUAGES: dict[int, Language] = {
    code: Language(code, name, tag, tag not in _UNSPACED) for code, name, tag in _TABLE
}
"""Every RTMS_TRANSCRIPT_LANGUAGE code Zoom documents, -1 (NONE) to 36 (VIETNAMESE)."""


def language(code: int | None) -> Language | None:
    """The language of a Zoom code; None for an absent or unknown code."""
    return None if code is None else LANGUAGES.get(code)


def language_tag(code: int | None) -> str:
    """The BCP-47 tag of a Zoom code; "und" for -1 (auto), an absent or an unknown code."""
    lang = language(code)
    return UNDETERMINED if lang is None else lang.tag
