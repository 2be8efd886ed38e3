"""Small readings of kiwipiepy tokens the taste reader shares: lemmas, negation, where a statement said as a fact
ends, and what counts as content left over (a question that came with a statement)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.taste.profile import DIETS
from bot.taste.words import CONDITIONAL, CONTENT_TAGS, DIET_NOUNS, FILLERS, QUESTION_ENDINGS


def lemma_of(token: Any) -> str:
    lemma = getattr(token, "lemma", "") or token.form
    return lemma if token.tag.startswith("V") else token.form


def next_is(tokens: Sequence[Any], i: int, forms: tuple[str, ...], tag: str) -> bool:
    return i + 1 < len(tokens) and tokens[i + 1].tag.startswith(tag) and tokens[i + 1].form in forms


def diet_noun(tokens: Sequence[Any], i: int) -> tuple[str, int] | None:
    """The diet a noun names, and how many tokens it spans ("채식 주의자", "식단 조절")."""
    if i + 1 < len(tokens) and tokens[i + 1].tag.startswith("NN"):
        joined = tokens[i].form + tokens[i + 1].form
        if joined in DIET_NOUNS:
            return DIET_NOUNS[joined], 2
    code = DIET_NOUNS.get(tokens[i].form)
    return (code, 1) if code in DIETS else None


def is_negated(tokens: Sequence[Any], i: int) -> bool:
    """안/못 right before the predicate, or 지 않다 / 지 못하다 after it."""
    before = any(tokens[j].tag == "MAG" and tokens[j].form in ("안", "못") for j in range(max(0, i - 2), i))
    after = (i + 2 < len(tokens) and tokens[i + 1].form == "지" and tokens[i + 1].tag == "EC"
             and lemma_of(tokens[i + 2]) in ("않다", "못하다"))
    return before or after


def fact_end(tokens: Sequence[Any], j: int, *, allow: tuple[str, ...], need_predicate: bool = False) -> int | None:
    """Where a statement about oneself ends (the index after its ending), or None when the predicate is not said as
    a fact: a question, a condition, a modifier, a negation (없다) or no ending at all."""
    predicate = False
    while j < len(tokens):
        token, lemma = tokens[j], lemma_of(tokens[j])
        if lemma == "없다":
            return None
        if token.tag in ("VV", "VA", "VCP", "XSV", "XSA", "VX", "EP") or lemma in allow or token.tag in ("JKS", "JX"):
            predicate = predicate or token.tag in ("VV", "VA", "VCP", "XSV", "XSA", "VX")
            j += 1
            continue
        if token.tag == "EC" and j + 1 < len(tokens) and tokens[j + 1].tag == "VX":  # 채식하고 있어, 먹지 않아
            j += 1
            continue
        break
    if j >= len(tokens) or tokens[j].tag in ("SF", "SP", "SW", "SE"):
        return None if need_predicate and not predicate else after_marks(tokens, j)
    token = tokens[j]
    if token.tag == "EF":
        ends_question = token.form.endswith(QUESTION_ENDINGS) or question_mark_after(tokens, j)
        return None if ends_question else after_marks(tokens, j + 1)
    if token.tag == "EC":
        return None if token.form in CONDITIONAL else after_marks(tokens, j + 1)
    if token.tag == "ETN":
        return after_marks(tokens, j + 1)
    if token.tag == "ETM":  # "있는데" reads as 있 + 는 + 데: a connective, not a modifier
        if j + 1 < len(tokens) and tokens[j + 1].form == "데" and tokens[j + 1].tag == "NNB":
            return j + 2
        if j + 1 < len(tokens) and tokens[j + 1].form in ("편", "체질"):  # "있는 편이에요", "못 먹는 체질이야"
            return fact_end(tokens, j + 2, allow=("이다",))
        return None
    if token.tag == "NNB" and token.form in ("때문", "땜"):
        return j + 1
    return None


def question_mark_after(tokens: Sequence[Any], j: int) -> bool:
    return j + 1 < len(tokens) and tokens[j + 1].form.startswith("?")


def after_marks(tokens: Sequence[Any], j: int) -> int:
    while j < len(tokens) and tokens[j].tag in ("SF", "SW", "SE", "SP") and not tokens[j].form.startswith("?"):
        j += 1
    return j


def is_content(token: Any) -> bool:
    if token.form in FILLERS or token.tag in ("SF", "SP", "SW", "SE", "SS"):
        return False
    return token.tag in CONTENT_TAGS
