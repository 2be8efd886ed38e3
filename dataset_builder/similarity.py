"""Korean-aware ROUGE-L and a near-duplicate index that scales.

Why a custom tokenizer: rouge_score's default tokenizer keeps only [a-z0-9], so every Korean pair scores 0 and a
ROUGE-L filter silently rejects nothing.

Two tokenizers, both objects with `.tokenize(text) -> list[str]` so rouge_scorer.RougeScorer accepts them:
- "kiwi" (default): kiwipiepy morphemes, keeping content morphemes only (nouns, verb/adjective stems, numbers,
  foreign words, adverbs, determiners, interjections; minus fillers such as the 주 of 해줘 and the 거 of 매운 거). Endings and particles are dropped because every request ends in much the
  same way: with all morphemes, "매운 음식 추천해줘" vs "차가운 디저트 추천해줘" shares 은/추천/하/어/주/어 and scores
  0.75, a false near-duplicate. With content morphemes it scores 0.33, while "추천해줘" vs "추천해 줘" stays 1.0.
- "char": Hangul syllables, letters and digits, spaces and punctuation dropped. No model to load, but short
  requests that share an ending score high ("매운 거 추천해줘" vs "단 거 추천해줘" = 0.77).

ROUGE-L F1 is 2*LCS/(m+n), and LCS <= the multiset overlap of the two token lists, so a row can only score above t
if 2*overlap > t*(m+n). `NearDupIndex` keeps an inverted index from tokens to rows and gets the overlap with every
earlier row from one numpy `bincount` over the query's posting lists; only rows that pass this bound get the exact
(bit-parallel) LCS, so decisions match a brute-force rouge_scorer loop exactly (tests and bench/filter_speed.py
check this).

"Score > t" is decided in integers: t is read as the decimal it was written as (0.7 = 7/10) and a row is dropped iff
2*LCS*10 > 7*(m+n). rouge_score's float arithmetic (2PR/(P+R)) gives 0.7000000000000001 for LCS 7 of 9 and 11
tokens, which a float comparison would drop under "> 0.7". The reported score is 2*LCS/(m+n), correctly rounded.
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np
from rouge_score import rouge_scorer

# Kiwi part-of-speech tags kept by the "kiwi" tokenizer (after dropping the -I/-R irregular-conjugation suffix).
# IC is kept because Kiwi tags the same "뭐" as NP in one sentence and IC in another. Auxiliary verbs (VX) and
# bound nouns (NNB) carry meaning in "만드는 법" (Kiwi: 만들/VX 법/NNB) but not in "해 줘", "먹고 싶어", "매운 거".
KIWI_CONTENT_TAGS = frozenset(
    {"NNG", "NNP", "NNB", "NR", "NP", "VV", "VA", "VX", "MM", "MAG", "IC", "XR", "SL", "SH", "SN", "W_URL",
     "W_HASHTAG", "W_EMOJI"}
)
KIWI_STOP_MORPHEMES = frozenset(
    {("주", "VX"), ("드리", "VX"), ("보", "VX"), ("싶", "VX"), ("있", "VX"), ("두", "VX"), ("놓", "VX"),
     ("버리", "VX"), ("거", "NNB"), ("것", "NNB"), ("게", "NNB"), ("걸", "NNB"), ("수", "NNB"), ("중", "NNB"),
     ("데", "NNB"), ("좀", "MAG")}
)
TOKENIZER_NAMES = ("kiwi", "char")


class Tokenizer(Protocol):
    name: str

    def tokenize(self, text: str) -> list[str]: ...

    def tokenize_many(self, texts: Sequence[str]) -> list[list[str]]: ...


class CharTokenizer:
    name = "char"

    def tokenize(self, text: str) -> list[str]:
        return [c for c in text.lower() if c.isalnum()]

    def tokenize_many(self, texts: Sequence[str]) -> list[list[str]]:
        return [self.tokenize(t) for t in texts]


@functools.cache
def get_kiwi():  # -> kiwipiepy.Kiwi
    """One Kiwi per process: building it takes ~1.5 s and its first call loads the model for another ~2-3 s.

    The multi-word dictionary (proper nouns spanning words) is left out: it adds ~190 MB of RSS and ~1 s of start-up,
    and content-morpheme matching of food requests does not need it.
    """
    from kiwipiepy import Kiwi

    return Kiwi(load_multi_dict=False)


class KiwiTokenizer:
    name = "kiwi"

    def __init__(self) -> None:
        self._kiwi = get_kiwi()

    @staticmethod
    def _content(tokens) -> list[str]:
        out = []
        for t in tokens:
            tag = t.tag.split("-")[0]
            if tag in KIWI_CONTENT_TAGS and (t.form, tag) not in KIWI_STOP_MORPHEMES:
                out.append(t.form.lower())
        return out

    def tokenize(self, text: str) -> list[str]:
        return self._content(self._kiwi.tokenize(text))

    def tokenize_many(self, texts: Sequence[str]) -> list[list[str]]:
        # Kiwi's batch call runs on its own thread pool and is several times faster than one call per text.
        return [self._content(tokens) for tokens in self._kiwi.tokenize(list(texts))]


def make_tokenizer(name: str) -> Tokenizer:
    if name == "kiwi":
        return KiwiTokenizer()
    if name == "char":
        return CharTokenizer()
    raise ValueError(f"unknown tokenizer {name!r}: use one of {', '.join(TOKENIZER_NAMES)}")


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length, bit-parallel (Hyyrö 2004) on Python ints: O(len(b)) big-int steps."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    return _lcs_with_masks(masks, len(a), b)


def _lcs_with_masks(masks: Mapping[str, int], m: int, b: Sequence[str]) -> int:
    full = (1 << m) - 1
    v = full
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return m - v.bit_count()


def rouge_l_from_lcs(lcs: int, len_a: int, len_b: int) -> float:
    """ROUGE-L F1 = 2PR/(P+R) = 2*LCS/(m+n), correctly rounded (rouge_score's own arithmetic may be 1 ulp off)."""
    if not len_a or not len_b:
        return 0.0
    return 2 * lcs / (len_a + len_b)


def rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    return rouge_l_from_lcs(lcs_length(a, b), len(a), len(b))


def as_fraction(threshold: float) -> Fraction:
    """The threshold as the decimal a person wrote: 0.7 -> 7/10 (not the binary float just below it)."""
    return Fraction(str(threshold))


def above(lcs: int, len_a: int, len_b: int, threshold: Fraction) -> bool:
    """ROUGE-L F1 > threshold, exactly: 2*LCS/(m+n) > p/q  <=>  2*LCS*q > p*(m+n)."""
    return len_a > 0 and len_b > 0 and 2 * lcs * threshold.denominator > threshold.numerator * (len_a + len_b)


def _tagged(tokens: Sequence[str]) -> list[tuple[str, int]]:
    """Multiset as a set: the second "추천" becomes ("추천", 1), so set overlap equals multiset overlap."""
    seen: dict[str, int] = {}
    out = []
    for tok in tokens:
        n = seen.get(tok, 0)
        seen[tok] = n + 1
        out.append((tok, n))
    return out


class NearDupIndex:
    """Rows added so far, and a fast exact query for those scoring ROUGE-L F1 > threshold against a new row.

    Each (token, occurrence) element has a posting list of the rows holding it, kept in `array('i')` so numpy can
    read it without a copy; one `bincount` over the query's posting lists gives the multiset overlap with every row.
    """

    def __init__(self, threshold: float) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self._exact = as_fraction(threshold)
        self._rows: list[tuple[str, ...]] = []
        self._lengths = array("i")
        self._postings: dict[tuple[str, int], array] = {}
        self.candidates_checked = 0

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, tokens: Sequence[str]) -> int:
        idx = len(self._rows)
        self._rows.append(tuple(tokens))
        self._lengths.append(len(tokens))
        for element in _tagged(tokens):
            posting = self._postings.get(element)
            if posting is None:
                posting = self._postings[element] = array("i")
            posting.append(idx)
        return idx

    def _candidates(self, elements: list[tuple[str, int]], m: int) -> list[int]:
        postings = [self._postings[e] for e in elements if e in self._postings]
        if not postings:
            return []
        ids = np.concatenate([np.frombuffer(p, dtype=np.int32) for p in postings])
        overlap = np.bincount(ids, minlength=len(self._rows)).astype(np.int64)
        lengths = np.frombuffer(self._lengths, dtype=np.int32).astype(np.int64)
        # LCS <= overlap, so a row can only score above t = p/q if 2 * overlap * q > p * (m + n). Exact integers.
        p, q = self._exact.numerator, self._exact.denominator
        return np.flatnonzero(2 * overlap * q > p * (m + lengths)).tolist()

    def matches(self, tokens: Sequence[str]) -> list[tuple[float, int]]:
        """Every (score, row index) with score > threshold, best first, earliest row first among equal scores."""
        m = len(tokens)
        if m == 0 or not self._rows:
            return []
        candidates = self._candidates(_tagged(tokens), m)
        masks: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            masks[tok] = masks.get(tok, 0) | (1 << i)
        found = []
        for idx in candidates:
            row = self._rows[idx]
            self.candidates_checked += 1
            lcs = _lcs_with_masks(masks, m, row)
            if above(lcs, len(row), m, self._exact):
                found.append((rouge_l_from_lcs(lcs, len(row), m), idx))
        found.sort(key=lambda s: (-s[0], s[1]))
        return found

    def best(self, tokens: Sequence[str]) -> tuple[float, int] | None:
        found = self.matches(tokens)
        return found[0] if found else None


