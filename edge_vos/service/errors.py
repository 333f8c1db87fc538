"""The error every check of a control request raises: it names the offending field, and the control thread
turns it into the error reply (docs/protocol.md). Client text quoted in it is cut short (`short`)."""

from __future__ import annotations

from typing import Any


class CommandError(ValueError):
    """An invalid command; `field` names the offending JSON field (empty for the whole message). `req` is the
    request's id when it could be read (the control thread echoes it; nothing else handles request ids)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        self.req: Any = None
        super().__init__(f"{field}: {message}" if field else message)

    def to_reply(self) -> dict[str, Any]:
        reply: dict[str, Any] = {"ok": False, "error": str(self)}
        if self.field:
            reply["field"] = self.field
        return reply



def short(text: str, limit: int = 40) -> str:
    """Client-supplied text quoted in an error or a log line, cut to a bounded length."""
    return text if len(text) <= limit else text[:limit] + "..."
