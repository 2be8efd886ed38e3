"""The conversation service: one message in, one answer out, with the history stored on the way.

Front ends (Telegram in bot/handlers.py, the terminal in bot/chat.py) call this and nothing below it. No Telegram types
and no SQL in here: the store owns the queries, the generator owns the model.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.service.adapters import AdapterRefused, resolve_adapter  # noqa: F401  (AdapterRefused is imported from here)
from bot.service.avoidance import AvoidList
from bot.service.drawing import AnswerDrawer, DeltaCallback, Partial
from bot.service.ordering import UserLines
from bot.settings import GenerationDefaults
from bot.store.feedback import FeedbackStore, VoteResult
from bot.store.history import HISTORY_LIMIT, QuestionGone, Store, Turn, utcnow
from bot.taste import replies as taste_text
from bot.taste.desk import TasteDesk
from bot.taste.profile import TasteItem, TasteProfile
from model import AdapterInfo, DishCatalog, GenerationRequest, GeneratorBusy, PromptTurn, build_prompt, request_check

log = logging.getLogger(__name__)

FAILED_TEXT = "답변을 만들다가 문제가 생겼어요. 잠시 후 다시 시도해 주세요."
EMPTY_TEXT = "음… 딱 떠오르는 메뉴가 없네요. '다른 거'를 눌러 다시 골라 볼까요?"
TRUNCATED_NOTICE = "질문이 너무 길어서 앞부분만 읽었어요."
BUSY_REASON = "busy: the generator queue is full"
REFUSED_UNKNOWN = "그 답변은 찾을 수 없어요. 새로 질문해 주세요."
REFUSED_STALE = "가장 최근 답변만 다시 고를 수 있어요."
REFUSED_STATUS = "이미 다시 고른 답변이에요. 새 답변에서 '다른 거'를 눌러 주세요."
REFUSED_VOTE = "이 답변에는 평가를 남길 수 없어요."
FORGOTTEN_TEXT = "기록을 지우는 사이에 받은 질문이라, 답하지 않고 함께 지웠어요. 다시 물어봐 주세요."


@dataclass(frozen=True)
class Answer:
    turn_id: int  # the stored assistant turn's id (callback data is f"retry:{turn_id}"); 0 when none was stored
    question_turn_id: int
    text: str  # what the user sees (final, stop text removed; safety cautions appended)
    seed: int
    status: str  # "ok" | "failed" | "ask" (a taste statement to confirm) | "noted" (a statement already known)
    dishes: tuple[str, ...]  # catalog dishes named in the answer
    notice: str | None = None  # e.g. TRUNCATED_NOTICE
    can_retry: bool = True  # False for a polite refusal: "다른 거" would only refuse again
    proposal: tuple[TasteItem, ...] = ()  # status "ask": what the user is asked to let us remember
    fallback: bool = False  # every sample named a dish with one of the user's allergens: a polite refusal instead
    can_vote: bool = False  # the model's own non-empty words were stored: a 👍/👎 on them is something to learn from


@dataclass(frozen=True)
class TasteChoice:
    text: str  # what was (not) remembered
    answer: Answer | None  # the answer to the question the statement came with, if it asked one


class ConversationBusy(Exception):
    """The generator's queue is full (or the global cap is reached). The user turn is still stored."""


