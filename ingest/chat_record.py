"""What a received chat message becomes on `rtms.raw.chat`: the privacy rule and the limits, pure.

`chat_content` gives the record's chat fields, None for a private message the policy drops, or raises
`ChatRefused` for input no record may carry (it is dead-lettered with its meeting named)."""

from __future__ import annotations

from typing import Any

from ingest.backend import ChatData
from schemas.limits import MAX_CHAT_RECIPIENTS, MAX_CHAT_TEXT_BYTES, MAX_ID_BYTES, clip_text, id_too_long

# RTMSFLOW_CHAT_PRIVATE: drop private messages, keep them with their recipients, or keep them flagged
# private but without saying to whom (rtmsflow.settings.CHAT_PRIVATE_CHOICES)
DROP, KEEP, UNADDRESSED = "drop", "keep", "unaddressed"


class ChatRefused(ValueError):
    """A chat message no raw record may carry; `error` names the rule."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(reason)
        self.error = error


def _valid_text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:  # lone surrogates (a JSON \ud800 escape): not Unicode text
        return False
    return True


def chat_content(message: ChatData, private_policy: str) -> dict[str, Any] | None:
    """The chat fields of the raw record (message_id, text, text_truncated, private, recipients)."""
    private = bool(message.recipients)
    if private and private_policy == DROP:
        return None
    if len(message.recipients) > MAX_CHAT_RECIPIENTS:
        raise ChatRefused(
            "TooManyRecipients", f"{len(message.recipients)} recipients, over {MAX_CHAT_RECIPIENTS}"
        )
    names = [message.text, message.participant_name or "", message.message_id or ""]
    names += [p.user_name or "" for p in message.recipients]
    if not all(_valid_text(n) for n in names):
        raise ChatRefused("InvalidText", "text, name or id is not valid Unicode (lone surrogate)")
    if message.message_id is not None and id_too_long(message.message_id):
        raise ChatRefused("InvalidMessageId", f"message_id longer than {MAX_ID_BYTES} bytes")
    text, truncated = clip_text(message.text, MAX_CHAT_TEXT_BYTES)
    recipients = []
    if private_policy == KEEP:
        recipients = [{"user_id": p.user_id, "user_name": p.user_name} for p in message.recipients]
    return {
        "message_id": message.message_id,
        "text": text,
        "text_truncated": truncated,
        "private": private,
        "recipients": recipients,
    }
