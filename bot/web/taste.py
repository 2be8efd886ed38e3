"""The page's taste panel: the profile shown in the shared copy (bot/taste/replies.py), allergies and diets as
checkboxes, and the dislikes and likes with a way to forget one. Every change goes through the service's taste desk,
as Telegram's /taste buttons do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.service.conversation import ConversationService
from bot.taste import replies as taste_replies
from bot.taste.profile import ALLERGEN_ORDER, DIETS, TasteProfile
from bot.web.chat import RELOAD_PAGE, BadBrowser, user_of

DIET_LABELS = {d.label: code for code, d in DIETS.items()}
NOTHING_TO_FORGET = "지울 항목을 먼저 골라 주세요."


@dataclass(frozen=True)
class TasteView:
    """What the panel shows: the profile as text, the checked allergies and diets, the dislikes and likes."""

    text: str
    allergies: list[str]
    diets: list[str]
    others: list[str]  # "싫어하는 것: 오이" … (the choices of the forget list)


def view(profile: TasteProfile) -> TasteView:
    others = [f"{taste_replies.SECTION_TITLES[i.kind]}: {i.label}" for i in profile.items
              if i.kind in ("dislike", "like")]
    return TasteView(taste_replies.profile_text(profile), list(profile.allergies),
                     [DIETS[c].label for c in profile.diets if c in DIETS], others)


class TastePanel:
    def __init__(self, service: ConversationService) -> None:
        self.service = service

    @property
    def available(self) -> bool:
        return self.service.taste is not None

    async def show(self, key: Any) -> TasteView:
        desk = self.service.taste
        if desk is None:
            return TasteView(taste_replies.TASTE_UNAVAILABLE, [], [], [])
        try:
            return view(await desk.store.profile(user_of(key)))
        except BadBrowser:
            return TasteView(RELOAD_PAGE, [], [], [])

    async def save(self, key: Any, allergies: list[str], diets: list[str]) -> tuple[TasteView, str]:
        """Switch what the checkboxes changed; returns the new view and what was done, in the shared copy."""
        desk = self.service.taste
        if desk is None:
            return await self.show(key), taste_replies.TASTE_UNAVAILABLE
        user = user_of(key)
        before = await desk.store.profile(user)
        done = []
        wanted = {a for a in allergies or [] if a in ALLERGEN_ORDER}
        for name in ALLERGEN_ORDER:
            if (name in wanted) != (name in before.allergies):
                now = await desk.toggle_allergy(user, ALLERGEN_ORDER.index(name))
                done.append(taste_replies.allergy_switched(name, bool(now)) + ".")
        wanted_diets = {DIET_LABELS[d] for d in diets or [] if d in DIET_LABELS}
        for code, diet in DIETS.items():
            if (code in wanted_diets) != (code in before.diets):
                now = await desk.toggle_diet(user, code)
                done.append(taste_replies.diet_switched(diet.label, bool(now)) + ".")
        return await self.show(key), " ".join(done) or "바뀐 것이 없어요."

    async def forget_item(self, key: Any, shown: str | None) -> tuple[TasteView, str]:
        desk = self.service.taste
        if desk is None:
            return await self.show(key), taste_replies.TASTE_UNAVAILABLE
        if not shown:
            return await self.show(key), NOTHING_TO_FORGET
        user = user_of(key)
        for item_id, item in await desk.store.items(user):
            if f"{taste_replies.SECTION_TITLES[item.kind]}: {item.label}" == shown:
                await desk.remove(user, item_id)
                return await self.show(key), taste_replies.item_removed(item.label) + "."
        return await self.show(key), NOTHING_TO_FORGET
