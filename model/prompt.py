"""The KoAlpaca prompt, the one format that training, serving and evaluation all use.

    ### 질문: {earlier question}

    ### 답변: {earlier answer}

    ### 질문: {question}

    ### 맥락: {context}          <- optional

    ### 답변:

Everything a user (or the model) wrote is neutralised first, so text like "### 답변:" or "<|endoftext|>" cannot close a
turn or forge one. Trimming drops the oldest turns first and never the current question.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

QUESTION = "### 질문:"
CONTEXT = "### 맥락:"
ANSWER = "### 답변:"
TURN_SEPARATOR = "\n\n"
END_OF_TEXT = "<|endoftext|>"
TRUNCATION_MARK = "…"

# Two or more '#' in a row could start a marker, and the generator stops at "###": replace them with the full-width
# sign, which reads the same to a person and tokenises differently.
_HASH_RUN = re.compile(r"#{2,}")
_SPECIAL_TOKEN_LIKE = re.compile(r"<\|[^<>|]{0,40}\|>")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MANY_BLANK_LINES = re.compile(r"\n{3,}")


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


@dataclass(frozen=True)
class PromptTurn:
    """One earlier exchange shown to the model: a question (with optional context) and the answer it got."""

    question: str
    answer: str
    context: str | None = None


@dataclass(frozen=True)
class BuiltPrompt:
    text: str
    token_count: int | None
    kept_turns: int
    dropped_turns: int
    question_truncated: bool = False
    excluded_dishes: tuple[str, ...] = field(default_factory=tuple)


def neutralise(text: str, special_tokens: Sequence[str] = ()) -> str:
    """Make user or model text safe to place inside the template.

    Removing a look-alike can join its neighbours into a new one ("<|endo<||>ftext|>"), so removal repeats until
    nothing changes: the text only shrinks, so this ends, and what is left holds no special token at all.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    tokens = sorted({t for t in special_tokens if t}, key=len, reverse=True)
    while True:
        before = text
        for token in tokens:
            text = text.replace(token, "")
        text = _SPECIAL_TOKEN_LIKE.sub("", text)
        if text == before:
            break
    text = _HASH_RUN.sub(lambda m: "＃" * len(m.group()), text)
    text = _MANY_BLANK_LINES.sub("\n\n", text)
    return text.strip()


def excluded_dishes_note(dishes: Sequence[str]) -> str:
    """The context line that tells the model which dishes the user already turned down."""
    names = ", ".join(dict.fromkeys(d.strip() for d in dishes if d.strip()))
    return f"이미 거절한 메뉴: {names}. 이 메뉴들은 빼고 다른 메뉴를 추천해 주세요." if names else ""


def format_turn(question: str, answer: str | None, context: str | None = None) -> str:
    """One turn. `answer=None` leaves the answer open, as the final turn of a prompt."""
    parts = [f"{QUESTION} {question}"]
    if context:
        parts.append(f"{CONTEXT} {context}")
    parts.append(ANSWER if answer is None else f"{ANSWER} {answer}")
    return TURN_SEPARATOR.join(parts)


def format_example(instruction: str, input_text: str = "", output: str | None = None) -> tuple[str, str]:
    """An Alpaca row as (prompt, answer), the split that training uses for answer-only labels."""
    prompt = build_prompt([], instruction, context=input_text or None).text
    return prompt, "" if output is None else " " + neutralise(output)


