"""The words the taste reader knows and the one Kiwi it reads with: trigger words, allergy and diet nouns, people
and one-off words, ingredient words outside dish names, and the index of ingredient words inside dish names."""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

from bot.taste.profile import ALLERGEN_GROUPS
from model.food.dishes import ALLERGEN_SYNONYMS, ALLERGENS, DishCatalog, normalize

# Cheap gate before morpheme analysis: a message with none of these cannot hold a statement.
TRIGGERS = ("알레르", "알러지", "앨러지", "싫", "별로", "좋아", "질색", "먹지", "안 먹", "안먹", "못 먹", "못먹",
            "안 마", "못 마", "마시지", "채식", "비건", "베지", "다이어트", "칼로리", "먹으면", "마시면", "먹어도",
            "마셔도", "만지", "식단")
ALLERGY_NOUNS = {"알레르기", "알러지", "앨러지", "알레르기성"}
DIET_NOUNS = {"채식": "veg", "채식주의자": "veg", "채식주의": "veg", "베지테리언": "veg", "비건": "vegan",
              "완전채식": "vegan", "다이어트": "light", "저칼로리": "light", "식단조절": "light"}
PORK, BEEF = {"돼지고기", "돼지", "돈육"}, {"소고기", "쇠고기", "소", "한우", "우육"}
GENERIC = ("요리", "음식", "메뉴", "종류", "것", "거")
ADJECTIVE_TAGS = {"맵다": "매운", "차갑다": "차가운", "뜨겁다": "따뜻한"}
PEOPLE = {"친구", "동생", "엄마", "아빠", "어머니", "아버지", "부모님", "아내", "남편", "와이프", "아이", "애", "딸", "아들",
          "언니", "오빠", "누나", "형", "여자친구", "남자친구", "여친", "남친", "가족", "손님", "동료", "팀원", "사람", "분",
          "너", "걔", "쟤", "그", "그녀", "얘", "조카", "할머니", "할아버지", "애인"}
# The family one cooks for: their allergies are avoided for the user too ("우리 애가 땅콩 알레르기가 있어").
HOUSEHOLD = {"애", "아이", "아기", "애기", "딸", "아들", "남편", "아내", "와이프", "가족", "식구"}
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



@lru_cache(maxsize=4)
def cached_index(catalog: DishCatalog, kiwi: Any) -> dict[str, frozenset[str]]:
    with _INDEX_LOCK:
        return ingredient_index(catalog, kiwi)


_INDEX_LOCK = threading.Lock()

