"""The conversation service: one message in, one answer out, with the history stored on the way.

Front ends (Telegram in bot/handlers.py, the terminal in bot/chat.py) call this and nothing below it. No Telegram types
and no SQL in here: the store owns the queries, the generator owns the model.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bot.korean import with_particle
from bot.ordering import UserLines
from bot.settings import GenerationDefaults
from bot.storage import QuestionGone, Store, Turn
from model import (
    AdapterError,
    AdapterInfo,
    GenerationRequest,
    GenerationResult,
    GeneratorBusy,
    PromptTurn,
    build_prompt,
    request_check,
)

log = logging.getLogger(__name__)

DeltaCallback = Callable[[str], Awaitable[None]]

FAILED_TEXT = "답변을 만들다가 문제가 생겼어요. 잠시 후 다시 시도해 주세요."
EMPTY_TEXT = "음… 딱 떠오르는 메뉴가 없네요. '다른 거'를 눌러 다시 골라 볼까요?"
TRUNCATED_NOTICE = "질문이 너무 길어서 앞부분만 읽었어요."
BUSY_REASON = "busy: the generator queue is full"
REFUSED_UNKNOWN = "그 답변은 찾을 수 없어요. 새로 질문해 주세요."
REFUSED_STALE = "가장 최근 답변만 다시 고를 수 있어요."
REFUSED_STATUS = "이미 다시 고른 답변이에요. 새 답변에서 '다른 거'를 눌러 주세요."
FORGOTTEN_TEXT = "기록을 지우는 사이에 받은 질문이라, 답하지 않고 함께 지웠어요. 다시 물어봐 주세요."


@dataclass(frozen=True)
class Answer:
    turn_id: int  # the stored assistant turn's id (callback data is f"retry:{turn_id}")
    question_turn_id: int
    text: str  # what the user sees (final, stop text removed; safety cautions appended)
    seed: int
    status: str  # "ok" | "failed"
    dishes: tuple[str, ...]  # catalog dishes named in the answer
    notice: str | None = None  # e.g. TRUNCATED_NOTICE
    can_retry: bool = True  # False for a polite refusal: "다른 거" would only refuse again


class ConversationBusy(Exception):
    """The generator's queue is full (or the global cap is reached). The user turn is still stored."""


class RetryRefused(Exception):
    """A forged, stale or foreign retry. `reason` is a polite Korean sentence for the user; nothing was changed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AdapterRefused(AdapterError):
    """An adapter name that does not resolve inside the adapters folder. `str(exc)` is for the log and the operator's
    terminal (it names the folder); `reason` is one Korean sentence for a chat, without any server path."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def new_seed() -> int:
    return secrets.randbits(31)


def resolve_adapter(root: Path, name: str) -> Path:
    """`name` as a folder inside `root`; refuses absolute paths, `..` and symlinks that lead out of `root`."""
    name = name.strip()
    shown = f"'{name[:40]}'"
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise AdapterRefused(f"invalid adapter name {name!r}: give a folder name inside {root}",
                             "어댑터 이름이 올바르지 않아요. 어댑터 폴더 안의 폴더 이름만 적어 주세요.")
    base = root.resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base):
        raise AdapterRefused(f"adapter {name!r} resolves outside {base}; refused",
                             f"{with_particle(shown, '은')} 어댑터 폴더 밖을 가리켜서 불러오지 않았어요.")
    if not path.is_dir():
        raise AdapterRefused(f"no adapter folder {name!r} in {base}: train or copy it there first",
                             f"{with_particle(shown, '이')} 어댑터 폴더에 없어요. 먼저 학습하거나 복사해 주세요.")
    return path


def prompt_turns(turns: Sequence[Turn], before_id: int) -> list[PromptTurn]:
    """Earlier exchanges as the model sees them: each question with its accepted answer.

    Rejected and failed answers are never shown as the model's own words; a question without an accepted answer is
    left out whole.
    """
    accepted: dict[int, Turn] = {}
    for turn in turns:
        if turn.role == "assistant" and turn.status == "ok" and turn.reply_to is not None:
            accepted[turn.reply_to] = turn  # turns come oldest first, so the newest accepted answer wins
    pairs = []
    for turn in turns:
        if turn.role == "user" and turn.id < before_id and turn.id in accepted:
            pairs.append(PromptTurn(question=turn.text, answer=accepted[turn.id].text))
    return pairs