def _special_tokens(tokenizer: Tokenizer) -> list[str]:
    """Every token text the tokenizer would turn into a special id: its special tokens and its added tokens."""
    tokens = list(getattr(tokenizer, "all_special_tokens", None) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    tokens += [str(getattr(t, "content", t)) for t in added.values()]
    return [t for t in dict.fromkeys(tokens) if t] + [END_OF_TEXT]


def _count(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def _cut_to_tokens(tokenizer: Tokenizer, text: str, max_tokens: int) -> str:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return text
    cut = tokenizer.decode(ids[: max(max_tokens - 1, 0)], skip_special_tokens=True)
    return cut.rstrip("\ufffd").rstrip() + TRUNCATION_MARK


def build_prompt(
    turns: Sequence[PromptTurn],
    question: str,
    *,
    context: str | None = None,
    excluded_dishes: Sequence[str] = (),
    tokenizer: Tokenizer | None = None,
    budget: int | None = None,
) -> BuiltPrompt:
    """Build the prompt for `question` after the earlier `turns` (oldest first).

    With a tokenizer and a token budget, the oldest turns are dropped until the prompt fits; if the question alone
    does not fit, it is cut and `question_truncated` is set. Without them, nothing is trimmed.
    """
    specials = _special_tokens(tokenizer) if tokenizer is not None else [END_OF_TEXT]
    clean_question = neutralise(question, specials)
    clean_context = _context_block(context, excluded_dishes, specials)
    history = [
        format_turn(neutralise(t.question, specials), neutralise(t.answer, specials),
                    neutralise(t.context, specials) if t.context else None)
        for t in turns
    ]
    if tokenizer is None or budget is None:
        text = TURN_SEPARATOR.join([*history, format_turn(clean_question, None, clean_context)])
        count = _count(tokenizer, text) if tokenizer is not None else None
        return BuiltPrompt(text, count, len(history), 0, False, tuple(excluded_dishes))
    final, final_tokens, truncated = _fit_final_turn(tokenizer, clean_question, clean_context, budget)
    kept, text, count = _fit_history(tokenizer, history, final, final_tokens, budget)
    return BuiltPrompt(text, count, len(kept), len(history) - len(kept), truncated, tuple(excluded_dishes))


def _context_block(context: str | None, excluded_dishes: Sequence[str], specials: Sequence[str]) -> str | None:
    """The final turn's context: the caller's, then the note on turned-down dishes."""
    parts = [neutralise(context, specials)] if context else []
    note = excluded_dishes_note([neutralise(d, specials) for d in excluded_dishes])
    if note:
        parts.append(note)
    return "\n".join(p for p in parts if p) or None


def _fit_final_turn(tokenizer: Tokenizer, question: str, context: str | None, budget: int) -> tuple[str, int, bool]:
    """The final turn and its token count within `budget`, and whether its question had to be cut."""
    final = format_turn(question, None, context)
    final_tokens = _count(tokenizer, final)
    if final_tokens <= budget:
        return final, final_tokens, False
    # The question is cut rather than the dish note: the note is what keeps a retry from repeating itself.
    frame_tokens = _count(tokenizer, format_turn("", None, context))
    question = _cut_to_tokens(tokenizer, question, max(budget - frame_tokens - 2, 1))
    final = format_turn(question, None, context)
    final_tokens = _count(tokenizer, final)
    if final_tokens > budget:
        final = _cut_to_tokens(tokenizer, final, budget)
        final_tokens = _count(tokenizer, final)
    return final, final_tokens, True


def _fit_history(tokenizer: Tokenizer, history: Sequence[str], final: str, final_tokens: int,
                 budget: int) -> tuple[list[str], str, int]:
    """The newest turns that fit in `budget` before the final turn: (kept turns, prompt text, its token count)."""
    # Newest turns are kept first; the separator between pieces is counted with each kept turn.
    kept: list[str] = []
    used = final_tokens
    sep_tokens = _count(tokenizer, TURN_SEPARATOR)
    for turn_text in reversed(history):
        cost = _count(tokenizer, turn_text) + sep_tokens
        if used + cost > budget:
            break
        kept.insert(0, turn_text)
        used += cost
    text = TURN_SEPARATOR.join([*kept, final])
    count = _count(tokenizer, text)
    # Token merges across piece boundaries can make the whole slightly longer than the sum of its parts.
    while count > budget and kept:
        kept.pop(0)
        text = TURN_SEPARATOR.join([*kept, final])
        count = _count(tokenizer, text)
    return kept, text, count
