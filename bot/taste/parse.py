"""Reading taste statements in plain messages: "나 새우 알레르기 있어", "오이 싫어해", "요즘 채식 중이야",
"돼지고기는 안 먹어".

Recognition works on kiwipiepy morphemes and lemmas, never on substrings: a statement is a predicate that carries a
taste (알레르기 + 있다/이다, 싫다, 싫어하다, 별로이다, 좋아하다, 안/못 먹다, 채식 + 이다/하다 …) whose objects are names we
know (the catalog's allergen categories and their common words, dish names, tags and categories, and the ingredient
words inside dish names). It must be said about oneself, as a fact: a question ("오이 싫어해?"), a condition
("알레르기 있으면"), a modifier ("알레르기 있는 사람"), a negation ("알레르기 없어"), someone else ("친구가 …") or a
one-off ("오늘은 매운 게 싫어") is not remembered. What is left of the message after the statements tells whether
it also asks something.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from bot.taste.profile import ALLERGEN_GROUPS, DIETS, TasteItem, TasteRules, allergens_of, group_words
from model.food.dishes import ALLERGEN_SYNONYMS, ALLERGENS, DishCatalog, normalize

# Cheap gate before morpheme analysis: a message with none of these cannot hold a statement.
TRIGGERS = ("알레르", "알러지", "앨러지", "싫", "별로", "좋아", "질색", "먹지", "안 먹", "안먹", "못 먹", "못먹",
            "안 마", "못 마", "마시지", "채식", "비건", "베지", "다이어트", "칼로리")
ALLERGY_NOUNS = {"알레르기", "알러지", "앨러지", "알레르기성"}
DIET_NOUNS = {"채식": "veg", "채식주의자": "veg", "채식주의": "veg", "베지테리언": "veg", "비건": "vegan",
              "완전채식": "vegan", "다이어트": "light", "저칼로리": "light", "식단조절": "light"}
PORK, BEEF = {"돼지고기", "돼지", "돈육"}, {"소고기", "쇠고기", "소", "한우", "우육"}
GENERIC = ("요리", "음식", "메뉴", "종류", "것", "거")
ADJECTIVE_TAGS = {"맵다": "매운", "차갑다": "차가운", "뜨겁다": "따뜻한"}
PEOPLE = {"친구", "동생", "엄마", "아빠", "어머니", "아버지", "부모님", "아내", "남편", "와이프", "아이", "애", "딸", "아들",
          "언니", "오빠", "누나", "형", "여자친구", "남자친구", "여친", "남친", "가족", "손님", "동료", "팀원", "사람", "분",
          "너", "걔", "쟤", "그", "그녀", "얘", "조카", "할머니", "할아버지", "애인"}
ONE_OFF = {"오늘", "지금", "이번", "오늘따라", "이따", "내일", "어제", "아까"}
FILLERS = {"나", "저", "내", "제", "난", "전", "요즘", "요새", "최근", "이제", "참고", "사실", "그리고", "그래서", "근데",
           "그런데", "일단", "혹시", "앞으로", "원래", "평소", "항상", "늘", "진짜", "정말", "너무", "좀", "완전", "참",
           "아", "음", "저기", "꼭", "제가", "내가", "전부터", "예전", "부터", "쭉", "계속", "많이", "엄청", "되게"}
CONDITIONAL = {"면", "으면", "다면", "라면", "이면"}
QUESTION_ENDINGS = ("니", "냐", "까", "나요", "가요", "는지", "ㄹ까", "을까", "래", "나")
CONTENT_TAGS = {"NNG", "NNP", "NNB", "NR", "NP", "SL", "SH", "SN", "VV", "VA", "VV-I", "VA-I", "VV-R", "VA-R", "XR", "MM"}
# Ingredients people often dislike that may appear in no dish name; the rest come from the catalog's dish names.
EXTRA_INGREDIENTS = (
    "고수 오이 가지 버섯 당근 피망 파프리카 양파 대파 쪽파 파 마늘 생강 깻잎 미나리 셀러리 브로콜리 콩 두부 내장 곱창 막창 "
    "순대 닭발 선지 생선 회 치즈 버터 크림 마요네즈 케첩 올리브 민트 고추 청양고추 와사비 겨자 향신료 카레 김치 젓갈 "
    "멸치 굴 전복 홍합 조개 새우 오징어 낙지 문어 주꾸미 쭈꾸미 연어 참치 고등어 장어 달걀 계란 우유 밀가루 땅콩 호두 "
    "잣 복숭아 토마토 돼지고기 소고기 닭고기 양고기 오리고기 팥 옥수수 감자 고구마 호박 애호박 시금치 콩나물 숙주 무 "
    "배추 양배추 상추 부추 쑥갓 도라지 더덕 고사리 연근 우엉 미역 다시마 김 꼬막 바지락 게 꽃게 대게 간 천엽 곤약 "
    "어묵 햄 스팸 소시지 베이컨 땅콩버터 초콜릿 민트초코 팥앙금 건포도 올리브유 고추냉이 산초 후추 들깨 깨 참기름"
).split()
ONE_SYLLABLE = {"파", "무", "김", "콩", "굴", "게", "떡", "밥", "면", "빵", "회", "팥", "잣", "밀", "간", "깨", "배", "귤",
                "전", "국", "탕", "찜", "죽", "술", "차", "장"}


@dataclass(frozen=True)
class Statement:
    items: tuple[TasteItem, ...]
    asks: bool  # the message also asks something: answer it once the user has chosen


@lru_cache(maxsize=1)
def shared_kiwi() -> Any:
    """One Kiwi per process (start-up about 1-3 s and ~300 MB; its first analysis loads the model)."""
    from kiwipiepy import Kiwi

    kiwi = Kiwi(load_multi_dict=False)
    # Our vocabulary as nouns: "가지 싫어해" would otherwise read as 가(다) + 지. One-syllable words stay out (배, 김
    # and 무 have other readings that the model gets right from context).
    words = {*ALLERGENS, *ALLERGEN_SYNONYMS, *ALLERGEN_GROUPS, *DIET_NOUNS, *ALLERGY_NOUNS, *EXTRA_INGREDIENTS}
    for word in words:
        if len(word) > 1:
            kiwi.add_user_word(word, "NNG")
    kiwi.tokenize("새우 알레르기 있어")  # load the model now, not on a user's first message
    return kiwi


def ingredient_index(catalog: DishCatalog, kiwi: Any) -> dict[str, frozenset[str]]:
    """Ingredient word → the dishes whose names contain it as a word (kiwipiepy nouns of every spelling, plus a
    split of the spelling into known words: 콩나물국 = 콩나물 + 국, 파전 = 파 + 전, but not 파스타 = 파 + ?)."""
    nouns_of: dict[str, set[str]] = {}
    vocabulary = set(EXTRA_INGREDIENTS) | ONE_SYLLABLE
    for dish in catalog:
        for spelling in dish.spellings:
            key = normalize(spelling)
            nouns = {t.form for t in kiwi.tokenize(key) if t.tag in ("NNG", "NNP")}
            nouns_of[key] = nouns
            vocabulary |= {n for n in nouns if len(n) > 1 or n in ONE_SYLLABLE}
    index: dict[str, set[str]] = {}
    for dish in catalog:
        for spelling in dish.spellings:
            key = normalize(spelling)
            for word in nouns_of[key] | _words_inside(key, vocabulary):
                if word in vocabulary and word != key:
                    index.setdefault(word, set()).add(dish.name)
    return {word: frozenset(dishes) for word, dishes in index.items()}


def _words_inside(text: str, vocabulary: set[str], depth: int = 3) -> set[str]:
    """The words of `text`'s split into known words, and of their own splits (해물파전 → 해물, 파전 → 파, 전)."""
    found: set[str] = set()
    for word in _split_words(text, vocabulary - {text}):
        found.add(word)
        if depth > 1 and len(word) > 1:
            found |= _words_inside(word, vocabulary, depth - 1)
    return found


