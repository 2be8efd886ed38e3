"""Korean lemmas from kiwipiepy, shared by the request checks (fit.py) and the safety notes (safety.py).

Matching words by lemma, not by substring: "매운", "맵고", "맵지 않은" all carry the lemma 맵, while "매운탕" (a dish)
and "매우" (very) do not; "회" (raw fish) is a lemma in "회 먹어도 돼?" but not inside "회사" or "회식".

One Kiwi per process (it takes about 1.3 s and some hundred MB to start), built on first use; `warm_up_morphology()` lets a front
end pay that at start instead of on the first message.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

# Words Kiwi splits or misreads without help (비건 → 비/VV 건/EC).
USER_WORDS: tuple[tuple[str, str], ...] = (
    ("비건", "NNG"), ("맵찔이", "NNG"), ("술안주", "NNG"), ("베지테리언", "NNG"), ("저칼로리", "NNG"),
    ("음주운전", "NNG"), ("이유식", "NNG"), ("임산부", "NNG"), ("임신부", "NNG"), ("아가", "NNG"), ("날것", "NNG"),
    ("한잔", "NNG"), ("중딩", "NNG"), ("멍멍이", "NNG"), ("해장술", "NNG"), ("날생선", "NNG"), ("날고기", "NNG"),
    ("갓난아기", "NNG"), ("대중교통", "NNG"), ("미성년자", "NNG"), ("민물고기", "NNG"), ("중학생", "NNG"),
    ("통포도", "NNG"), ("상온", "NNG"), ("아이", "NNG"), ("육회", "NNG"), ("물회", "NNG"), ("연어회", "NNG"),
    ("생고기", "NNG"), ("날계란", "NNG"), ("날달걀", "NNG"), ("돌쟁이", "NNG"), ("반신욕", "NNG"), ("금식", "NNG"),
    ("군것질", "NNG"), ("꿀떡", "NNG"), ("대리운전", "NNG"), ("대장내시경", "NNG"), ("위내시경", "NNG"), ("어린아이", "NNG"), ("밀당", "NNG"), ("수유부", "NNG"),
)  # fmt: skip
_lock = threading.Lock()
# Ingredient words that carry an allergen (model/food/ingredients.py) are nouns to Kiwi too, so that "털게는" is 털게 and
# not 털다 + 게; a low score, so that they only win where Kiwi had no better reading. Not these: they are also common
# verbs or words ("대하여", "사태가"), and Kiwi already reads them as nouns where they are food.
INGREDIENT_TABLE = Path(__file__).resolve().parents[2] / "data" / "allergen_ingredients.csv"
NOT_USER_WORDS = frozenset({"사태", "양지", "차돌"})


@dataclass(frozen=True, slots=True)
class Lemma:
    form: str  # 맵, 고기, 얼큰하
    tag: str  # Kiwi's tag: VA, NNG, MAG, …

    @property
    def is_content(self) -> bool:
        """Nouns, verbs, adjectives, adverbs, roots, foreign words: what a request is about."""
        return self.tag[0] in "NVMX" and self.tag not in ("NNB", "VCP", "VCN", "XSN", "XSV", "XSA")


@lru_cache(maxsize=1)
def kiwi() -> Any:
    from kiwipiepy import Kiwi

    with _lock:
        analyser = Kiwi()
        for word, tag in USER_WORDS:
            analyser.add_user_word(word, tag, 5.0)  # a high score: the word wins over splits in any sentence
        for word in _ingredient_words():
            analyser.add_user_word(word, "NNG", 0.0)
    return analyser


def _ingredient_words() -> list[str]:
    import csv

    try:
        with open(INGREDIENT_TABLE, encoding="utf-8-sig", newline="") as f:
            words = [row[1].strip() for row in list(csv.reader(f))[1:] if len(row) > 1]
    except FileNotFoundError:  # the ingredient table reports its own absence when it is loaded
        return []
    return [w for w in dict.fromkeys(words) if len(w) > 1 and w not in NOT_USER_WORDS]


def warm_up_morphology() -> None:
    """Start Kiwi now (about 1.3 s), so the first question does not wait for it."""
    kiwi()


@lru_cache(maxsize=4096)
def _lemmas(text: str) -> tuple[Lemma, ...]:
    tokens = kiwi().tokenize(text)
    out: list[Lemma] = []
    for token in tokens:
        tag = token.tag.split("-")[0]  # VA-I (irregular) → VA
        if tag in ("XSA", "XSV") and out and out[-1].tag in ("XR", "MAG") and token.form == "하":
            out[-1] = Lemma(out[-1].form + token.form, "VA")  # 얼큰 + 하 → 얼큰하, as 매콤하 already is
            continue
        out.append(Lemma(token.form, tag))
    return tuple(out)


def lemmas(text: str) -> tuple[Lemma, ...]:
    """The lemmas of `text` in order (particles and endings included, so callers can see negation and context)."""
    return _lemmas(text[:2000])


def phrase(text: str) -> tuple[str, ...]:
    """The content lemmas of a short phrase written in plain words ("생선회", "마시다"), for matching rules. A lone
    word Kiwi reads otherwise out of context ("아이" alone is an interjection) stands for itself."""
    found = tuple(lemma.form for lemma in lemmas(text) if lemma.is_content)
    return found or ((text.strip(),) if text.strip() and len(text.split()) == 1 else ())


def contains(found: Sequence[Lemma], wanted: Sequence[str]) -> int | None:
    """Index in `found` where the content lemmas `wanted` occur in a row (particles and adverbs between them are
    skipped: 비가 주룩주룩 내리는데 has 비, 내리)."""
    keep = set(wanted)  # an adverb the phrase itself names (덜 익힌) is kept
    content = [(i, lemma.form) for i, lemma in enumerate(found)
               if lemma.is_content and (lemma.tag != "MAG" or lemma.form in keep)]
    n = len(wanted)
    for start in range(len(content) - n + 1):
        if all(content[start + k][1] == wanted[k] for k in range(n)):
            return content[start][0]
    return None


NEGATORS = frozenset({"않", "없", "빼", "말", "싫", "못", "안", "별로", "제외", "빼놓", "피하"})
NEGATE_BEFORE = frozenset({"안", "못", "덜"})
SKIP_VERBS = frozenset({"먹", "드시", "마시", "하", "들", "좋아하"})
INTENSIFIERS = frozenset({"잘", "전혀", "너무", "많이", "좀", "절대", "아예", "거의", "진짜", "정말", "아직"})


def negated(found: Sequence[Lemma], i: int) -> bool:
    """Is the content lemma at `i` negated? 맵지 않은 / 안 매운 / 매운 거 못 먹어 / 고기 안 먹는 / 고기 빼고 / 덜 매운 /
    술 안 마시고. Not: 차가운 음식 없을까? (asks whether there is one)."""
    if i > 0 and found[i - 1].tag == "MAG" and found[i - 1].form in NEGATE_BEFORE:
        return True
    steps = 0
    after = found[i + 1:i + 9]
    for k, lemma in enumerate(after):
        if lemma.tag == "EC" and lemma.form not in ("지", "게"):
            return False  # the next clause: "음주운전 해도 안 걸리는" does not negate 음주운전
        if lemma.form in NEGATORS and lemma.tag[0] in "VM":
            # "차가운 음식 없을까?" asks whether there is one: 없 that ends the question does not negate
            asks = lemma.form == "없" and k + 1 < len(after) and after[k + 1].tag == "EF"
            return not asks
        if (not lemma.is_content or lemma.tag == "NNB" or lemma.form in INTENSIFIERS
                or lemma.form in ("거", "것", "걸", "종류", "음식", "메뉴")):
            continue
        if lemma.form in SKIP_VERBS and steps == 0:
            steps += 1
            continue
        return False
    return False