class _JoinedTokens:
    """Lets rouge_scorer score pre-tokenized rows: the "text" is the tokens joined by a separator."""

    SEP = "\x1f"

    def tokenize(self, text: str) -> list[str]:
        return text.split(self.SEP) if text else []


class BruteForceIndex(NearDupIndex):
    """Reference implementation: rouge_scorer.RougeScorer against every row added so far. O(n) per query.

    The LCS is read back from rouge_score's precision, and the decision is the same exact comparison.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._exact = as_fraction(threshold)
        self._scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_JoinedTokens())
        self._rows: list[str] = []
        self.candidates_checked = 0

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, tokens: Sequence[str]) -> int:
        self._rows.append(_JoinedTokens.SEP.join(tokens))
        return len(self._rows) - 1

    def matches(self, tokens: Sequence[str]) -> list[tuple[float, int]]:
        query = _JoinedTokens.SEP.join(tokens)
        m = len(tokens)
        found = []
        for idx, row in enumerate(self._rows):
            self.candidates_checked += 1
            score = self._scorer.score(row, query)["rougeL"]
            n = row.count(_JoinedTokens.SEP) + 1 if row else 0
            lcs = round(score.precision * m)
            if above(lcs, n, m, self._exact):
                found.append((rouge_l_from_lcs(lcs, n, m), idx))
        found.sort(key=lambda s: (-s[0], s[1]))
        return found


@dataclass(frozen=True)
class Match:
    """A near-duplicate found: its score, the index of the earlier row, and what was compared (for --explain)."""

    score: float
    index: int
    detail: str
    compared: dict | None = None


class RougeMatcher:
    """Near-duplicate = ROUGE-L F1 > threshold on the whole question (Self-Instruct's rule), kiwi or char tokens."""

    def __init__(self, tokenizer: Tokenizer, threshold: float, index_factory=None) -> None:
        self.name = tokenizer.name
        self.tokenizer = tokenizer
        self.threshold = threshold
        self._index = (index_factory or NearDupIndex)(threshold)

    def prepare(self, texts: Sequence[str]) -> list[list[str]]:
        return tokenize_all(self.tokenizer, texts)

    def add(self, prepared: Sequence[str]) -> None:
        self._index.add(prepared)

    def best(self, prepared: Sequence[str]) -> Match | None:
        found = self._index.best(prepared)
        if found is None:
            return None
        score, idx = found
        return Match(score, idx, f"ROUGE-L {score:.3f} > {self.threshold} ({self.name} tokens)")

    @property
    def candidates_checked(self) -> int:
        return self._index.candidates_checked


def tokenize_all(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[str]]:
    """Tokenize in one batch, each distinct text once (generated data repeats itself)."""
    unique = list(dict.fromkeys(texts))
    by_text = dict(zip(unique, tokenizer.tokenize_many(unique), strict=True))
    return [by_text[t] for t in texts]

