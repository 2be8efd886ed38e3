"""The Korean Self-Instruct prompt and the parser for what the model sends back.

Output format asked of the model: one JSON array of objects `{"instruction": ..., "input": ..., "output": ...}`
and nothing else. A JSON array is the easiest thing to parse robustly: code fences and chatter around it are
stripped, and when the answer is cut off (max_tokens), the complete objects before the cut are still recovered
one by one with `json.JSONDecoder.raw_decode`.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from dataset_builder.schema import AlpacaRow, SeedTask

SITUATIONS = (
    "아침·점심·저녁·야식",
    "날씨와 계절",
    "해장",
    "다이어트",
    "아플 때 회복식",
    "디저트·카페",
    "편의점",
    "배달",
    "간단한 요리법",
    "재료와 영양",
    "데이트·모임·가족 식사",
    "지역 음식",
    "술안주",
    "혼밥",
    "알레르기·못 먹는 음식",
    "앞선 추천이 마음에 들지 않아 다른 메뉴를 찾는 경우",
)

PROMPT_TEMPLATE = """\
당신은 한국어 메뉴 추천 챗봇 '메추리'의 학습 데이터를 만드는 작가입니다.
아래 예시처럼, 사용자가 메추리에게 할 법한 요청(instruction)과 메추리의 답변(output)을 {num_tasks}개 새로 만들어 주세요.

지켜야 할 것:
1. 모든 요청과 답변은 자연스러운 한국어로 씁니다. 요청은 실제 채팅처럼 짧아도 됩니다 (예: "해장 추천", "저녁 뭐 먹지").
2. 요청은 서로 겹치지 않게, 예시와도 겹치지 않게 다양하게 만듭니다. 이런 상황을 골고루 다룹니다: {situations}.
3. 말투, 길이, 형식을 다양하게 합니다: 질문, 부탁, 혼잣말, 조건이 여러 개인 요청 등.
4. input은 요청에 덧붙는 맥락(냉장고 재료, 인원, 예산, 못 먹는 음식 등)입니다. 필요 없으면 빈 문자열 ""로 둡니다.
   다른 메뉴를 찾는 요청이면 input에 앞서 추천한 메뉴를 적고(예: "추천했던 메뉴: 제육볶음"), 답변에서는 그 메뉴를 빼고 추천합니다.
5. output은 메추리의 답변입니다: 친근한 존댓말로, 구체적인 메뉴 이름을 1~3개 들고 이유를 짧게 덧붙입니다. 2~6문장.
6. 사진, 이미지, 그래프, 파일, 영상, 음악처럼 글로 답할 수 없는 것을 요구하는 요청은 만들지 않습니다.
7. 확실하지 않은 영양 수치나 가격은 지어내지 않습니다. 알레르기 관련 답변에서는 성분 확인을 권합니다.

예시:
{examples}

출력 형식: 다른 말 없이 JSON 배열 하나만 출력하세요. 각 원소는 "instruction", "input", "output" 세 키를 가진 객체입니다.
[{{"instruction": "...", "input": "", "output": "..."}}, ...]
"""


def _example_lines(examples: Sequence[AlpacaRow]) -> str:
    return "\n".join(f"{i}. {ex.to_json()}" for i, ex in enumerate(examples, start=1))


def sample_examples(
    seeds: Sequence[SeedTask], machine: Sequence[AlpacaRow], num_seed: int, num_machine: int, rng: random.Random
) -> list[AlpacaRow]:
    """k seed tasks (one instance each) and m machine-made rows, as in Self-Instruct, shuffled together."""
    chosen_seeds = rng.sample(list(seeds), min(num_seed, len(seeds)))
    examples = [task.to_alpaca_rows()[rng.randrange(len(task.instances))] for task in chosen_seeds]
    examples += rng.sample(list(machine), min(num_machine, len(machine)))
    rng.shuffle(examples)
    return examples


def build_prompt(examples: Sequence[AlpacaRow], num_tasks: int) -> str:
    return PROMPT_TEMPLATE.format(
        num_tasks=num_tasks, situations=", ".join(SITUATIONS), examples=_example_lines(examples)
    )


@dataclass
class ParseResult:
    rows: list[AlpacaRow] = field(default_factory=list)
    problems: Counter = field(default_factory=Counter)  # reason -> count; never raises


def _strip_fences(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        if "```" in text:
            text = text[: text.rindex("```")]
    return text


def _objects_in_array(text: str, start: int) -> tuple[list, bool]:
    """Decode the elements of the array opening at text[start] one by one; (elements, whether it closed)."""
    decoder = json.JSONDecoder()
    items = []
    pos = start + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            return items, False
        if text[pos] == "]":
            return items, True
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return items, False
        items.append(item)


def parse_tasks(text: str | None) -> ParseResult:
    """Rows from a model answer. Problems are counted by reason, and nothing here raises."""
    result = ParseResult()
    if not text or not text.strip():
        result.problems["empty_response"] += 1
        return result
    body = _strip_fences(text)
    items: list = []
    closed = False
    start = body.find("[")
    brace = body.find("{")
    if brace != -1 and (start == -1 or brace < start):
        # Some models wrap the list, {"tasks": [...]}, or send a single task object.
        try:
            obj = json.loads(body[brace : body.rindex("}") + 1])
            lists = [v for v in obj.values() if isinstance(v, list)] if isinstance(obj, dict) else []
            if lists:
                items, closed = lists[0], True
            elif isinstance(obj, dict) and "instruction" in obj:
                items, closed = [obj], True
        except (json.JSONDecodeError, ValueError):
            pass
    if not items and start != -1:
        items, closed = _objects_in_array(body, start)
    if not items:
        reason = "no_json_list" if start == -1 and not closed else ("empty_list" if closed else "bad_json")
        result.problems[reason] += 1
        return result
    if not closed:
        result.problems["truncated_list"] += 1
    for item in items:
        if not isinstance(item, dict):
            result.problems["not_an_object"] += 1
            continue
        instruction, output = item.get("instruction"), item.get("output")
        raw_input = item.get("input")
        if not isinstance(instruction, str) or not instruction.strip():
            result.problems["missing_instruction"] += 1
            continue
        if not isinstance(output, str) or not output.strip():
            result.problems["missing_output"] += 1
            continue
        if raw_input is not None and not isinstance(raw_input, str):
            result.problems["bad_input_type"] += 1
            continue
        row = AlpacaRow(instruction=instruction.strip(), input=(raw_input or "").strip(), output=output.strip())
        result.rows.append(row)
    return result
