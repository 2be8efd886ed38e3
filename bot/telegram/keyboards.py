"""Every inline keyboard the bot sends, and the parsing of what its buttons send back.

Callback data, at most 64 bytes, always parsed strictly (anything forged, malformed or too long is None) and always
checked for ownership by whoever handles it. Buttons already in users' chats stay valid, so these formats never
change:
- `retry:<turn>`: "다른 거" on that answer.
- `vote:<turn>:up` / `vote:<turn>:down`: a 👍/👎 on that answer (the latest press wins; the same one twice counts once).
- `forget:yes:<user>` / `forget:no:<user>`: the /forget confirmation; only <user> may press it.
- `tc:y:<turn>` / `tc:n:<turn>`: confirm or decline the taste statement in that user turn.
- `tt:<op>:<arg>:<user>`: a /taste edit (a: toggle the allergen at ALLERGEN_ORDER[arg], d: toggle diet arg,
  x: remove item id arg, v: show section arg); only <user> may press it.
"""

from __future__ import annotations

import re

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.service.contract import Answer

MAX_CALLBACK_BYTES = 64
TURN_ID = r"[1-9][0-9]{0,18}"
MAX_TURN_ID = 2**63 - 1  # SQLite's largest rowid; PostgreSQL's INTEGER ids stop far below
RETRY_DATA = re.compile(rf"retry:({TURN_ID})")
VOTE_DATA = re.compile(rf"vote:({TURN_ID}):(up|down)")
FORGET_DATA = re.compile(r"forget:(yes|no):([1-9][0-9]{0,19})")
CONFIRM_DATA = re.compile(r"tc:([ynd]):([1-9][0-9]{0,17})")
LEARN_DATA = re.compile(r"tl:([yn]):([1-9][0-9]{0,17})")
EDIT_DATA = re.compile(r"tt:([adxv]):([0-9a-z]{1,18}):([1-9][0-9]{0,19})")
RETRY_LABEL = "🔄 다른 거"
VOTE_LABELS = {"up": "👍", "down": "👎"}
CHOSEN_MARK = " ✓"


def _match(pattern: re.Pattern[str], data: str | None) -> re.Match[str] | None:
    if not data or len(data.encode()) > MAX_CALLBACK_BYTES:
        return None
    return pattern.fullmatch(data)


def turn_id_in(text: str) -> int | None:
    """A turn id matched by TURN_ID, or None past the largest id a database can hold."""
    value = int(text)
    return value if value <= MAX_TURN_ID else None


def parse_retry(data: str | None) -> int | None:
    """The turn id in "retry:<id>", or None for anything forged, malformed or too long."""
    found = _match(RETRY_DATA, data)
    return turn_id_in(found.group(1)) if found else None


def parse_vote(data: str | None) -> tuple[int, bool] | None:
    """(turn id, up) from "vote:<id>:up|down", or None for anything forged, malformed or too long."""
    found = _match(VOTE_DATA, data)
    turn_id = turn_id_in(found.group(1)) if found else None
    return (turn_id, found.group(2) == "up") if found and turn_id is not None else None


def parse_forget(data: str | None) -> tuple[bool, int] | None:
    """(yes, owner) from "forget:yes|no:<user>"."""
    found = _match(FORGET_DATA, data)
    return (found.group(1) == "yes", int(found.group(2))) if found else None


def parse_confirm(data: str | None) -> tuple[str, int] | None:
    """(choice, turn) from "tc:<y|n|d>:<turn>": y yes (an unsure allergen: an allergy), d yes but only disliked, n no."""
    found = _match(CONFIRM_DATA, data)
    return (found.group(1), int(found.group(2))) if found else None


def parse_learn(data: str | None) -> tuple[bool, int] | None:
    """(yes, question id) from "tl:<y|n>:<id>": the answer to a dislike learned from turn-downs."""
    found = _match(LEARN_DATA, data)
    return (found.group(1) == "y", int(found.group(2))) if found else None


def learn_keyboard(question_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton("예, 덜 추천해 주세요", callback_data=f"tl:y:{question_id}"),
                                  InlineKeyboardButton("아니요", callback_data=f"tl:n:{question_id}")]])


def parse_edit(data: str | None) -> tuple[str, str, int] | None:
    found = _match(EDIT_DATA, data)
    return (found.group(1), found.group(2), int(found.group(3))) if found else None


def feedback_keyboard(
    turn_id: int, *, retry: bool, votes: bool, chosen: str | None = None
) -> InlineKeyboardMarkup | None:
    """One row: "다른 거" when it is still allowed, then 👍 and 👎 (the chosen one marked ✓); None when empty."""
    row = [InlineKeyboardButton(RETRY_LABEL, callback_data=f"retry:{turn_id}")] if retry else []
    if votes:
        row += [InlineKeyboardButton(label + (CHOSEN_MARK if vote == chosen else ""),
                                     callback_data=f"vote:{turn_id}:{vote}") for vote, label in VOTE_LABELS.items()]
    return InlineKeyboardMarkup([row]) if row else None


def confirm_keyboard(question_turn_id: int, *, unsure: bool = False) -> InlineKeyboardMarkup:
    """예/아니요; for an unsure allergen ("우유 마시면 배 아파") the user says which kind it is."""
    if unsure:
        return InlineKeyboardMarkup([[InlineKeyboardButton("알레르기예요", callback_data=f"tc:y:{question_turn_id}"),
                                      InlineKeyboardButton("그냥 싫어해요", callback_data=f"tc:d:{question_turn_id}"),
                                      InlineKeyboardButton("아니요", callback_data=f"tc:n:{question_turn_id}")]])
    return InlineKeyboardMarkup([[InlineKeyboardButton("예", callback_data=f"tc:y:{question_turn_id}"),
                                  InlineKeyboardButton("아니요", callback_data=f"tc:n:{question_turn_id}")]])


def forget_keyboard(user_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton("삭제", callback_data=f"forget:yes:{user_id}"),
                                  InlineKeyboardButton("취소", callback_data=f"forget:no:{user_id}")]])


def answer_keyboard(answer: Answer, *, votes: bool = True) -> InlineKeyboardMarkup | None:
    if answer.status == "ok":  # a refused premise gets no "다른 거" (it would only refuse again), nor 👍/👎
        return feedback_keyboard(answer.turn_id, retry=answer.can_retry, votes=votes and answer.can_vote)
    if answer.status == "ask":  # a taste statement to confirm before it is remembered
        return confirm_keyboard(answer.question_turn_id, unsure=bool(answer.unsure))
    return None