class RetryRefused(Exception):
    """A forged, stale or foreign button. `reason` is a polite Korean sentence for the user; nothing was changed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TasteRefused(RetryRefused):
    """A forged, foreign or vanished taste confirmation button."""


def new_seed() -> int:
    return secrets.randbits(31)


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
        variety_days: float = 7.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.feedback = FeedbackStore(store)
        # Fresh random seeds by default; a scripted session (`mechuri chat --seed N`) draws them from a seeded stream.
        self.seed_source = seed_source
        self.generator = generator
        self.generation = generation
        self.catalog = catalog
        self.safety = safety  # model.safety.SafetyNotes, or None
        self.max_retries_for_dish = max_retries_for_dish
        # Taste needs the real catalog (allergens, tags); without it answers are steered by turned-down dishes only.
        self.taste = (TasteDesk(store, catalog, variety_days=variety_days, clock=clock)
                      if isinstance(catalog, DishCatalog) else None)
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
                   adapters_dir=settings.adapters_dir, variety_days=settings.variety_days)

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
            statement = await self.taste.read(text) if self.taste is not None else None
            await self._lines.wait(slot, question_id=question.id)
            if statement is not None:
                # A taste statement is confirmed before it is remembered; the question it came with waits for that.
                news = (await self.taste.store.profile(user_id)).new(statement.items)
                if news:
                    return Answer(0, question.id, taste_text.confirm_question(news), 0, "ask", (), proposal=news)
                if not statement.asks:
                    return Answer(0, question.id, taste_text.already_known(statement.items), 0, "noted", ())
            # history=None: the history is read in the same transaction that creates the pending answer.
            return await self._answer(question, user_id, None, excluded=(), on_partial=on_partial)
        finally:
            self._lines.leave(slot)

    async def settle_taste(
        self, chat_id: int, user_id: int, turn_id: int, accept: bool, *, on_partial: DeltaCallback | None = None,
        on_settled: DeltaCallback | None = None,
    ) -> TasteChoice:
        """The user's 예/아니요 to the statement in the user turn `turn_id`: remember it (or not), tell
        `on_settled`, then answer the question that came with it, if it is still the latest one and unanswered.
        Declined items still shape that one answer: the user did say them."""
        slot = self._lines.join((chat_id, user_id))
        try:
            await self._lines.wait(slot)
            question, unanswered = await self._check_statement(chat_id, user_id, turn_id)
            statement = await self.taste.read(question.text)
            if statement is None:
                raise TasteRefused(taste_text.TASTE_GONE)
            news = (await self.taste.store.profile(user_id)).new(statement.items)
            if accept and news:
                await self.taste.remember(user_id, news)
                text = taste_text.remembered(news)
            elif accept:
                text = taste_text.already_known(statement.items)
            else:
                text = taste_text.DECLINED if statement.asks and unanswered else taste_text.DECLINED_NO_QUESTION
            if on_settled is not None:
                await on_settled(text)
            answer = None
            if statement.asks and unanswered:
                answer = await self._answer(question, user_id, None, excluded=(), on_partial=on_partial,
                                            one_off=() if accept else news)
            return TasteChoice(text, answer)
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
                return await self._answer(question, user_id, history, excluded=excluded, on_partial=on_partial,
                                          retry_of=old.id)
            except ConversationBusy:
                await self.store.change_status(old.id, "rejected", "ok")  # nothing was generated: undo the rejection
                raise
        finally:
            self._lines.leave(slot)

    async def vote(self, chat_id: int, user_id: int, turn_id: int, up: bool) -> VoteResult:
        """👍 (up) or 👎 on the user's answer `turn_id`: the latest press wins, a repeated one counts once; never
        regenerates. RetryRefused for a forged or foreign turn, or one the model did not write. No place in the
        user's line is needed: it is one compare-and-set (bot/feedback_store.py)."""
        result = await self.feedback.vote(chat_id, user_id, turn_id, "up" if up else "down", utcnow())
        if isinstance(result, str):
            raise RetryRefused(REFUSED_UNKNOWN if result == "unknown" else REFUSED_VOTE)
        return result

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

    async def _check_statement(self, chat_id: int, user_id: int, turn_id: int) -> tuple[Turn, bool]:
        """The user turn a taste button points at, and whether it is the latest question and still unanswered."""
        found = await self.store.get_turn(turn_id) if self.taste is not None else None
        if found is None or found[1].chat_id != chat_id or found[1].user_id != user_id or found[0].role != "user":
            raise TasteRefused(taste_text.TASTE_GONE)
        question, conversation = found
        turns = await self.store.conversation_turns(conversation.id)
        latest = max(t.id for t in turns if t.role == "user") == question.id and conversation.closed_at is None
        answered = any(t.reply_to == question.id and t.status != "failed" for t in turns)
        return question, latest and not answered

    def _dishes_in(self, texts: Sequence[str]) -> tuple[str, ...]:
        if self.catalog is None:
            return ()
        return tuple(dict.fromkeys(name for text in texts for name in self.catalog.names_in(text)))

    def _answer_check(self, question: str) -> Callable[[str], str | None]:
        """Why an answer's text should be sampled again (bounded, softly), or None to keep it: it names no dish that
        fits what the question asks for (model/fit.py: only catalog dishes known not to fit, or none at all)."""
        fit = request_check(question, self.catalog)
        wishes = list(fit.wishes) if fit is not None else []
        return lambda text: f"names no dish that fits {wishes}" if fit is not None and fit.misses(text) else None

    def _adapter(self) -> AdapterInfo:
        try:
            return self.generator.info().adapter
        except Exception:  # info() is for bookkeeping only; never fail an answer over it
            return AdapterInfo()

    async def _answer(
        self, question: Turn, user_id: int, history: list[PromptTurn] | None, *, excluded: tuple[str, ...],
        on_partial: DeltaCallback | None, retry_of: int | None = None, one_off: tuple[TasteItem, ...] = (),
    ) -> Answer:
        if self.max_concurrent is not None and self._in_flight >= self.max_concurrent:
            raise ConversationBusy(f"{self._in_flight} generations in flight (cap {self.max_concurrent})")
        self._in_flight += 1
        try:
            return await self._generate_answer(question, user_id, history, excluded, on_partial, retry_of, one_off)
        finally:
            self._in_flight -= 1

    async def _avoid(self, question: Turn, excluded: tuple[str, ...], taste: tuple[TasteProfile, frozenset[str]],
                     one_off: tuple[TasteItem, ...]) -> tuple[AvoidList, TasteProfile]:
        """Everything this answer must not name, and the taste profile it is written for."""
        avoid = AvoidList()
        avoid.add(excluded, "turned down")
        profile, recent = taste
        profile = profile.with_items(one_off)
        if self.taste is not None:
            await self.taste.feed(avoid, profile, recent)
        return avoid.asked(self._dishes_in([question.text])), profile

    async def _generate_answer(
        self, question: Turn, user_id: int, history: list[PromptTurn] | None, excluded: tuple[str, ...],
        on_partial: DeltaCallback | None, retry_of: int | None, one_off: tuple[TasteItem, ...],
    ) -> Answer:
        verdict = self.safety.check(question.text) if self.safety is not None else None
        unsafe = verdict.avoided_dishes(self.catalog) if verdict is not None and self.catalog is not None else ()
        seed = self.seed_source()
        params = {"seed": seed, **asdict(self.generation)}
        adapter = self._adapter()
        stored = {"seed": seed, "params": GenerationRequest(prompt="", **params).sampling_params(),
                  "adapter_name": adapter.name, "adapter_version": adapter.version}
        # The history, the pending answer and the user's taste in one transaction; a retry brings its own history.
        read_taste = self.taste.context_reader(user_id) if self.taste is not None else lambda db: None
        try:
            turns, pending, taste = await self.store.begin_answer_with(
                question, read_taste, **stored, history_limit=0 if history is not None else HISTORY_LIMIT)
        except QuestionGone:  # /forget (another chat or replica) deleted the question while it waited
            return Answer(0, question.id, FORGOTTEN_TEXT, seed, "failed", ())
        if verdict is not None and verdict.refusal:  # a dangerous premise gets a polite refusal, never a menu
            await self.store.finish_answer(pending.id, status="ok", text=verdict.refusal, seed=seed, attempts=0)
            log.info("turn %d: refused the premise (%s)", pending.id, ", ".join(n.id for n in verdict.notes))
            self._answered += 1
            return Answer(pending.id, question.id, verdict.refusal, seed, "ok", (), can_retry=False)
        history = prompt_turns(turns, question.id) if history is None else history
        avoid, profile = await self._avoid(question, excluded, taste or (TasteProfile(), frozenset()), one_off)
        avoid.add(unsafe, "safety note")  # e.g. raw fish when the question says the user is pregnant
        params["avoid"] = avoid.spellings(self.catalog)
        built = build_prompt(
            history, question.text, context=profile.prompt_note() or None, excluded_dishes=excluded,
            tokenizer=self.generator.tokenizer, budget=self.generator.max_context - self.generation.max_new_tokens,
        )
        notice = TRUNCATED_NOTICE if built.question_truncated else None
        drawer = AnswerDrawer(self.generator, self.catalog, max_resamples=self.max_retries_for_dish,
                              seed_source=self.seed_source)

        async def resampled(request: GenerationRequest, attempts: int) -> None:
            # The front end's partial text starts over with the new sample.
            await self.store.update_turn(pending.id, seed=request.seed, attempts=attempts)

        try:
            drawn = await drawer.draw(GenerationRequest(prompt=built.text, **params), avoid, Partial(on_partial),
                                      resampled, check=self._answer_check(question.text))
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
            return Answer(pending.id, question.id, FAILED_TEXT, seed, "failed", (), notice)
        if drawn.attempts > 1:
            log.info("turn %d: %d samples to avoid %s", pending.id, drawn.attempts, avoid.reasons())
        # The prompt and the model's own words, exactly: preference training replays them (bot/feedback_export.py).
        values: dict[str, Any] = {"seed": drawn.request.seed, "attempts": drawn.attempts, "prompt": built.text,
                                  "completion": drawn.text.strip()}
        if drawn.result is not None:
            result = drawn.result
            values.update(
                prompt_tokens=result.prompt_tokens, new_tokens=result.new_tokens, ttft_ms=result.ttft_s * 1000,
                total_ms=result.total_s * 1000, adapter_name=result.adapter.name,
                adapter_version=result.adapter.version,
            )
        if drawn.blocked:
            return await self._fallback(pending.id, question, drawn, profile, avoid, values, notice)
        final = drawn.text.strip()
        if final and verdict is not None and verdict.cautions:
            final = "\n\n".join([final, *verdict.cautions])  # stored as shown: the caution is part of the answer
        if self.taste is not None:
            await self.taste.store.finish_answer(pending.id, user_id, drawn.dishes, self.taste.clock(), text=final,
                                                 **values)
        else:
            await self.store.finish_answer(pending.id, status="ok", text=final, **values)
        self._answered += 1
        shown = final or EMPTY_TEXT
        if profile.allergies and not drawn.dishes:
            shown = f"{shown}\n\n{taste_text.check_ingredients(profile.allergies)}"
        return Answer(pending.id, question.id, shown, drawn.request.seed, "ok", drawn.dishes, notice,
                      can_vote=bool(values["completion"]))

    async def _fallback(self, turn_id: int, question: Turn, drawn: Any, profile: TasteProfile, avoid: AvoidList,
                        values: dict[str, Any], notice: str | None) -> Answer:
        """Every sample named a dish with one of the user's allergens: the turn fails; the user gets a refusal."""
        named = [b.dish for b in drawn.blocked]
        allergens = [a for a in profile.allergies if any(f"allergy:{a}" in b.reasons for b in drawn.blocked)]
        asked = bool(avoid.guaranteed & set(self._dishes_in([question.text])))
        log.warning("turn %d: %d samples all named allergen dishes %s; fallback shown", turn_id, drawn.attempts, named)
        await self.store.finish_answer(turn_id, status="failed", error=f"allergy guarantee: samples named {named}",
                                       **values)
        text = taste_text.fallback(allergens or profile.allergies, asked_for_it=asked)
        return Answer(turn_id, question.id, text, drawn.request.seed, "failed", (), notice, fallback=True)
