"""When a conversation can train an adapter: the rule training's chat loader enforces and
the feedback export applies, so feedback never exports a record `lorag train` refuses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

ROLES = ("system", "user", "assistant")


def conversation_problem(messages: Sequence[Mapping[str, object]]) -> str | None:
    """Why `messages` cannot train an adapter, or None: known roles only, a system message
    only first, a user turn, a final assistant turn (the text to learn), no empty message."""
    roles = [m.get("role") for m in messages]
    if any(role not in ROLES for role in roles):
        return f"roles are {', '.join(ROLES)}"
    if "system" in roles[1:]:
        return "a system message may only come first"
    if "user" not in roles:
        return "needs at least one user message"
    if roles[-1:] != ["assistant"]:
        return "must end with an assistant message (the text to learn)"
    if any(not str(m.get("content") or "").strip() for m in messages):
        return "a message is empty"
    return None
