"""What banning dish names while sampling costs, for ban lists as long as a user's allergies make them.

An allergy to 밀 and 대두 bans every catalog spelling of several hundred dishes. Measured for the ban in
model/avoid.py and for the first version (tests/phrase_ban_reference.py), side by side in one run, on a byte-level BPE
tokenizer the size of Polyglot-ko's (about 30,000 tokens, trained on our bundled text):

- build: constructing the PhraseBan for one request (once per generation), with the per-phrase token sets cold (the
  first request of a process) and warm (every later one);
- step: one `banned(generated)` call, the host-side work added to every decoding step of a row that avoids phrases,
  averaged over the steps of real answers.

    .venv/bin/python bench/phrase_ban.py [--vocab 30000] [--docs]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from common import append_docs, command_line, cpu_line, markdown_table, median, today  # noqa: E402
from phrase_ban_reference import ReferencePhraseBan  # noqa: E402

from model import DishCatalog  # noqa: E402
from model.serving.bans import PhraseBan, TokenBytes  # noqa: E402

ANSWERS = [
    "비 오는 날에는 바삭한 해물파전에 따뜻한 칼국수 어때요? 막걸리 한 잔 곁들이면 더 좋아요.",
    "오늘 저녁은 담백한 연두부와 계란찜 어때요? 소화가 잘 돼서 늦은 시간에도 부담이 없어요.",
    "매운 게 당길 때는 얼큰한 김치찌개나 순두부찌개가 좋아요. 밥 한 공기 뚝딱이에요.",
    "더운 날에는 시원한 물냉면이나 콩국수 어때요? 새콤한 육수가 더위를 식혀 줘요.",
]


def profiles(catalog: DishCatalog) -> dict[str, list[str]]:
    def spellings(dishes) -> list[str]:
        return [s for d in dishes for s in d.spellings]

    return {
        "one turned-down dish (김치찌개)": list(catalog["김치찌개"].spellings),
        "allergy 새우": spellings(catalog.with_allergen("새우")),
        "allergies 밀 + 대두": spellings({d.name: d for a in ("밀", "대두") for d in catalog.with_allergen(a)}.values()),
        "the whole catalog": spellings(catalog),
    }


def step_histories(tokenizer) -> list[list[int]]:
    histories = []
    for answer in ANSWERS:
        ids = tokenizer.encode(answer, add_special_tokens=False)
        histories += [ids[:n] for n in range(1, len(ids) + 1)]
    return histories


def time_steps(ban, histories: list[list[int]], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for history in histories:
            ban.banned(history)
        best = min(best, (time.perf_counter() - started) / len(histories))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=30_000, help="tokenizer size to train (Polyglot-ko: 30,080)")
    parser.add_argument("--docs", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args()

    from model.demo.tiny import korean_corpus, train_tokenizer

    catalog = DishCatalog.load()
    tokenizer = train_tokenizer(korean_corpus(), vocab_size=args.vocab)
    histories = step_histories(tokenizer)
    rows = []
    for name, phrases in profiles(catalog).items():
        cold_vocab = TokenBytes(tokenizer)
        started = time.perf_counter()
        fast = PhraseBan(cold_vocab, phrases)
        cold = time.perf_counter() - started
        warm = median([_timed(PhraseBan, cold_vocab, phrases) for _ in range(5)])
        started = time.perf_counter()
        slow = ReferencePhraseBan(cold_vocab, phrases)
        slow_build = time.perf_counter() - started
        sample = histories[:: max(1, len(histories) // 60)]
        assert all(set(fast.banned(h)) == set(slow.banned(h)) for h in sample), "the two bans disagree"
        fast_step = time_steps(fast, histories, rounds=5)
        slow_step = time_steps(slow, histories, rounds=1 if len(phrases) > 500 else 3)
        rows.append([
            name, len(set(phrases)), len(fast.always), f"{cold * 1000:.1f} ms", f"{warm * 1000:.2f} ms",
            f"{slow_build * 1000:.0f} ms", f"{fast_step * 1e6:.1f} µs", f"{slow_step * 1e6:.0f} µs",
            f"{slow_step / fast_step:.0f}×",
        ])
        print(rows[-1], flush=True)
    table = markdown_table(
        ["ban list", "phrases", "tokens always banned", "build, cold", "build, warm", "build, first version",
         "per step", "per step, first version", "step speed-up"], rows)
    body = "\n".join([
        "`PhraseBan` (model/avoid.py) for ban lists as long as allergies make them, against the first version "
        "(tests/phrase_ban_reference.py) in the same run; both ban exactly the same tokens (checked). "
        f"Tokenizer: byte-level BPE trained on the bundled text, {len(tokenizer)} tokens (Polyglot-ko has 30,080). "
        "Per step: one `banned()` call, best of several passes over every prefix of four real answers "
        f"({len(histories)} steps). Build: once per generation; cold = first request of a process.",
        "", f"- Command: `{command_line()}`", f"- Machine: {cpu_line()}", f"- Date: {today()}", "", table,
    ])
    print(body)
    if args.docs:
        append_docs("## Phrase ban cost (allergy-sized ban lists)", body)


def _timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
