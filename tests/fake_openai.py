"""A fake OpenAI-compatible server for tests: real HTTP on 127.0.0.1, stdlib only.

It serves POST /v1/chat/completions. Each request takes the next reply from `script` (a list of `Reply` or
callables), and once the script is used up, `default(n, body)`. Helpers build the replies tests need: canned
completions, 429 with Retry-After, 500, a body that is not JSON, and "hang until the server stops" for crash tests.

    with FakeOpenAI(script=[error(429), error(500)]) as server:
        client = openai.AsyncOpenAI(base_url=server.url, api_key="x")
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Distinct Korean chat requests with short answers; none is a near-duplicate of another at ROUGE-L 0.7.
TASK_POOL: tuple[tuple[str, str, str], ...] = (
    ("해장 추천", "", "콩나물국밥이나 북엇국 어떠세요? 속을 편하게 풀어 줘요."),
    ("저녁 뭐 먹지", "", "오늘은 제육볶음 정식 어떠세요? 든든하고 밥이랑 잘 어울려요."),
    ("비 오는 날 생각나는 음식 알려줘", "", "바삭한 해물파전에 따뜻한 칼국수를 곁들여 보세요."),
    ("다이어트 중인데 점심으로 뭐가 좋을까?", "", "닭가슴살 샐러드나 곤약 비빔밥이 가볍고 배도 불러요."),
    ("감기 기운이 있을 때 먹기 좋은 거", "", "따뜻한 전복죽이나 생강차를 추천해요. 푹 쉬세요."),
    ("편의점에서 간단히 때울 만한 메뉴", "", "삼각김밥과 컵라면 조합, 아니면 샌드위치와 우유도 좋아요."),
    ("부산 가면 꼭 먹어야 하는 음식은?", "", "돼지국밥과 밀면은 꼭 드셔 보세요. 씨앗호떡도 별미예요."),
    ("맥주 안주로 어울리는 것", "", "바삭한 치킨이나 감자튀김, 먹태구이가 잘 어울려요."),
    ("혼밥하기 좋은 메뉴 골라줘", "", "덮밥이나 라멘처럼 한 그릇으로 끝나는 메뉴가 편해요."),
    ("냉장고 재료로 만들 수 있는 요리", "계란, 대파, 밥", "대파 계란볶음밥을 만들어 보세요. 십 분이면 충분해요."),
    ("땅콩 알레르기가 있어요. 간식 추천 부탁해요", "", "과일 요거트나 쌀과자는 어떠세요? 성분표는 꼭 확인하세요."),
    ("그거 말고 다른 거 없어?", "", "그럼 매콤한 쭈꾸미볶음은 어떠세요? 입맛이 확 살아나요."),
    ("부모님 생신상 메뉴 고민이에요", "", "갈비찜과 잡채, 미역국으로 차리면 정성스러워 보여요."),
    ("야식으로 뭐 시켜 먹을까", "", "족발이나 보쌈 어떠세요? 여럿이 나눠 먹기 좋아요."),
    ("여름에 입맛 없을 때 먹을 만한 것", "", "시원한 물냉면이나 콩국수가 입맛을 돋워 줘요."),
    ("아침에 빨리 먹을 수 있는 거 알려줘", "", "바나나와 그릭요거트, 또는 토스트 한 장이면 든든해요."),
    ("첫 데이트에 가기 좋은 식당 종류", "", "분위기 좋은 파스타집이나 조용한 일식집을 추천해요."),
    ("된장찌개 맛있게 끓이는 법", "", "멸치 육수에 된장을 풀고 애호박, 두부, 양파를 넣어 끓여요."),
    ("단백질 많은 음식 뭐가 있어?", "", "닭가슴살, 두부, 계란, 연어가 단백질이 풍부해요."),
    ("비건 친구랑 먹을 메뉴", "", "산채비빔밥이나 두부스테이크처럼 채소 위주 메뉴가 좋아요."),
    ("카페에서 케이크랑 같이 마실 음료", "", "달콤한 케이크에는 쌉쌀한 아메리카노가 잘 어울려요."),
    ("회식 장소로 무난한 곳", "", "삼겹살집이나 한우 고깃집이 여럿이 가기 무난해요."),
    ("매운 음식 추천해줘", "", "불닭볶음면이나 매운 떡볶이 어떠세요? 스트레스가 풀려요."),
    ("차가운 디저트 추천해줘", "", "팥빙수나 젤라토로 더위를 식혀 보세요."),
    ("전주 여행 중인데 뭐 먹으면 좋아?", "", "전주비빔밥과 콩나물국밥은 꼭 드셔 보세요."),
    ("소주랑 어울리는 국물 요리", "", "얼큰한 김치찌개나 어묵탕이 소주와 잘 맞아요."),
    ("자취생 일주일 식단 짜줘", "", "카레, 김치볶음밥, 계란말이처럼 쉽고 오래 두는 메뉴로 짜 보세요."),
    ("배탈 났을 때 뭐 먹어야 해", "", "흰죽이나 바나나처럼 자극 없는 음식을 조금씩 드세요."),
    ("겨울 간식으로 뭐가 좋을까", "", "붕어빵이나 군고구마가 겨울에 딱이에요."),
    ("아이들이 좋아할 반찬", "", "달걀말이나 어묵볶음, 소시지 야채볶음을 좋아해요."),
    ("배달 치킨 브랜드 말고 메뉴만 골라줘", "", "간장 치킨이나 파닭처럼 덜 자극적인 맛을 골라 보세요."),
    ("시험 기간에 공부하면서 먹을 간식", "", "견과류나 다크초콜릿처럼 손에 묻지 않는 간식이 좋아요."),
    ("캠핑 가서 해 먹기 좋은 요리", "", "바비큐와 라면, 마시멜로 구이가 캠핑 분위기에 잘 맞아요."),
    ("명절에 남은 전으로 뭐 해 먹지", "", "남은 전을 넣고 전찌개를 끓이면 별미예요."),
    ("제주도 향토 음식 알려줘", "", "고기국수와 몸국, 갈치조림이 유명해요."),
    ("와인 안주 추천", "레드 와인", "치즈 플레이트나 스테이크가 레드 와인과 잘 어울려요."),
    ("운동 끝나고 먹기 좋은 식사", "", "현미밥에 연어구이, 또는 닭가슴살 포케를 드셔 보세요."),
    ("친구 집들이 선물로 가져갈 음식", "", "케이크나 과일 바구니, 와인 한 병이 무난해요."),
    ("점심시간이 짧을 때 빨리 나오는 메뉴", "", "김밥이나 국수처럼 바로 나오는 메뉴를 고르세요."),
    ("출출한데 라면 말고 뭐 없을까", "", "떡볶이나 주먹밥을 간단히 만들어 드셔 보세요."),
    ("삼계탕에 들어가는 재료가 궁금해", "", "닭, 찹쌀, 대추, 마늘, 인삼이 기본 재료예요."),
    ("스트레스 받을 때 당기는 음식", "", "달콤한 마카롱이나 매콤한 닭발이 기분 전환에 좋아요."),
    ("손님 초대할 때 만들 메인 요리", "여섯 명", "여섯 분이면 수육이나 찜닭을 넉넉히 준비해 보세요."),
    ("채소를 싫어하는 사람도 먹을 만한 요리", "", "채소를 잘게 다져 넣은 볶음밥이나 만두를 추천해요."),
    ("속초 가면 먹을 만한 거", "", "오징어순대와 닭강정, 물회를 드셔 보세요."),
    ("막걸리에는 역시 뭐가 좋을까", "", "김치전이나 도토리묵무침이 막걸리와 찰떡이에요."),
    ("입이 심심할 때 씹을 거", "", "오징어채나 누룽지 과자처럼 오래 씹는 간식이 좋아요."),
    ("소화 잘 되는 저녁 메뉴", "", "부드러운 두부조림과 미역국이면 속이 편해요."),
)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


def completion(content: str, *, finish_reason: str = "stop", prompt_tokens: int = 1000, completion_tokens: int = 500,
               model: str = "fake-model") -> Reply:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return Reply(200, json.dumps(body, ensure_ascii=False).encode(), {"Content-Type": "application/json"})


def error(status: int, message: str = "fake error", retry_after: float | None = None) -> Reply:
    headers = {"Content-Type": "application/json"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = json.dumps({"error": {"message": message, "type": "fake", "code": status}}).encode()
    return Reply(status, body, headers)


def not_json_body() -> Reply:
    return Reply(200, b"<html>proxy error</html>", {"Content-Type": "application/json"})


def hang() -> Reply:
    """Never answer (until the server stops): a request in flight when the client is killed."""
    return Reply(hang=True)


def tasks_json(start: int, count: int, pool=TASK_POOL) -> str:
    rows = [
        {"instruction": pool[i % len(pool)][0], "input": pool[i % len(pool)][1], "output": pool[i % len(pool)][2]}
        for i in range(start, start + count)
    ]
    return json.dumps(rows, ensure_ascii=False)


def pool_replies(per_request: int) -> Callable[[int, dict], Reply]:
    """Default reply: request n gets pool rows n*per_request ... (wrapping, so late requests repeat rows)."""
    return lambda n, body: completion(tasks_json(n * per_request, per_request))


class FakeOpenAI:
    def __init__(self, script: list | None = None, default: Callable[[int, dict], Reply] | None = None) -> None:
        self.script = list(script or [])
        self.default = default or pool_replies(4)
        self.requests: list[dict] = []
        self.times: list[float] = []  # time.monotonic() at each request's arrival
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def _next_reply(self, body: dict) -> Reply:
        with self._lock:
            n = len(self.requests)
            self.requests.append(body)
            self.times.append(time.monotonic())
            step = self.script.pop(0) if self.script else None
        if step is None:
            return self.default(n, body)
        return step(n, body) if callable(step) else step

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    reply = error(404, f"no route {self.path}")
                else:
                    reply = server._next_reply(json.loads(raw or b"{}"))
                if reply.hang:
                    server.stopping.wait(30)
                    return
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

        return Handler

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