def _split_words(text: str, vocabulary: set[str]) -> list[str]:
    """The split of `text` into the fewest vocabulary words, or [] when there is none."""
    best: list[list[str] | None] = [[]] + [None] * len(text)
    for end in range(1, len(text) + 1):
        for start in range(max(0, end - 8), end):
            head = best[start]
            if head is not None and text[start:end] in vocabulary:
                candidate = [*head, text[start:end]]
                if best[end] is None or len(candidate) < len(best[end]):
                    best[end] = candidate
    return best[-1] or []


class TasteReader:
    """Statements in a message, as taste items. Build it with `load()` (off the event loop: it starts Kiwi)."""

    def __init__(self, catalog: DishCatalog, kiwi: Any, ingredients: dict[str, frozenset[str]]) -> None:
        self.catalog = catalog
        self.kiwi = kiwi
        self.rules = TasteRules(catalog, ingredients)
        self.groups = group_words(catalog)
        self.vocabulary = set(ingredients) | set(EXTRA_INGREDIENTS)

    @classmethod
    def load(cls, catalog: DishCatalog) -> TasteReader:
        kiwi = shared_kiwi()
        return cls(catalog, kiwi, _cached_index(catalog, kiwi))

    @staticmethod
    def might_state(text: str) -> bool:
        return any(trigger in text for trigger in TRIGGERS)

    def read(self, text: str) -> Statement | None:
        if not self.might_state(text):
            return None
        tokens = self.kiwi.tokenize(text)
        items: list[TasteItem] = []
        covered: set[int] = set()
        for i in range(len(tokens)):
            found = self._statement_at(tokens, i, text)
            if found is not None:
                new_items, span = found
                items.extend(new_items)
                covered.update(range(span[0], span[1]))
        if not items:
            return None
        asks = any(_is_content(t) for j, t in enumerate(tokens) if j not in covered)
        return Statement(tuple(dict.fromkeys(items)), asks)

    # --- one statement ------------------------------------------------------------------------------------------

    def _statement_at(self, tokens: Sequence[Any], i: int, text: str) -> tuple[list[TasteItem], tuple[int, int]] | None:
        token, lemma = tokens[i], _lemma(tokens[i])
        if token.tag.startswith("NN") and token.form in ALLERGY_NOUNS:
            return self._allergy(tokens, i, text)
        if token.tag.startswith("NN") and _diet_noun(tokens, i) is not None:
            return self._diet(tokens, i, *_diet_noun(tokens, i))
        if lemma in ("싫다", "싫어하다") or (token.form == "질색" and token.tag.startswith("NN")):
            return self._feeling(tokens, i, text, "dislike", invert=False)
        if token.form == "별로" and token.tag == "MAG" and i + 1 < len(tokens) and tokens[i + 1].tag == "VCP":
            return self._feeling(tokens, i, text, "dislike", invert=False)
        if lemma == "좋아하다" or (lemma == "좋다" and _next_is(tokens, i, ("어", "아"), "EC")
                                  and _next_is(tokens, i + 1, ("하",), "VX")):
            return self._feeling(tokens, i, text, "like", invert=True)
        if lemma in ("먹다", "마시다"):
            return self._not_eaten(tokens, i, text)
        return None

    def _allergy(self, tokens: Sequence[Any], i: int, text: str):
        end = _fact_end(tokens, i + 1, allow=("있다", "이다", "반응", "체질", "환자"))
        if end is None:
            return None
        objects, start = self._objects(tokens, i, text)
        names = [a for span in objects for a in allergens_of(span)]
        if not names:  # a one-syllable name kiwi reads as an ending ("나 게 알레르기": 나다 + 게): the whole word
            word = text[: tokens[i].start].split()[-1:] or [""]
            names = list(allergens_of(word[0].rstrip(",")))
            start = next((j for j, t in enumerate(tokens) if t.start >= tokens[i].start - len(word[0]) - 1), i)
        if not names or self._not_mine(tokens, start):
            return None
        return [TasteItem("allergy", "allergen", a) for a in dict.fromkeys(names)], (start, end)

    def _diet(self, tokens: Sequence[Any], i: int, code: str, width: int):
        j = i + width
        if j < len(tokens) and tokens[j].form == "중" and tokens[j].tag == "NNB":
            j += 1
        end = _fact_end(tokens, j, allow=("이다", "하다"), need_predicate=tokens[j - 1].form != "중")
        if end is None or self._not_mine(tokens, i):
            return None
        return [TasteItem("diet", "diet", code)], (i, end)

    def _feeling(self, tokens: Sequence[Any], i: int, text: str, kind: str, *, invert: bool):
        end = _fact_end(tokens, i + 1, allow=("이다", "하다"))
        if end is None:
            return None
        negated = _negated(tokens, i)
        if negated and not invert:
            return None
        kind = "dislike" if negated else kind
        return self._about_things(tokens, i, text, kind, end)

    def _not_eaten(self, tokens: Sequence[Any], i: int, text: str):
        if not _negated(tokens, i):
            return None
        end = _fact_end(tokens, i + 1, allow=())
        if end is None:
            return None
        objects, start = self._objects(tokens, i, text)
        if self._not_mine(tokens, start):
            return None
        items = []
        for span in objects:
            key = span.replace(" ", "")
            if key in PORK:
                items.append(TasteItem("diet", "diet", "nopork"))
            elif key in BEEF:
                items.append(TasteItem("diet", "diet", "nobeef"))
            elif (thing := self.resolve(span)) is not None:
                items.append(TasteItem("dislike", *thing))
        return (items, (start, end)) if items else None

    def _about_things(self, tokens: Sequence[Any], i: int, text: str, kind: str, end: int):
        objects, start = self._objects(tokens, i, text)
        if self._not_mine(tokens, start):
            return None
        things = [thing for span in objects if (thing := self.resolve(span)) is not None]
        return ([TasteItem(kind, *t) for t in things], (start, end)) if things else None

    def resolve(self, span: str) -> tuple[str, str] | None:
        """What a noun phrase names: (target, value) for a dish, ingredient, tag or category we know, else None."""
        key = span.replace(" ", "")
        candidates = [key] + [key[: -len(g)] for g in GENERIC if key.endswith(g) and len(key) > len(g)]
        for word in candidates:
            if word in self.groups:
                return self.groups[word], word
            dish = self.catalog.get(word)
            shared = len(self.rules.ingredients.get(word, ())) > 1
            if dish is not None and not shared:
                return "dish", dish.name
            if word in self.vocabulary or allergens_of(word):
                return "ingredient", word
            if dish is not None:
                return "dish", dish.name
        return None

    def _objects(self, tokens: Sequence[Any], anchor: int, text: str) -> tuple[list[str], int]:
        """The noun phrases the predicate at `anchor` is about, read leftwards ("새우랑 게", "매운 거"), and where they
        start. Each phrase is the original text of a run of nouns."""
        runs: list[list[str]] = []  # right to left; each run's phrases in text order
        j = anchor - 1
        start = anchor
        while j >= 0:
            while j >= 0 and tokens[j].tag in ("JX", "JKO", "JKS", "MAG"):  # 오이는 진짜, 매운 걸 못
                j -= 1
            run_end = j
            while j >= 0 and (tokens[j].tag in ("NNG", "NNP", "NNB", "XSN", "XPN", "SL") and tokens[j].form not in FILLERS):
                j -= 1
            if j == run_end:
                break
            run = tokens[j + 1 : run_end + 1]
            if run[-1].form in GENERIC and j >= 1 and tokens[j].tag == "ETM" and _lemma(tokens[j - 1]) in ADJECTIVE_TAGS:
                runs.append([ADJECTIVE_TAGS[_lemma(tokens[j - 1])]])
                j -= 2
            else:
                runs.append(self._split_run(run, text))
            start = j + 1
            if j >= 0 and (tokens[j].tag == "JC" or tokens[j].form in (",", "및", "그리고", "또는")):
                j -= 1
                continue
            break
        return [span for run in reversed(runs) for span in run], start

    def _split_run(self, run: Sequence[Any], text: str) -> list[str]:
        """A run of nouns split into the phrases we know, longest first from the right ("요즘 새우튀김" → 새우튀김).
        A phrase is made of whole words: part of a word we do not know ("셀러리악") is never guessed at."""
        cuts = [0, *(k for k in range(1, len(run)) if run[k].start > run[k - 1].end), len(run)]
        found: list[str] = []
        end = len(cuts) - 1
        while end > 0:
            for begin in range(end):
                span = text[run[cuts[begin]].start : run[cuts[end] - 1].end]
                if self.resolve(span) is not None or allergens_of(span):
                    found.append(span)
                    end = begin
                    break
            else:
                end -= 1
        return found[::-1]

    def _not_mine(self, tokens: Sequence[Any], start: int) -> bool:
        """Someone else's taste ("친구가 새우 알레르기 있어"), or only for now ("오늘은 매운 게 싫어")."""
        j = start - 1
        while j >= 0 and tokens[j].tag not in ("EF", "EC", "SF"):
            if tokens[j].form in PEOPLE or tokens[j].form in ONE_OFF or tokens[j].form.startswith("이번"):
                return True
            j -= 1
        return False


