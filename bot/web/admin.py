"""The page's admin area: adapter reload and status, for the logins named in MECHURI_WEB_ADMINS (as MECHURI_ADMIN_IDS
names Telegram's admins). The area is shown only to them, and every call checks again: hiding is not a guard."""

from __future__ import annotations

from collections.abc import Collection

from bot.service import replies
from bot.service.conversation import ConversationService

RELOAD_USAGE = "불러올 어댑터 이름을 적어 주세요 (어댑터 폴더 안의 폴더)."


class AdminDesk:
    def __init__(self, service: ConversationService, admins: Collection[str]) -> None:
        self.service = service
        self.admins = frozenset(admins)

    def is_admin(self, username: str | None) -> bool:
        """Only a logged-in user (MECHURI_WEB_AUTH) can be one: without a login nobody on the page is."""
        return username is not None and username in self.admins

    def status(self, username: str | None) -> str:
        if not self.is_admin(username):
            return replies.ADMIN_ONLY
        return replies.format_status(self.service.status())

    async def reload(self, username: str | None, name: str) -> str:
        if not self.is_admin(username):
            return replies.ADMIN_ONLY
        if not (name or "").strip():
            return RELOAD_USAGE
        return await self.service.reload_report(name.strip())
