"""bot/answering.py: the streamed check that stops a sample once it names a banned dish looks only at the end of the
text; it must never notice a name later than a check of the whole text would."""

from __future__ import annotations

import random

from bot.service.drawing import _reach, _word_start
from model import DishCatalog

CATALOG = DishCatalog.load()


def texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = ["오늘은", "비 오는 날엔", "따뜻한", "든든하게", "어때요?", "추천해요.", "좋아요!", "그리고", "맛집에서", "한 그릇"]
    particles = ["", "는", "를", "이랑", "도", "맛집", " 전문점", "에", "곱빼기"]
    found = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randrange(3, 14)):
            if rng.random() < 0.4:
                spelling = rng.choice(rng.choice(CATALOG.dishes).spellings)
                if len(spelling) > 2 and rng.random() < 0.3:
                    cut = rng.randrange(1, len(spelling))
                    spelling = f"{spelling[:cut]} {spelling[cut:]}"
                parts.append(spelling + rng.choice(particles))
            else:
                parts.append(rng.choice(words))
        found.append(" ".join(parts))
    return found


def test_the_windowed_check_is_never_later_than_the_whole_text_check() -> None:
    reach = _reach(CATALOG)
    rng = random.Random(3)
    checked = 0
    for text in texts(250, seed=1):
        watch = {d.name for d in CATALOG.find(text)}
        watch = set(rng.sample(sorted(watch), k=max(1, len(watch) // 2))) if watch else set()
        seen_by_window = False
        end = 0
        while end < len(text):
            delta = rng.randrange(1, 5)
            end = min(len(text), end + delta)
            prefix = text[:end]
            window = prefix[_word_start(prefix, end - delta - reach):]
            seen_by_window = seen_by_window or bool(watch & set(CATALOG.names_in(window)))
            if watch & set(CATALOG.names_in(prefix)):
                assert seen_by_window, (text, prefix)
                checked += 1
                break
    assert checked > 120
