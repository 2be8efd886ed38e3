"""The conversation service: one message in, one answer out, with the history stored on the way.

Front ends (bot/telegram/, bot/terminal/) call this and nothing below it. No transport and no SQL in here: the store
owns the queries, the generator owns the model, `Answerer` (bot/service/answering.py) writes one answer. Each call
runs in its user's line (bot/service/ordering.py): a front end that delivers the answer itself passes the `place` it
took at its door and leaves it after delivery; without one, the call takes and leaves a place of its own.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.service import replies
from bot.service.adapters import resolve_adapter
from bot.service.answering import Answerer, Question, prompt_turns
from bot.service.contract import (
    Answer,
    ConversationBusy,
    DeltaCallback,
    DishNames,
    RetryRefused,
    TasteChoice,
    TasteRefused,
    TextGenerator,
)
from bot.service.drawing import AnswerDrawer
from bot.service.ordering import Place, SharedLocks, UserLines
from bot.service.taste import TasteDesk
from bot.settings import GenerationDefaults
from bot.store.feedback import VoteResult, Votes
from bot.store.history import Store
from bot.store.replicas import LockTimeout
from bot.store.schema import Turn, utcnow
from bot.taste import replies as taste_replies
from bot.taste.learning import LEARN_AFTER
from bot.taste.parse import Statement
from bot.taste.profile import TasteItem, allergy
from model import AdapterError, AdapterInfo, DishCatalog, SafetyNotes

log = logging.getLogger(__name__)


def new_seed() -> int:
    return secrets.randbits(31)


class ConversationService:
    """`catalog`: the dish catalog (a real `DishCatalog` also enables taste); `max_resamples`: extra samples drawn
    to avoid a banned dish or a miss; `max_concurrent`: samples generated at once across all users (the rest wait);
    `locks`: the users' turn locks shared with other replicas (PostgreSQL); `cooldown_s`: the pacing of `admit`."""

    def __init__(
        self, store: Store, generator: TextGenerator, *, generation: GenerationDefaults,
        catalog: DishNames | None = None, safety: SafetyNotes | None = None, max_resamples: int = 3,
        adapters_dir: Path | str = "adapters", max_concurrent: int | None = None,
        seed_source: Callable[[], int] = new_seed, variety_days: float = 7.0, clock: Callable[[], datetime] = utcnow,
        locks: SharedLocks | None = None, cooldown_s: float = 0.0, check_fit: bool = True,
        learn_after: int = LEARN_AFTER,
    ) -> None:
        self.store = store
        self.generator = generator
        self.adapters_dir = Path(adapters_dir)
        self.votes = Votes(store.db)
        # Taste needs the real catalog (allergens, tags); without it answers are steered by turned-down dishes only.
        self.taste = (TasteDesk(store.db, catalog, variety_days=variety_days, clock=clock, learn_after=learn_after)
                      if isinstance(catalog, DishCatalog) else None)
        self.lines = UserLines(locks, cooldown_s=cooldown_s)
        drawer = AnswerDrawer(generator, catalog, max_resamples=max_resamples, seed_source=seed_source,
                              max_concurrent=max_concurrent)
        self.answers = Answerer(store, generator, drawer, generation=generation, catalog=catalog, safety=safety,
                                taste=self.taste, seed_source=seed_source, check_fit=check_fit)
        self.catalog = catalog
        self.started_at = time.monotonic()

    # --- the public calls ---------------------------------------------------------------------------------------

    async def reply(
        self, chat_id: int, user_id: int, text: str, *, on_partial: DeltaCallback | None = None,
        user_name: str | None = None, place: Place | None = None, on_stored: Callable[[], None] | None = None,
    ) -> Answer:
        """Answer a message. `on_stored` runs once the question is committed (a webhook may then acknowledge it)."""
        with self._in_line(place, chat_id, user_id) as place:
            # The question is stored before waiting for this user's earlier answers: it must survive a crash.
            async with place.intake:
                question = await self.store.add_question(chat_id, user_id, text, user_name)
            if on_stored is not None:
                on_stored()
            statement = await self.taste.read(text) if self.taste is not None else None
            await self._wait(place, question.id)
            if self.taste is not None and (statement is not None or self.taste.cut(text)):
                return await self._with_taste(question, user_id, statement, self.taste.cut(text), on_partial)
            return await self.answers.answer(Question(question, user_id), on_partial)

    async def _with_taste(self, question: Turn, user_id: int, statement: Statement | None, cut: bool,
                          on_partial: DeltaCallback | None) -> Answer:
        """A message that states a taste. It is remembered only after the user's 예; a question that came with it is
        answered at once, honouring the statement (an unsure allergen as an allergy), with the question beside it."""
        notice = taste_replies.LONG_NOT_READ if cut else None
        news, unsure = await self._news(user_id, statement)
        if statement is not None and not news and not unsure and not statement.asks:
            return Answer(0, question.id, taste_replies.already_known(statement.items), 0, "noted", ())
        ask = taste_replies.ask_text(news, unsure) if news or unsure else None
        if statement is not None and ask is not None and not statement.asks:
            return Answer(0, question.id, ask, 0, "ask", (), notice=notice, proposal=news, unsure=unsure)
        try:
            answer = await self.answers.answer(Question(question, user_id, one_off=self._said(statement)), on_partial)
        except ConversationBusy:
            if ask is None:
                raise
            # No answer now: ask first, and the user's choice answers the question (settle_taste), as before.
            return Answer(0, question.id, ask, 0, "ask", (), notice=notice, proposal=news, unsure=unsure)
        notice = "\n".join(n for n in (notice, answer.notice) if n) or None
        return replace(answer, notice=notice, proposal=news, unsure=unsure, confirm=ask)

    async def _news(self, user_id: int, statement: Statement | None) -> tuple[tuple[TasteItem, ...], tuple[str, ...]]:
        """What a statement adds to the profile, and the allergens it leaves unsure that are not known allergies."""
        if statement is None or self.taste is None:
            return (), ()
        profile = await self.taste.store.profile(user_id)
        return profile.new(statement.items), tuple(a for a in statement.unsure if a not in profile.allergies)

    @staticmethod
    def _said(statement: Statement | None) -> tuple[TasteItem, ...]:
        """A statement as a one-off taste for the answer it came with: an unsure allergen counts as an allergy."""
        if statement is None:
            return ()
        return (*statement.items, *(allergy(a) for a in statement.unsure))

    async def settle_taste(
        self, chat_id: int, user_id: int, turn_id: int, accept: bool, *, on_partial: DeltaCallback | None = None,
        on_settled: DeltaCallback | None = None, place: Place | None = None, unsure_as: str = "allergy",
    ) -> TasteChoice:
        """The user's 예/아니요 to the statement in the user turn `turn_id`: remember it (or not), tell
        `on_settled`, then answer the question that came with it, if it is still the latest one and unanswered.
        Declined items still shape that one answer: the user did say them. `unsure_as`: what the user said an
        unsure allergen is ("allergy" or "dislike")."""
        with self._in_line(place, chat_id, user_id) as place:
            await self._wait(place)
            question, unanswered = await self._check_statement(chat_id, user_id, turn_id)
            statement = await self.taste.read(question.text) if self.taste is not None else None
            if statement is None or self.taste is None:
                raise TasteRefused(taste_replies.TASTE_GONE)
            news, unsure = await self._news(user_id, statement)
            kind = "dislike" if unsure_as == "dislike" else "allergy"
            news = (*news, *(TasteItem(kind, "ingredient" if kind == "dislike" else "allergen", a) for a in unsure))
            if accept and news:
                await self.taste.remember(user_id, news)
                text = taste_replies.remembered(news)
            elif accept:
                text = taste_replies.already_known(statement.items)
            else:
                text = taste_replies.DECLINED if statement.asks and unanswered else taste_replies.DECLINED_NO_QUESTION
            if on_settled is not None:
                await on_settled(text)
            answer = None
            if statement.asks and unanswered:
                answer = await self.answers.answer(
                    Question(question, user_id, one_off=() if accept else self._said(statement)), on_partial)
            return TasteChoice(text, answer)

    async def retry(
        self, chat_id: int, user_id: int, turn_id: int, *, on_partial: DeltaCallback | None = None,
        place: Place | None = None,
    ) -> Answer:
        """"다른 거" on the answer `turn_id`: turn it down and answer its question again, avoiding every dish turned
        down so far. RetryRefused for a forged, foreign, stale or already turned-down answer."""
        with self._in_line(place, chat_id, user_id) as place:
            await self._wait(place)
            old, question, turns = await self._check_retry(chat_id, user_id, turn_id)
            if not await self.store.change_status(old.id, "ok", "rejected"):
                raise RetryRefused(replies.REFUSED_STATUS)
            rejected = [t.text for t in turns if t.role == "assistant" and t.status == "rejected"]
            said = self._said(await self.taste.read(question.text)) if self.taste is not None else ()
            retry = Question(question, user_id, history=prompt_turns(turns, question.id),
                             excluded=self._dishes_in([*rejected, old.text]), retry_of=old.id, one_off=said)
            try:
                answer = await self.answers.answer(retry, on_partial)
            except ConversationBusy:
                await self.store.change_status(old.id, "rejected", "ok")  # nothing was generated: undo the rejection
                raise
            return await self._ask_learned(user_id, answer)

    async def _ask_learned(self, user_id: int, answer: Answer) -> Answer:
        """The answer, with "국물 요리는 별로세요? 앞으로 덜 추천할까요?" beside it when the user's turn-downs share
        something they were never asked about (bot/taste/learning.py). Learning never costs the answer."""
        if self.taste is None or answer.confirm:
            return answer
        try:
            learned = await self.taste.learn(user_id)
        except Exception:
            log.exception("learning from turn-downs failed; the answer goes out without a question")
            return answer
        if learned is None:
            return answer
        question_id, what = learned
        return replace(answer, confirm=what.question, learn_id=question_id, proposal=(what.item,))

    async def learned_question(self, user_id: int) -> tuple[int, str] | None:
        """After a 👎: (question id, "국물 요리는 별로세요? …") when the user's turn-downs now share a taste."""
        answer = await self._ask_learned(user_id, Answer(0, 0, "", 0, "ok", ()))
        return (answer.learn_id, answer.confirm) if answer.learn_id and answer.confirm else None

    async def settle_learned(self, user_id: int, question_id: int, accept: bool) -> str:
        """예/아니요 to a learned question: what the user is told. TasteRefused for a forged, foreign or used one."""
        text = await self.taste.settle_learned(user_id, question_id, accept) if self.taste is not None else None
        if text is None:
            raise TasteRefused(taste_replies.TASTE_GONE)
        return text

    async def vote(self, chat_id: int, user_id: int, turn_id: int, up: bool) -> VoteResult:
        """👍 (up) or 👎 on the user's answer `turn_id`: the latest press wins, a repeated one counts once; never
        regenerates. RetryRefused for a forged or foreign turn, or one the model did not write. No place in the
        user's line is needed: it is one compare-and-set (bot/store/feedback.py)."""
        result = await self.votes.vote(chat_id, user_id, turn_id, "up" if up else "down", utcnow())
        if isinstance(result, str):
            raise RetryRefused(replies.REFUSED_UNKNOWN if result == "unknown" else replies.REFUSED_VOTE)
        return result

    async def reset(self, chat_id: int, user_id: int, *, place: Place | None = None) -> None:
        """Close the open conversation; the next message opens a new one."""
        with self._in_line(place, chat_id, user_id) as place:
            # Holding `intake` keeps messages sent after /reset out of the old conversation.
            async with place.intake:
                await self._wait(place)
                await self.store.close_conversation(chat_id, user_id)

    async def forget(self, chat_id: int, user_id: int, *, place: Place | None = None) -> int:
        """Delete everything stored for this user (every chat). Returns the number of rows deleted."""
        with self._in_line(place, chat_id, user_id) as place:
            async with place.intake:
                await self._wait(place)
                deleted = await self.store.forget_user(user_id)
        log.info("forgot a user: %d row(s) deleted", deleted)
        return deleted

    async def open_history(self, chat_id: int, user_id: int) -> list[Turn]:
        """The open conversation as its user last saw it, oldest first: the questions and the answers kept (a
        turned-down answer gave way to its "다른 거"). For a front end that redraws a chat (the web page on reload)."""
        turns = await self.store.open_turns(chat_id, user_id)
        return [t for t in turns if t.role == "user" or t.status != "rejected"]

    async def reload_adapter(self, name: str) -> AdapterInfo:
        """Load the adapter `name` (a folder inside the adapters folder) and swap it in between answers."""
        info = await self.generator.reload_adapter(resolve_adapter(self.adapters_dir, name))
        log.info("adapter reloaded: %s (version %s)", info.name, info.version)
        return info

    async def reload_report(self, name: str) -> str:
        """`reload_adapter`, told in one Korean message for an admin: ready and how long it took, or why not and what
        keeps serving. The log keeps the paths and details; the message never shows a server path."""
        serving, version = self._serving()
        started = time.monotonic()
        try:
            info = await self.reload_adapter(name)
        except Exception as exc:  # the admin is told why, whatever it was; the old adapter keeps serving
            log.warning("adapter reload of %r failed: %s", name, exc)
            reason = getattr(exc, "reason", None) or (
                replies.RELOAD_BROKEN if isinstance(exc, AdapterError) else replies.RELOAD_ERROR)
            return replies.reload_failed(name, serving, version, reason)
        return replies.reload_done(info.name, info.version, time.monotonic() - started)

    def status(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "in_flight": self.answers.in_flight,
            "answered": self.answers.answered,
            "users_waiting": len(self.lines),
            "waiting": self.lines.waiting,
            "generator": asdict(self.generator.info()),
        }

    # --- checks -------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _in_line(self, place: Place | None, chat_id: int, user_id: int) -> Iterator[Place]:
        if place is not None:
            yield place  # the front end leaves it once the answer is delivered
            return
        with self.lines.join(chat_id, user_id) as own:
            yield own

    async def _wait(self, place: Place, question_id: int | None = None) -> None:
        try:
            await place.wait(question_id=question_id)
        except LockTimeout as exc:
            raise ConversationBusy(str(exc)) from exc

    def _serving(self) -> tuple[str, str | None]:
        """What serves now, for a sentence: ("'v2'", version) or ("기본 모델", None)."""
        try:
            adapter = self.generator.info().adapter
        except Exception:
            return "이전 어댑터", None
        return (f"'{adapter.name}'", adapter.version) if adapter.name else ("기본 모델", None)

    async def _check_retry(self, chat_id: int, user_id: int, turn_id: int) -> tuple[Turn, Turn, Sequence[Turn]]:
        found = await self.store.get_turn(turn_id)
        # A foreign turn gets the same answer as a missing one: ids of other people's turns are not confirmed.
        if found is None or found[1].chat_id != chat_id or found[1].user_id != user_id:
            raise RetryRefused(replies.REFUSED_UNKNOWN)
        turn, conversation = found
        if turn.role != "assistant" or turn.reply_to is None:
            raise RetryRefused(replies.REFUSED_UNKNOWN)
        if turn.status == "rejected":
            raise RetryRefused(replies.REFUSED_STATUS)
        if turn.status != "ok" or conversation.closed_at is not None:
            raise RetryRefused(replies.REFUSED_STALE)
        turns = await self.store.conversation_turns(conversation.id)
        if max(t.id for t in turns if t.role == "assistant") != turn.id:
            raise RetryRefused(replies.REFUSED_STALE)
        question = next((t for t in turns if t.id == turn.reply_to), None)
        if question is None:
            raise RetryRefused(replies.REFUSED_UNKNOWN)
        return turn, question, turns

    async def _check_statement(self, chat_id: int, user_id: int, turn_id: int) -> tuple[Turn, bool]:
        """The user turn a taste button points at, and whether it is the latest question and still unanswered."""
        found = await self.store.get_turn(turn_id) if self.taste is not None else None
        if found is None or found[1].chat_id != chat_id or found[1].user_id != user_id or found[0].role != "user":
            raise TasteRefused(taste_replies.TASTE_GONE)
        question, conversation = found
        turns = await self.store.conversation_turns(conversation.id)
        latest = max(t.id for t in turns if t.role == "user") == question.id and conversation.closed_at is None
        answered = any(t.reply_to == question.id and t.status != "failed" for t in turns)
        return question, latest and not answered

    def _dishes_in(self, texts: Sequence[str]) -> tuple[str, ...]:
        if self.catalog is None:
            return ()
        return tuple(dict.fromkeys(name for text in texts for name in self.catalog.names_in(text)))
