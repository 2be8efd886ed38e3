"""Korean particles that fit the word they follow: 모델을, 어댑터를, 'v2'를, 3을, 서울로, 밥으로.

`with_particle("기본 모델", "을")` → "기본 모델을"; `with_particle("어댑터", "을")` → "어댑터를". Give the particle in
either form ("을" or "를", or the "을(를)" that copy writers use when they cannot choose): the form is picked by the last
sound of the word. This is what kiwipiepy's `Kiwi.join` does for Hangul (tests/test_korean.py compares the two on the
whole dish catalog), without its 1.3-second start, and it also reads digits and Latin letters the way Koreans say them
(3 → 삼 → "3을", 10 → 십 → "10을", URL → 엘 → "URL로"), where Kiwi.join writes "3를".

Pure Python, no model: any part of the bot can use it for its copy.
"""

from __future__ import annotations

import re

_HANGUL_BASE, _HANGUL_LAST = 0xAC00, 0xD7A3
_RIEUL = 8  # index of ㄹ among the final consonants

# (form after a consonant, form after a vowel). 으로/로 also takes 로 after ㄹ (서울로, 칼로).
PAIRS: tuple[tuple[str, str], ...] = (
    ("이라고", "라고"), ("이라도", "라도"), ("이에요", "예요"), ("이었어요", "였어요"), ("이랑", "랑"), ("이나", "나"),
    ("이든", "든"), ("이며", "며"), ("으로", "로"), ("을", "를"), ("이", "가"), ("은", "는"), ("과", "와"), ("아", "야"),
)  # fmt: skip
_FORMS: dict[str, tuple[str, str]] = {form: pair for pair in PAIRS for form in pair}
_BOTH = re.compile(r"^(\w+)\((\w+)\)$")  # "을(를)", "이(가)", "(으)로"
_OPTIONAL = re.compile(r"^\((\w+)\)(\w+)$")

# What is read at the end of a word that does not end in Hangul: (has a final consonant, that consonant is ㄹ).
_DIGITS = {"0": (True, False), "1": (True, True), "2": (False, False), "3": (True, False), "4": (False, False),
           "5": (False, False), "6": (True, False), "7": (True, True), "8": (True, True), "9": (False, False)}
# English letter names as said in Korean (acronyms: GPU, URL): 엘, 엠, 엔, 알 end in a consonant; 에이, 비, 씨 … do not.
_LETTERS = {"l": (True, True), "m": (True, False), "n": (True, False), "r": (True, True)}
_VOWELS = "aeiou"
_TRAILING = " \t\n'\"’”)]}>」』›».,!?…·"


def _final(word: str) -> tuple[bool, bool] | None:
    """(ends in a consonant sound, that sound is ㄹ) for the last readable character of `word`; None if none."""
    text = word.rstrip(_TRAILING)
    if not text:
        return None
    last = text[-1]
    code = ord(last)
    if _HANGUL_BASE <= code <= _HANGUL_LAST:
        jong = (code - _HANGUL_BASE) % 28
        return jong != 0, jong == _RIEUL
    if last.isdigit() and last in _DIGITS:
        zeros = len(text) - len(text.rstrip("0"))
        if last == "0" and zeros < len(text):  # 10 십, 100 백, 1000 천, 10000 만: all end in a consonant
            return True, False
        return _DIGITS[last]
    if last.isascii() and last.isalpha():
        return _latin_final(text)
    return None


def _latin_final(text: str) -> tuple[bool, bool]:
    """The last sound of a Latin-letter word as Koreans say it: acronyms by letter names, words by the usual loanword
    spelling (missing 미싱, model 모델, apple 애플, bot 봇, chat 챗; spicy 스파이시, test 테스트, adapter 어댑터)."""
    word = ""
    for ch in reversed(text):
        if not (ch.isascii() and ch.isalpha()):
            break
        word = ch + word
    if word.isupper() or len(word) == 1:
        return _LETTERS.get(word[-1].lower(), (False, False))
    word = word.lower()
    if word.endswith(("ng", "m", "n")):
        return True, False
    if word.endswith(("l", "le")):
        return True, True
    # a short closed syllable keeps its stop as a final consonant: bot 봇, chat 챗, tip 팁, book 북
    if len(word) >= 3 and word[-1] in "ptk" and word[-2] in _VOWELS and word[-3] not in _VOWELS + "y":
        return True, False
    return False, False


def particle(word: str, given: str) -> str:
    """The form of particle `given` (any of its forms, or "을(를)") that fits after `word`."""
    pair = _pair(given)
    if pair is None:
        return given
    final = _final(word)
    if final is None:  # nothing readable (an emoji, a Hanja): keep a plain form as written, never "을(를)"
        return given if given in _FORMS else pair[1]
    has_final, is_rieul = final
    if pair == ("으로", "로"):
        return "로" if not has_final or is_rieul else "으로"
    return pair[0] if has_final else pair[1]


def with_particle(word: str, given: str) -> str:
    """`word` followed by the fitting form of `given`: with_particle("어댑터", "을") == "어댑터를"."""
    return word + particle(word, given)


def _pair(given: str) -> tuple[str, str] | None:
    if given in _FORMS:
        return _FORMS[given]
    for pattern in (_BOTH, _OPTIONAL):
        found = pattern.match(given)
        if found:
            a, b = found.groups()
            joined = a + b if pattern is _OPTIONAL else None  # "(으)로" → 으로
            return _FORMS.get(a) or _FORMS.get(b) or (_FORMS.get(joined) if joined else None)
    return None