@lru_cache(maxsize=4)
def _cached_index(catalog: DishCatalog, kiwi: Any) -> dict[str, frozenset[str]]:
    with _INDEX_LOCK:
        return ingredient_index(catalog, kiwi)


_INDEX_LOCK = threading.Lock()


def _lemma(token: Any) -> str:
    lemma = getattr(token, "lemma", "") or token.form
    return lemma if token.tag.startswith("V") else token.form


def _next_is(tokens: Sequence[Any], i: int, forms: tuple[str, ...], tag: str) -> bool:
    return i + 1 < len(tokens) and tokens[i + 1].tag.startswith(tag) and tokens[i + 1].form in forms


def _diet_noun(tokens: Sequence[Any], i: int) -> tuple[str, int] | None:
    """The diet a noun names, and how many tokens it spans ("채식 주의자", "식단 조절")."""
    if i + 1 < len(tokens) and tokens[i + 1].tag.startswith("NN"):
        joined = tokens[i].form + tokens[i + 1].form
        if joined in DIET_NOUNS:
            return DIET_NOUNS[joined], 2
    code = DIET_NOUNS.get(tokens[i].form)
    return (code, 1) if code in DIETS else None


def _negated(tokens: Sequence[Any], i: int) -> bool:
    """안/못 right before the predicate, or 지 않다 / 지 못하다 after it."""
    before = any(tokens[j].tag == "MAG" and tokens[j].form in ("안", "못") for j in range(max(0, i - 2), i))
    after = (i + 2 < len(tokens) and tokens[i + 1].form == "지" and tokens[i + 1].tag == "EC"
             and _lemma(tokens[i + 2]) in ("않다", "못하다"))
    return before or after


