"""Taste in the terminal chat: the y/N line that confirms a statement, and `/taste` with text arguments in place of
Telegram's buttons:

    /taste                     the profile
    /taste 알레르기 새우        switch an allergy on or off (any word for it: 계란, 갑각류 …)
    /taste 식단 채식            switch a diet on or off (채식, 비건, 돼지고기, 소고기, 다이어트)
    /taste 지우기 오이          forget one item
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bot.service.contract import Answer
from bot.service.conversation import ConversationService
from bot.taste import replies as taste_replies
from bot.taste.profile import ALLERGEN_ORDER, DIETS, allergens_of

YES = {"y", "yes", "예", "네", "응", "어", "ㅇ", "ㅇㅇ", "그래", "좋아"}
NO = {"", "n", "no", "아니", "아니요", "아니오", "ㄴ", "ㄴㄴ", "싫어", "됐어"}
DIET_WORDS = {"채식": "veg", "베지테리언": "veg", "비건": "vegan", "돼지고기": "nopork", "소고기": "nobeef",
              "쇠고기": "nobeef", "다이어트": "light", "저칼로리": "light", **{code: code for code in DIETS}}
USAGE = "고치기: /taste 알레르기 새우 · /taste 식단 채식 · /taste 지우기 오이 (알레르기와 식단은 한 번 더 하면 꺼져요)"
ASK_SUFFIX = " (y/N)"
UNSURE_SUFFIX = " (알레르기 / 싫어함 / 아니요)"
ALLERGY_WORDS = {"a", "1", "알레르기", "알러지", "알레르기예요", "알레르기야", "y", "yes", "예", "네", "응"}
DISLIKE_WORDS = {"d", "2", "싫어함", "싫어", "싫어해", "싫어해요", "그냥 싫어해요", "그냥 싫어", "싫어하는 거"}


async def confirm(
    service: ConversationService, asked: Answer, read_line: Callable[[], Awaitable[str | None]],
    say: Callable[[str], None], *, chat_id: int, user_id: int, on_partial: Any = None,
) -> tuple[Answer | None, str | None]:
    """Ask the y/N question of a taste statement (or, for an unsure allergen, which kind it is), remember (or not),
    and return the answer to the question that came with it (if it was not answered at once), and the line read
    when it was no choice: a new message, handled next. An empty line or the end of input is a no."""
    say((asked.confirm or asked.text) + (UNSURE_SUFFIX if asked.unsure else ASK_SUFFIX))
    line = await read_line()
    reply = (line or "").strip().lower()
    if asked.unsure:
        accept, unsure_as = reply in ALLERGY_WORDS | DISLIKE_WORDS, "dislike" if reply in DISLIKE_WORDS else "allergy"
        chosen = accept or reply in NO - {"싫어"}
    else:
        accept, unsure_as = reply in YES, "allergy"
        chosen = accept or reply in NO
    unread = line if line is not None and not chosen else None

    async def settled(text: str) -> None:
        say(text)

    choice = await service.settle_taste(chat_id, user_id, asked.question_turn_id, accept, on_settled=settled,
                                        on_partial=on_partial, unsure_as=unsure_as)
    return choice.answer, unread


async def learned(
    service: ConversationService, asked: Answer, read_line: Callable[[], Awaitable[str | None]],
    say: Callable[[str], None], *, user_id: int,
) -> str | None:
    """Ask a learned question ("국물 요리는 별로세요? …") y/N and keep the answer; returns a line that was neither."""
    say(f"{asked.confirm}{ASK_SUFFIX}")
    line = await read_line()
    reply = (line or "").strip().lower()
    accept = reply in YES
    say(await service.settle_learned(user_id, asked.learn_id, accept))
    return line if line is not None and not accept and reply not in NO else None


async def command(service: ConversationService, user_id: int, text: str) -> str:
    """`/taste …` as one reply text."""
    desk = service.taste
    if desk is None:
        return taste_replies.TASTE_UNAVAILABLE
    words = text.split()[1:]
    if not words:
        return f"{taste_replies.profile_text(await desk.store.profile(user_id))}\n{USAGE}"
    what, arg = words[0], " ".join(words[1:])
    if what in ("알레르기", "allergy") and arg:
        names = [a for a in allergens_of(arg) if a in ALLERGEN_ORDER]
        if not names:
            return f"알레르기 재료는 이 중에서 골라 주세요: {', '.join(ALLERGEN_ORDER)}"
        done = []
        for name in names:
            now = await desk.toggle_allergy(user_id, ALLERGEN_ORDER.index(name))
            done.append(taste_replies.allergy_switched(name, now) + ".")
        return " ".join(done)
    if what in ("식단", "diet") and arg:
        code = DIET_WORDS.get(arg.replace(" ", ""))
        if code is None:
            return f"식단은 이 중에서 골라 주세요: {', '.join(d.label for d in DIETS.values())}"
        now = await desk.toggle_diet(user_id, code)
        return taste_replies.diet_switched(DIETS[code].label, now) + "."
    if what in ("지우기", "빼기", "remove") and arg:
        for item_id, item in await desk.store.items(user_id):
            if item.label.replace(" ", "") == arg.replace(" ", "") or item.value == arg:
                await desk.remove(user_id, item_id)
                return taste_replies.item_removed(item.label) + "."
        return f"입맛 기록에 '{arg}' 항목이 없어요. /taste 로 기록을 보세요."
    return USAGE
