"""A fake Telegram Bot API for tests: in-process (a PTB `BaseRequest`) or over HTTP on 127.0.0.1 (for `run_bot`).

Like Telegram it can also push updates to the bot's webhook (`deliver`): an HTTP POST of the update's JSON to the URL
from setWebhook, with the secret from setWebhook in `X-Telegram-Bot-Api-Secret-Token`.

Both transports share one `FakeBotAPI`, which keeps the chat state a real server keeps (messages, their text and
keyboards), records every call with its parameters, and answers the way Telegram does where the bot must cope:
4,096-character limit, "message is not modified", 64-byte callback data, non-zero draft ids, drafts only in private
chats. Failures can be injected per method: 429 with retry_after, "not modified", "too long", "can't parse entities",
TimedOut, a 502.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from telegram.error import TimedOut
from telegram.request import BaseRequest, RequestData

BOT_USER = {
    "id": 7_000_001, "is_bot": True, "first_name": "메추리", "username": "mechuri_test_bot", "can_join_groups": True,
    "can_read_all_group_messages": False, "supports_inline_queries": False,
}
MAX_TEXT = 4096
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a "
    "current content and reply markup of the message"
)
FAILURES: dict[str, tuple[int, str]] = {
    "retry_after": (429, "Too Many Requests: retry after {retry_after}"),
    "not_modified": (400, NOT_MODIFIED),
    "too_long": (400, "Bad Request: message is too long"),
    "parse_entities": (400, "Bad Request: can't parse entities: Unsupported start tag \"b\" at byte offset 0"),
    "bad_gateway": (502, "Bad Gateway"),
    "unauthorized": (401, "Unauthorized"),  # a revoked or mistyped token
    "timed_out": (0, ""),  # raised as telegram.error.TimedOut by the in-process transport
}
# Parameters that are strings even when they look like JSON ("123" as a text must stay a string).
STRING_PARAMS = {"text", "caption", "callback_query_id", "parse_mode", "action", "description", "language_code"}


class FakeTimeout(Exception):
    """An injected time-out; the in-process transport turns it into telegram.error.TimedOut."""


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    failed: str | None = None  # the injected failure kind, if this call was made to fail


@dataclass
class _Failure:
    kind: str
    times: int
    retry_after: int


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class FakeBotAPI:
    """Thread-safe: the HTTP transport calls `handle` from server threads while tests read from the event loop."""

    def __init__(self, bot: dict[str, Any] | None = None) -> None:
        self.bot = dict(bot or BOT_USER)
        self.calls: list[Call] = []
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.chats: dict[int, dict[str, Any]] = {}
        self._failures: dict[str, list[_Failure]] = {}
        self._next_message_id = 1000
        self._next_update_id = 1
        self._updates: list[dict[str, Any]] = []
        self._lock = threading.Condition()
        self.webhook: dict[str, Any] | None = None  # the parameters of the last setWebhook; None after deleteWebhook

    # --- failure injection ---------------------------------------------------------------------------------------

    def fail(self, method: str, kind: str, *, times: int = 1, retry_after: int = 1) -> None:
        """The next `times` calls of `method` fail with `kind` (a key of FAILURES) and change nothing."""
        if kind not in FAILURES:
            raise ValueError(f"unknown failure kind {kind!r}; pick one of {sorted(FAILURES)}")
        with self._lock:
            self._failures.setdefault(method, []).append(_Failure(kind, times, retry_after))

    def _take_failure(self, method: str) -> _Failure | None:
        queue = self._failures.get(method) or [None]
        failure = queue[0]
        if failure is not None:
            failure.times -= 1
            if failure.times <= 0:
                queue.pop(0)
        return failure

    # --- the API -------------------------------------------------------------------------------------------------

    def handle(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One Bot API call: (HTTP status, JSON body). Raises FakeTimeout for an injected time-out."""
        with self._lock:
            call = Call(method, params)
            self.calls.append(call)
            failure = self._take_failure(method)
            if failure is not None:
                call.failed = failure.kind
                if failure.kind == "timed_out":
                    raise FakeTimeout(method)
                status, description = FAILURES[failure.kind]
                body: dict[str, Any] = {"ok": False, "error_code": status,
                                        "description": description.format(retry_after=failure.retry_after)}
                if failure.kind == "retry_after":
                    body["parameters"] = {"retry_after": failure.retry_after}
                return status, body
            handler = getattr(self, f"_api_{method}", None)
            if handler is None:
                return 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
            try:
                return 200, {"ok": True, "result": handler(params)}
            except _ApiError as exc:
                call.failed = exc.description
                return 400, {"ok": False, "error_code": 400, "description": exc.description}

    def _api_getMe(self, params: dict[str, Any]) -> Any:
        return self.bot
    def _api_getUpdates(self, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset") or 0)
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), 0.5)
        while not self._updates and time.monotonic() < deadline:
            self._lock.wait(deadline - time.monotonic())
        return self._updates[: int(params.get("limit") or 100)]

    def _api_setWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook = dict(params)
        return True

    def _api_deleteWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook = None
        return True

    def _api_ok(self, params: dict[str, Any]) -> Any:
        return True

    _api_setMyCommands = _api_sendChatAction = _api_answerCallbackQuery = _api_ok

    def _api_sendMessageDraft(self, params: dict[str, Any]) -> Any:
        if not int(params.get("draft_id") or 0):
            raise _ApiError("Bad Request: draft_id must be non-zero")
        if self.chats.get(int(params["chat_id"]), {}).get("type", "private") != "private":
            raise _ApiError("Bad Request: drafts can be sent only to private chats")
        _check_text(params.get("text") or "", allow_empty=True)
        return True

    def _api_sendMessage(self, params: dict[str, Any]) -> Any:
        text = params.get("text") or ""
        _check_text(text)
        _check_markup(params.get("reply_markup"), text, params.get("parse_mode"))
        chat_id = int(params["chat_id"])
        self._next_message_id += 1
        message = {
            "message_id": self._next_message_id,
            "date": int(time.time()),
            "chat": self.chats.get(chat_id, {"id": chat_id, "type": "private", "first_name": "손님"}),
            "from": self.bot,
            "text": text,
        }
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        self.messages[(chat_id, message["message_id"])] = message
        return message

    def _stored(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get((int(params["chat_id"]), int(params["message_id"])))
        if message is None:
            raise _ApiError("Bad Request: message to edit not found")
        return message

    def _api_editMessageText(self, params: dict[str, Any]) -> Any:
        message = self._stored(params)
        text = params.get("text") or ""
        _check_text(text)
        _check_markup(params.get("reply_markup"), text, params.get("parse_mode"))
        markup = params.get("reply_markup")
        if text == message["text"] and markup == message.get("reply_markup"):
            raise _ApiError(NOT_MODIFIED)
        message["text"] = text
        message.pop("reply_markup", None)
        if markup:
            message["reply_markup"] = markup
        return message

    def _api_editMessageReplyMarkup(self, params: dict[str, Any]) -> Any:
        message = self._stored(params)
        markup = params.get("reply_markup")
        if markup == message.get("reply_markup") or (not markup and "reply_markup" not in message):
            raise _ApiError(NOT_MODIFIED)
        message.pop("reply_markup", None)
        if markup:
            message["reply_markup"] = markup
        return message

    def _api_deleteMessage(self, params: dict[str, Any]) -> Any:
        self._stored(params)
        del self.messages[(int(params["chat_id"]), int(params["message_id"]))]
        return True

    # --- updates -------------------------------------------------------------------------------------------------

    def user(self, user_id: int, name: str = "손님") -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": name, "language_code": "ko"}

    def chat(self, chat_id: int, chat_type: str = "private") -> dict[str, Any]:
        chat = {"id": chat_id, "type": chat_type}
        chat.update({"first_name": "손님"} if chat_type == "private" else {"title": "점심 모임"})
        with self._lock:
            self.chats[chat_id] = chat
        return chat

    def message_update(
        self, chat_id: int, user_id: int, text: str | None = None, *, chat_type: str = "private",
        reply_to: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An update with a user's message. Commands and @mentions get their entities, as Telegram adds them."""
        with self._lock:
            self._next_message_id += 1
            message: dict[str, Any] = {
                "message_id": self._next_message_id, "date": int(time.time()),
                "chat": self.chat(chat_id, chat_type), "from": self.user(user_id),
            }
        if text is not None:
            message["text"] = text
            if entities := _entities(text):
                message["entities"] = entities
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        message.update(extra or {})
        return self._new_update({"message": message})

    def callback_update(self, chat_id: int, user_id: int, message_id: int, data: str) -> dict[str, Any]:
        """A press of an inline button under the bot's message `message_id` (the message as stored now)."""
        with self._lock:
            message = json.loads(json.dumps(self.messages[(chat_id, message_id)]))  # a copy, as sent on the wire
        return self._new_update({"callback_query": {
            "id": f"cb{time.monotonic_ns()}", "from": self.user(user_id), "chat_instance": f"ci{chat_id}",
            "data": data, "message": message}})

    def _new_update(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._next_update_id += 1
            return {"update_id": self._next_update_id - 1, **body}

    def deliver(self, update: dict[str, Any] | bytes, *, url: str | None = None, secret: str | None = None,
                content_type: str = "application/json", timeout: float = 30.0) -> tuple[int, bytes]:
        """POST an update to the webhook as Telegram does: (HTTP status, body). `url` and `secret` default to what
        the bot gave setWebhook; raw bytes are sent as they are (a malformed body)."""
        webhook = self.webhook or {}
        target = url or webhook.get("url")
        if not target:
            raise AssertionError("no webhook is set: the bot never called setWebhook")
        secret = webhook.get("secret_token") if secret is None else secret
        body = update if isinstance(update, bytes) else json.dumps(update, ensure_ascii=False).encode()
        request = urllib.request.Request(target, data=body, method="POST", headers={"Content-Type": content_type})
        if secret:
            request.add_header("X-Telegram-Bot-Api-Secret-Token", secret)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def push_update(self, update: dict[str, Any]) -> None:
        """Queue an update for getUpdates (the HTTP transport's long polling)."""
        with self._lock:
            self._updates.append(update)
            self._lock.notify_all()

    # --- reading what happened -----------------------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def chat_messages(self, chat_id: int) -> list[dict[str, Any]]:
        """The bot's messages in a chat, oldest first, as they stand now (after edits and deletions)."""
        with self._lock:
            found = [m for (c, _), m in self.messages.items() if c == chat_id]
        return sorted(found, key=lambda m: m["message_id"])


class _ApiError(Exception):
    @property
    def description(self) -> str:
        return str(self.args[0])


def _check_text(text: str, *, allow_empty: bool = False) -> None:
    if not text.strip() and not allow_empty:
        raise _ApiError("Bad Request: message text is empty")
    if len(text) > MAX_TEXT:
        raise _ApiError("Bad Request: message is too long")


def _check_markup(markup: Any, text: str, parse_mode: Any) -> None:
    if parse_mode == "HTML" and text.count("<") != text.count(">"):
        raise _ApiError(FAILURES["parse_entities"][1])
    for row in (markup or {}).get("inline_keyboard", []):
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(data.encode()) <= 64:
                raise _ApiError("Bad Request: BUTTON_DATA_INVALID")


def _entities(text: str) -> list[dict[str, Any]]:
    entities = []
    if text.startswith("/"):
        command = text.split()[0]
        entities.append({"type": "bot_command", "offset": 0, "length": _utf16_len(command)})
    for word in text.split():
        if word.startswith("@") and len(word) > 1:
            start = text.index(word)
            entities.append({"type": "mention", "offset": _utf16_len(text[:start]), "length": _utf16_len(word)})
    return entities


def decode_params(raw: dict[str, str]) -> dict[str, Any]:
    """Form values as PTB's HTTPXRequest sends them (JSON-encoded objects and numbers) back to Python values."""
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if key in STRING_PARAMS:
            params[key] = value
            continue
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


class FakeRequest(BaseRequest):
    """In-process transport: pass to ApplicationBuilder().request(...) and .get_updates_request(...)."""

    def __init__(self, api: FakeBotAPI, *, latency_s: float = 0.0) -> None:
        self.api = api
        self.latency_s = latency_s

    read_timeout = 5.0

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def do_request(
        self, url: str, method: str, request_data: RequestData | None = None, read_timeout: Any = None,
        write_timeout: Any = None, connect_timeout: Any = None, pool_timeout: Any = None,
    ) -> tuple[int, bytes]:
        # Yield to the loop as a real request would, so ordering bugs between concurrent handlers can show.
        await asyncio.sleep(self.latency_s)
        api_method = url.rsplit("/", 1)[-1]
        params = decode_params(request_data.json_parameters) if request_data else {}
        try:
            status, body = self.api.handle(api_method, params)
        except FakeTimeout:
            raise TimedOut("injected time-out") from None
        return status, json.dumps(body, ensure_ascii=False).encode()


class FakeBotServer:
    """The same fake over HTTP on 127.0.0.1, for `MECHURI_TELEGRAM_BASE_URL`. Use as a context manager."""

    def __init__(self, api: FakeBotAPI) -> None:
        self.api = api
        fake = api

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                raw = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
                self._answer(self.path.rsplit("/", 1)[-1], decode_params(raw))

            def do_GET(self) -> None:
                self._answer(self.path.rsplit("/", 1)[-1].split("?")[0], {})

            def _answer(self, method: str, params: dict[str, Any]) -> None:
                try:
                    status, payload = fake.handle(method, params)
                except FakeTimeout:
                    status, payload = 504, {"ok": False, "error_code": 504, "description": "Gateway Timeout"}
                data = json.dumps(payload, ensure_ascii=False).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the bot hung up, e.g. a long poll cut short at shutdown

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the request line holds the bot token

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-bot-api", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/bot"

    def __enter__(self) -> FakeBotServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