def _fact_end(tokens: Sequence[Any], j: int, *, allow: tuple[str, ...], need_predicate: bool = False) -> int | None:
    """Where a statement about oneself ends (the index after its ending), or None when the predicate is not said as
    a fact: a question, a condition, a modifier, a negation (없다) or no ending at all."""
    predicate = False
    while j < len(tokens):
        token, lemma = tokens[j], _lemma(tokens[j])
        if lemma == "없다":
            return None
        if token.tag in ("VV", "VA", "VCP", "XSV", "VX", "EP") or lemma in allow or token.tag in ("JKS", "JX"):
            predicate = predicate or token.tag in ("VV", "VA", "VCP", "XSV", "VX")
            j += 1
            continue
        if token.tag == "EC" and j + 1 < len(tokens) and tokens[j + 1].tag == "VX":  # 채식하고 있어, 먹지 않아
            j += 1
            continue
        break
    if j >= len(tokens) or tokens[j].tag in ("SF", "SP", "SW", "SE"):
        return None if need_predicate and not predicate else _after_marks(tokens, j)
    token = tokens[j]
    if token.tag == "EF":
        ends_question = token.form.endswith(QUESTION_ENDINGS) or _question_mark_after(tokens, j)
        return None if ends_question else _after_marks(tokens, j + 1)
    if token.tag == "EC":
        return None if token.form in CONDITIONAL else _after_marks(tokens, j + 1)
    if token.tag == "ETN":
        return _after_marks(tokens, j + 1)
    if token.tag == "ETM":  # "있는데" reads as 있 + 는 + 데: a connective, not a modifier
        if j + 1 < len(tokens) and tokens[j + 1].form == "데" and tokens[j + 1].tag == "NNB":
            return j + 2
        return None
    if token.tag == "NNB" and token.form == "때문":
        return j + 1
    return None


def _question_mark_after(tokens: Sequence[Any], j: int) -> bool:
    return j + 1 < len(tokens) and tokens[j + 1].form.startswith("?")


def _after_marks(tokens: Sequence[Any], j: int) -> int:
    while j < len(tokens) and tokens[j].tag in ("SF", "SW", "SE", "SP") and not tokens[j].form.startswith("?"):
        j += 1
    return j


def _is_content(token: Any) -> bool:
    if token.form in FILLERS or token.tag in ("SF", "SP", "SW", "SE", "SS"):
        return False
    return token.tag in CONTENT_TAGS
