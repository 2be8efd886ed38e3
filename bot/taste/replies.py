"""The Korean copy of taste: confirming a statement, the /taste view, and the allergy lines of an answer.

Shared by every front end (bot/telegram/taste.py, bot/terminal/taste.py). Particles after a word we do not
know in advance come from kiwipiepy's Kiwi.join (bot.korean.with_particle); fixed words carry fixed particles.
None of these lines names a catalog dish: an allergen word is never a dish name (a test checks), so a fallback
cannot break the allergy guarantee itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.korean import with_particle
from bot.taste.profile import DIETS, TasteItem, TasteProfile

SECTION_TITLES = {"allergy": "알레르기", "diet": "식단", "dislike": "싫어하는 것", "like": "좋아하는 것"}
EMPTY_PROFILE = "아직 기억하고 있는 입맛이 없어요. \"나 새우 알레르기 있어\", \"오이 싫어해\"처럼 말로 알려 주셔도 돼요."
PROFILE_HINT = "알레르기가 있는 재료가 든 메뉴는 절대 추천하지 않아요. 식단과 싫어하는 것은 되도록 피하고, 좋아하는 것은 참고해요."
DECLINED = "알겠어요, 기억하지 않을게요. 이번 답에만 반영할게요."
DECLINED_NO_QUESTION = "알겠어요, 기억하지 않을게요."
TASTE_GONE = "이 버튼의 메시지를 찾을 수 없어요. 입맛은 다시 말씀해 주시거나 /taste 에서 고쳐 주세요."
LONG_NOT_READ = "메시지가 너무 길어서 뒷부분에 말씀하신 입맛은 저장하지 않았어요. 기억할 것은 짧게 다시 말씀해 주세요."
TASTE_UNAVAILABLE = "지금은 입맛 기록을 쓸 수 없어요 (메뉴 목록을 불러오지 못했어요). 잠시 후 다시 시도해 주세요."


def _join(words: Sequence[str]) -> str:
    return "·".join(words)


def _with_object(word: str) -> str:
    return with_particle(word, "를")


def confirm_question(items: Sequence[TasteItem]) -> str:
    """"새우 알레르기를 기억해 둘까요?" — one sentence for one kind of item, a short list for several."""
    kinds = {i.kind for i in items}
    if len(kinds) == 1:
        kind = next(iter(kinds))
        labels = [i.label for i in items]
        if kind == "allergy":
            return f"{_join(labels)} 알레르기를 기억해 둘까요?"
        if kind == "dislike":
            return f"{_with_object(_join(labels))} 싫어하신다고 기억해 둘까요?"
        if kind == "like":
            return f"{_with_object(_join(labels))} 좋아하신다고 기억해 둘까요?"
        if len(items) == 1:
            return f"{DIETS[items[0].value].remember} 기억해 둘까요?"
    return "이렇게 기억해 둘까요?\n" + summary(items)


def which_kind(allergens: Sequence[str]) -> str:
    """"우유 알레르기인가요, 아니면 그냥 싫어하시는 건가요?" — asked instead of guessing the milder kind."""
    return f"{_join(allergens)} 알레르기인가요, 아니면 그냥 싫어하시는 건가요?"


def ask_text(items: Sequence[TasteItem], unsure: Sequence[str]) -> str:
    """The question of a statement: what to remember, and which kind an unsure one is."""
    lines = [confirm_question(items)] if items else []
    if unsure:
        lines.append(which_kind(unsure))
    return "\n".join(lines)


def summary(items: Sequence[TasteItem]) -> str:
    lines = []
    for kind, title in SECTION_TITLES.items():
        labels = [i.label for i in items if i.kind == kind]
        if labels:
            lines.append(f"• {title}: {', '.join(labels)}")
    return "\n".join(lines)


def remembered(items: Sequence[TasteItem]) -> str:
    return "기억했어요 ✅\n" + summary(items) + "\n/taste 에서 언제든 보고 고칠 수 있어요."


def already_known(items: Sequence[TasteItem]) -> str:
    return "이미 기억하고 있어요.\n" + summary(items)


def profile_text(profile: TasteProfile) -> str:
    if not profile:
        return EMPTY_PROFILE
    return "🍽 내 입맛 기록\n" + summary(profile.items) + "\n\n" + PROFILE_HINT


def fallback(allergens: Sequence[str], *, asked_for_it: bool) -> str:
    """What the user sees instead of an answer that still named a dish with one of their allergens."""
    if asked_for_it:
        return (f"말씀하신 메뉴에는 알레르기 재료({_join(allergens)})가 들어 있어서 추천해 드릴 수 없어요. "
                "다른 메뉴를 물어봐 주시면 안전한 것으로 골라 볼게요.")
    return (f"죄송해요, {_join(allergens)} 알레르기에 안전한 메뉴를 고르지 못했어요. "
            "질문을 조금 바꿔서 다시 물어봐 주세요.")


def safe_suggestion(dishes: Sequence[str]) -> str:
    """Beside an answer that named no dish, for a user with allergies: catalog dishes that fit and carry none of them."""
    return f"알레르기 걱정 없이 고를 만한 메뉴로는 {', '.join(dishes)} 같은 것도 있어요."


def check_ingredients(allergens: Sequence[str]) -> str:
    """Added when the user has allergies and the answer names no dish the catalog knows (so nothing guaranteed). One
    short line: past three allergens it names none (the user knows them; a list of 19 is noise)."""
    if len(allergens) > 3:
        return "※ 재료에 알레르기 성분이 들어 있지 않은지 꼭 확인해 주세요."
    return f"※ 재료에 알레르기 성분({_join(allergens)})이 들어 있지 않은지 꼭 확인해 주세요."


def allergy_switched(name: str, on: bool) -> str:
    """A /taste edit of an allergy, for a toast or a line."""
    return f"{name} 알레르기를 {'기억했어요' if on else '지웠어요'}"


def diet_switched(label: str, on: bool) -> str:
    return f"식단: {label} {'켰어요' if on else '껐어요'}"


def item_removed(label: str) -> str:
    return f"{label} 지웠어요"
