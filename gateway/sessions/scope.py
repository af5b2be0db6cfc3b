"""What a session's token reaches: an app token only its own member, a POS token any member
of its merchant. Another merchant's member is answered exactly as an unknown one: no
existence oracle across merchants."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gateway.errors import Forbidden, Refused
from protocol.codes import ErrorCode

if TYPE_CHECKING:
    from gateway.auth import Principal


class Scope:
    """``owner_of`` tells the merchant a member belongs to (None: no such member)."""

    def __init__(self, owner_of: Callable[[str], Awaitable[str | None]]) -> None:
        self.owner_of = owner_of

    async def authorize_member(self, p: Principal, member: str) -> None:
        if p.kind == "app" and member != p.member:
            raise Forbidden("an app session may only reach its own member")
        if await self.owner_of(member) != p.merchant:
            raise Refused("no such member", ErrorCode.MEMBER_NOT_FOUND)

    @staticmethod
    def require_pos(p: Principal) -> None:
        if p.kind != "pos":
            raise Forbidden("only POS and shop integrations may change points")