class ConversationService:
    def __init__(
        self,
        store: Store,
        generator: Any,
        *,
        generation: GenerationDefaults,
        catalog: Any | None = None,
        safety: Any | None = None,
        max_retries_for_dish: int = 3,
        adapters_dir: Path | str = "adapters",
        max_concurrent: int | None = None,
        seed_source: Callable[[], int] = new_seed,
    ) -> None:
        self.store = store
        # Fresh random seeds by default; a scripted session (`mechuri chat --seed N`) draws them from a seeded stream.
        self.seed_source = seed_source
        self.generator = generator
        self.generation = generation
        self.catalog = catalog
        self.safety = safety  # model.safety.SafetyNotes, or None
        self.max_retries_for_dish = max_retries_for_dish
        self.adapters_dir = Path(adapters_dir)
        self.max_concurrent = max_concurrent
        self.started_at = time.monotonic()
        # On PostgreSQL with several replicas, a line continues across processes (store.user_locks).
        self._lines = UserLines(store.user_locks, busy=ConversationBusy)
        self._in_flight = 0
        self._answered = 0

    @classmethod
    def from_settings(cls, settings: Any, store: Store, generator: Any, catalog: Any | None = None,
                      safety: Any | None = None) -> ConversationService:
        """The service as configured. The global cap (MECHURI_MAX_CONCURRENT) is the front end's to apply: the bot
        wraps the generator so that generations over the cap wait (bot.app.build_service)."""
        return cls(store, generator, generation=settings.generation_defaults(), catalog=catalog, safety=safety,
                   adapters_dir=settings.adapters_dir)

    # --- the public calls ---------------------------------------------------------------------------------------

    async def reply(
        self, chat_id: int, user_id: int, text: str, *, on_partial: DeltaCallback | None = None,
        user_name: str | None = None,
    ) -> Answer:
        slot = self._lines.join((chat_id, user_id))
        try:
            # The question is stored before waiting for this user's earlier answers: it must survive a crash.
            async with slot.line.intake:
                question = await self.store.add_question(chat_id, user_id, text, user_name)
            await self._lines.wait(slot, question_id=question.id)
            # history=None: the history is read in the same transaction that creates the pending answer.
            return await self._answer(question, None, excluded=(), on_partial=on_partial)
        finally:
            self._lines.leave(slot)

    async def retry(
        self, chat_id: int, user_id: int, turn_id: int, *, on_partial: DeltaCallback | None = None
    ) -> Answer:
        slot = self._lines.join((chat_id, user_id))
        try:
            await self._lines.wait(slot)
            old, question, conversation_turns = await self._check_retry(chat_id, user_id, turn_id)
            if not await self.store.change_status(old.id, "ok", "rejected"):
                raise RetryRefused(REFUSED_STATUS)
            rejected_texts = [t.text for t in conversation_turns if t.role == "assistant" and t.status == "rejected"]
            excluded = self._dishes_in([*rejected_texts, old.text])
            history = prompt_turns(conversation_turns, question.id)
            try:
                return await self._answer(question, history, excluded=excluded, on_partial=on_partial, retry_of=old.id)
            except ConversationBusy:
                await self.store.change_status(old.id, "rejected", "ok")  # nothing was generated: undo the rejection
                raise
        finally:
            self._lines.leave(slot)

    async def reset(self, chat_id: int, user_id: int) -> None:
        """Close the open conversation; the next message opens a new one."""
        slot = self._lines.join((chat_id, user_id))
        try:
            # Holding `intake` keeps messages sent after /reset out of the old conversation.
            async with slot.line.intake:
                await self._lines.wait(slot)
                await self.store.close_conversation(chat_id, user_id)
        finally:
            self._lines.leave(slot)

    async def forget(self, chat_id: int, user_id: int) -> int:
        """Delete everything stored for this user (every chat). Returns the number of rows deleted."""
        slot = self._lines.join((chat_id, user_id))
        try:
            async with slot.line.intake:
                await self._lines.wait(slot)
                deleted = await self.store.forget_user(user_id)
            log.info("forgot a user: %d row(s) deleted", deleted)
            return deleted
        finally:
            self._lines.leave(slot)

    async def reload_adapter(self, name: str) -> AdapterInfo:
        path = resolve_adapter(self.adapters_dir, name)
        info = await self.generator.reload_adapter(path)
        log.info("adapter reloaded: %s (version %s)", info.name, info.version)
        return info

    def status(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "in_flight": self._in_flight,
            "answered": self._answered,
            "users_waiting": len(self._lines),
            "generator": asdict(self.generator.info()),
        }

    # --- answering ----------------------------------------------------------------------------------------------

    async def _check_retry(self, chat_id: int, user_id: int, turn_id: int) -> tuple[Turn, Turn, Sequence[Turn]]:
        found = await self.store.get_turn(turn_id)
        # A foreign turn gets the same answer as a missing one: ids of other people's turns are not confirmed.
        if found is None or found[1].chat_id != chat_id or found[1].user_id != user_id:
            raise RetryRefused(REFUSED_UNKNOWN)
        turn, conversation = found
        if turn.role != "assistant" or turn.reply_to is None:
            raise RetryRefused(REFUSED_UNKNOWN)
        if turn.status == "rejected":
            raise RetryRefused(REFUSED_STATUS)
        if turn.status != "ok" or conversation.closed_at is not None:
            raise RetryRefused(REFUSED_STALE)
        turns = await self.store.conversation_turns(conversation.id)
        if max(t.id for t in turns if t.role == "assistant") != turn.id:
            raise RetryRefused(REFUSED_STALE)
        question = next((t for t in turns if t.id == turn.reply_to), None)
        if question is None:
            raise RetryRefused(REFUSED_UNKNOWN)
        return turn, question, turns

    def _dishes_in(self, texts: Sequence[str]) -> tuple[str, ...]:
        if self.catalog is None:
            return ()
        return tuple(dict.fromkeys(name for text in texts for name in self.catalog.names_in(text)))

    def _spellings(self, dishes: Sequence[str]) -> tuple[str, ...]:
        """Every way of writing the turned-down dishes, for the generator to steer clear of while sampling."""
        found: list[str] = []
        for name in dishes:
            lookup = getattr(self.catalog, "get", None)
            dish = lookup(name) if lookup is not None else None
            found.extend(dish.spellings if dish is not None else (name,))
        return tuple(dict.fromkeys(found))

    def _answer_check(self, question: str, unsafe: Sequence[str]) -> Callable[[str], str | None]:
        """Why an answer's text should be sampled again (bounded, like a turned-down dish), or None to keep it: it
        names a dish the question's safety note warns about, or no dish that fits what the question asks for
        (model/fit.py: only catalog dishes known not to fit, or none at all)."""
        fit = request_check(question, self.catalog)

        def problem(text: str) -> str | None:
            if unsafe and set(self._dishes_in([text])) & set(unsafe):
                return "names a dish its safety note warns about"
            if fit is not None and fit.misses(text):
                return f"names no dish that fits {list(fit.wishes)}"
            return None

        return problem

    def _adapter(self) -> AdapterInfo:
        try:
            return self.generator.info().adapter
        except Exception:  # info() is for bookkeeping only; never fail an answer over it
            return AdapterInfo()

    async def _answer(
        self, question: Turn, history: list[PromptTurn] | None, *, excluded: tuple[str, ...],
        on_partial: DeltaCallback | None, retry_of: int | None = None,
    ) -> Answer:
        if self.max_concurrent is not None and self._in_flight >= self.max_concurrent:
            raise ConversationBusy(f"{self._in_flight} generations in flight (cap {self.max_concurrent})")
        self._in_flight += 1
        try:
            return await self._generate_answer(question, history, excluded, on_partial, retry_of)
        finally:
            self._in_flight -= 1

    async def _generate_answer(
        self, question: Turn, history: list[PromptTurn] | None, excluded: tuple[str, ...],
        on_partial: DeltaCallback | None, retry_of: int | None,
    ) -> Answer:
        verdict = self.safety.check(question.text) if self.safety is not None else None
        unsafe = verdict.avoided_dishes(self.catalog) if verdict is not None and self.catalog is not None else ()
        seed = self.seed_source()
        params = {"seed": seed, "avoid": self._spellings((*excluded, *unsafe)), **asdict(self.generation)}
        adapter = self._adapter()
        stored = {"seed": seed, "params": GenerationRequest(prompt="", **params).sampling_params(),
                  "adapter_name": adapter.name, "adapter_version": adapter.version}
        try:
            if history is None:
                turns, pending = await self.store.begin_answer(question, **stored)
                history = prompt_turns(turns, question.id)
            else:
                pending = await self.store.start_answer(question, **stored)
        except QuestionGone:  # /forget (another chat or replica) deleted the question while it waited
            return Answer(0, question.id, FORGOTTEN_TEXT, seed, "failed", ())
        if verdict is not None and verdict.refusal:  # a dangerous premise gets a polite refusal, never a menu
            await self.store.finish_answer(pending.id, status="ok", text=verdict.refusal, seed=seed, attempts=0)
            log.info("turn %d: refused the premise (%s)", pending.id, ", ".join(n.id for n in verdict.notes))
            self._answered += 1
            return Answer(pending.id, question.id, verdict.refusal, seed, "ok", (), can_retry=False)
        misses = self._answer_check(question.text, unsafe)
        built = build_prompt(
            history, question.text, excluded_dishes=excluded, tokenizer=self.generator.tokenizer,
            budget=self.generator.max_context - self.generation.max_new_tokens,
        )
        notice = TRUNCATED_NOTICE if built.question_truncated else None
        request = GenerationRequest(prompt=built.text, **params)
        partial = _Partial(on_partial)
        attempts = 1
        while True:
            # The last allowed attempt is not watched: it becomes the answer whatever it names.
            watch = (*excluded, *unsafe) if attempts <= self.max_retries_for_dish else ()
            try:
                text, result = await self._stream(request, partial, watch)
            except GeneratorBusy as exc:
                if retry_of is not None:
                    await self.store.delete_turn(pending.id)  # nothing ran; the retry is undone whole
                else:
                    await self.store.finish_answer(pending.id, status="failed", error=BUSY_REASON)
                raise ConversationBusy(str(exc)) from exc
            except asyncio.CancelledError:
                await asyncio.shield(self.store.finish_answer(pending.id, status="failed", error="cancelled"))
                raise
            except Exception as exc:
                log.exception("generation failed for turn %d", pending.id)
                await self.store.finish_answer(pending.id, status="failed", error=f"{type(exc).__name__}: {exc}")
                return Answer(pending.id, question.id, FAILED_TEXT, request.seed, "failed", (), notice)
            dishes = self._dishes_in([text])
            problem = "names a dish to avoid" if result is None or set(dishes) & set(excluded) else misses(text)
            if problem is None:
                break
            if attempts > self.max_retries_for_dish:
                log.warning("turn %d still %s after %d samples; kept", pending.id, problem, attempts)
                break
            attempts += 1
            request = GenerationRequest(**{**asdict(request), "seed": self.seed_source()})
            # The front end's partial text starts over with the new sample.
            await self.store.update_turn(pending.id, seed=request.seed, attempts=attempts)
        if attempts > 1:
            log.info("turn %d: %d samples (turned down %s)", pending.id, attempts, list(excluded))
        final = text.strip()
        if final and verdict is not None and verdict.cautions:
            final = "\n\n".join([final, *verdict.cautions])  # stored as shown: the caution is part of the answer
        values: dict[str, Any] = {"seed": request.seed, "attempts": attempts}
        if result is not None:
            values.update(
                prompt_tokens=result.prompt_tokens, new_tokens=result.new_tokens, ttft_ms=result.ttft_s * 1000,
                total_ms=result.total_s * 1000, adapter_name=result.adapter.name,
                adapter_version=result.adapter.version,
            )
        await self.store.finish_answer(pending.id, status="ok", text=final, **values)
        self._answered += 1
        return Answer(pending.id, question.id, final or EMPTY_TEXT, request.seed, "ok", dishes, notice)

    async def _stream(
        self, request: GenerationRequest, partial: _Partial, watch: tuple[str, ...]
    ) -> tuple[str, GenerationResult | None]:
        """Run one sample. Returns (text, result); result is None when it was stopped for naming a watched dish."""
        stream = self.generator.stream(request)  # raises GeneratorBusy at once when the queue is full
        text = ""
        try:
            async for delta in stream:
                text += delta
                if watch and set(self._dishes_in([text])) & set(watch):
                    await stream.aclose()
                    return text, None
                await partial.send(text)
        except BaseException:
            await stream.aclose()
            raise
        result = stream.result
        return (result.text if result is not None else text), result


class _Partial:
    """Forwards partial text to the front end; a failing callback is logged once and then left alone."""

    def __init__(self, callback: DeltaCallback | None) -> None:
        self.callback = callback

    async def send(self, text: str) -> None:
        if self.callback is None or not text:
            return
        try:
            await self.callback(text)
        except Exception:
            log.warning("partial-answer callback failed; streaming to this user stops", exc_info=True)
            self.callback = None
