"""How people talk about allergies without the plain "X 알레르기 있어": reactions ("새우 먹으면 두드러기 나", "입술이
부어"), the allergy as the reason ("알레르기 때문에 땅콩 못 먹어"), a second item after the statement ("그리고 게도요"),
and what takes an allergy back ("예전엔 있었는데 다 나았어").

A reaction names the allergy: it is remembered (after the user's 예) as an allergy. A body that merely disagrees
("우유 마시면 배가 아파", "땅콩 먹으면 안 돼", "몸에 안 맞아") may be an allergy or not: the reader marks it *unsure*, and the
bot asks which it is rather than guess the milder kind (issue 23).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.taste.grammar import lemma_of
from bot.taste.profile import allergens_of
from bot.taste.words import ALLERGY_NOUNS, CONDITIONAL

# Verbs whose conditional ("먹으면", "만지기만 해도") starts a sentence about what the food does to the body.
CONTACT = {"먹다", "마시다", "만지다", "닿다"}
# What an allergic reaction is called: nouns and verb lemmas (kiwipiepy lemmas of irregular verbs: 붓다, 가렵다).
REACTION_NOUNS = {"두드러기", "발진", "붓기", "호흡곤란", "쇼크", "아나필락시스", "숨", *ALLERGY_NOUNS}
REACTION_VERBS = {"붓다", "부어오르다", "가렵다", "간지럽다", "따갑다"}
# What a body that disagrees is called; the bot asks whether it is an allergy.
UPSET_NOUNS = {"탈", "설사", "배탈"}
UPSET_VERBS = {"아프다", "체하다", "거북하다", "더부룩하다"}
UPSET_NEGATED = {"좋다", "맞다", "되다"}  # 속이 안 좋아, 몸에 안 맞아, 소화가 안 돼, 먹으면 안 돼
PAST = {"었", "았", "였", "었었", "았었"}
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]")
CONNECTIVES = {"어서", "아서", "고", "니까", "으니까", "니", "으니"}
QUESTION_EF = ("니", "냐", "까", "나요", "가요", "는지", "을까", "ㄹ까")


def clean(text: str) -> str:
    """Control and zero-width characters as spaces, one for one, so token offsets still index the original text."""
    return CONTROL.sub(" ", text)


@dataclass(frozen=True)
class Reaction:
    allergens: tuple[str, ...]
    sure: bool  # a reaction (an allergy) or an upset body (ask which)
    span: tuple[int, int]  # tokens covered, for telling what is left of the message


def sentences(tokens: Sequence[Any]) -> list[tuple[int, int]]:
    """Token ranges of the sentences ('.', '!', '?', or a new line in the text)."""
    found, start = [], 0
    for k, token in enumerate(tokens):
        if token.tag == "SF":
            found.append((start, k + 1))
            start = k + 1
    if start < len(tokens):
        found.append((start, len(tokens)))
    return found


def _clause_end(tokens: Sequence[Any], j: int, end: int) -> int:
    for k in range(j, end):
        if tokens[k].tag == "EC" and (tokens[k].form.endswith("데") or tokens[k].form in CONNECTIVES):
            return k + 1
    return end


def _is_question(tokens: Sequence[Any], start: int, end: int) -> bool:
    last = [t for t in tokens[start:end] if t.tag not in ("SF", "SP", "SW", "SE", "SS")]
    asked = any(t.form.startswith("?") for t in tokens[start:end])
    return asked or bool(last and last[-1].tag == "EF" and last[-1].form.endswith(QUESTION_EF))


def _conditional_contact(tokens: Sequence[Any], start: int, end: int) -> int | None:
    """The index of the "먹으면" / "만지기만 해도" verb in a sentence, or None."""
    for k in range(start, end):
        if tokens[k].tag.startswith("VV") and lemma_of(tokens[k]) in CONTACT:
            after = [t.form for t in tokens[k + 1 : k + 5]]
            if after[:1] and (after[0] in CONDITIONAL or "어도" in after or "아도" in after):
                return k
    return None


def reactions(tokens: Sequence[Any]) -> list[Reaction]:
    """Sentences that say what eating (or touching) an allergen does to the speaker, as said now, not asked."""
    found = []
    for start, end in sentences(tokens):
        verb = _conditional_contact(tokens, start, end)
        if verb is None:
            continue
        end = _clause_end(tokens, verb + 2, end)  # "배가 아픈데 아침 뭐 먹지?": the question is another clause
        if _is_question(tokens, start, end):
            continue
        names = tuple(dict.fromkeys(a for t in tokens[start:verb] for a in named(t)))
        rest = tokens[verb + 1 : end]
        if not names or any(t.tag == "EP" and t.form in PAST for t in rest) or _modifies(rest):
            continue
        kind = _reaction_kind(rest)
        if kind is not None:
            first = next(k for k in range(start, verb) if named(tokens[k]))
            found.append(Reaction(names, kind, (first, end)))
    return found


def _modifies(rest: Sequence[Any]) -> bool:
    """"먹으면 안 되는 사람": the sentence describes someone; "배가 아픈데 …" (ㄴ + 데) is a connective, not that."""
    return any(t.tag == "ETM" and not (k + 1 < len(rest) and rest[k + 1].form == "데") for k, t in enumerate(rest))


def named(token: Any) -> tuple[str, ...]:
    """The allergens a token names: a noun, or a one-syllable name kiwi reads as another part ("게 먹으면": 게/IC)."""
    if token.tag.startswith("NN") or (token.tag in ("IC", "MAG", "VV", "EC") and len(token.form) == 1):
        return allergens_of(token.form)
    return ()


def _reaction_kind(rest: Sequence[Any]) -> bool | None:
    """True: an allergic reaction; False: an upset body (ask); None: neither (or it does not happen: "안 부어")."""
    negated_at = [k for k, t in enumerate(rest) if t.tag == "MAG" and t.form in ("안", "못")]
    if any(lemma_of(t) == "없다" for t in rest):
        return None
    for k, token in enumerate(rest):
        lemma = lemma_of(token)
        before_negated = k - 1 in negated_at
        if (token.tag.startswith("NN") and token.form in REACTION_NOUNS) or lemma in REACTION_VERBS:
            if token.tag.startswith("NN"):  # "두드러기 안 나": the reaction is denied
                return None if any(n > k for n in negated_at) else True
            return None if before_negated else True
        if lemma in UPSET_NEGATED and before_negated:
            return False
        if (token.tag.startswith("NN") and token.form in UPSET_NOUNS) or lemma in UPSET_VERBS:
            return None if before_negated else False
    return None


def allergy_said(tokens: Sequence[Any]) -> bool:
    """The message gives an allergy as a fact somewhere ("알레르기 있어서", "알레르기 때문에"), not denied or past."""
    for k, token in enumerate(tokens):
        if token.tag.startswith("NN") and token.form in ALLERGY_NOUNS:
            after = tokens[k + 1 : k + 5]
            if not any(lemma_of(t) in ("없다", "아니다") or (t.tag == "EP" and t.form in PAST) for t in after):
                return True
    return False


def cured(tokens: Sequence[Any]) -> bool:
    """"다 나았어", "이제 괜찮아진": the allergy is over, so nothing of it is remembered."""
    return any(lemma_of(t) == "낫다" for t in tokens)


def past_predicate(tokens: Sequence[Any], start: int, end: int) -> bool:
    return any(t.tag == "EP" and t.form in PAST for t in tokens[start:end])


def also(tokens: Sequence[Any], j: int) -> tuple[list[str], int]:
    """Allergens added after a statement: "…있어요. 그리고 게도요", "…있어, 그리고 우유도". ([], j) when none."""
    k = j
    while k < len(tokens) and (tokens[k].tag in ("SF", "SP", "MAJ") or tokens[k].form in ("또", "및")):
        k += 1
    names: list[str] = []
    while k < len(tokens) and tokens[k].tag.startswith("NN") and allergens_of(tokens[k].form):
        names.extend(allergens_of(tokens[k].form))
        k += 1
        if k < len(tokens) and tokens[k].tag == "JC":
            k += 1
    if not names or k >= len(tokens) or tokens[k].form != "도":
        return [], j
    k += 1
    while k < len(tokens) and (tokens[k].tag in ("SF", "SP", "SW") or (tokens[k].tag == "JX" and tokens[k].form == "요")):
        k += 1
    return (names, k) if k == len(tokens) else ([], j)
