"""One answer to one stored question: the turn, read top to bottom in `Answerer.answer`.

Safety first (a dangerous premise gets a polite refusal, never a menu); then, in one transaction, the history, the
pending answer row and the user's taste; what to avoid and why; the prompt; drawing a sample that names nothing it
must not (bot/service/drawing.py); and storing the answer exactly as the model wrote it, beside what the user sees.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bot.service import replies
from bot.service.contract import Answer, ConversationBusy, DeltaCallback, DishNames, TextGenerator
from bot.service.drawing import AnswerDrawer, AvoidList, Drawn, IngredientGuard, Partial
from bot.service.taste import TasteDesk
from bot.settings import GenerationDefaults
from bot.store.history import HISTORY_LIMIT, QuestionGone, Recommended, Store
from bot.store.schema import Turn
from bot.taste import replies as taste_replies
from bot.taste.profile import TasteItem, TasteProfile
from model import AdapterInfo, GenerationRequest, GeneratorBusy, PromptTurn, SafetyNotes, build_prompt, request_check
from model.food.fit import candidates, wishes_in
from model.food.ingredients import AllergenIngredients
from model.food.safety import SafetyVerdict

log = logging.getLogger(__name__)

BUSY_REASON = "busy: the generator queue is full"
CANDIDATES = 3  # safe catalog dishes offered in the prompt to a user with allergies


@dataclass(frozen=True)
class Question:
    """What to answer: the stored question, whose it is, and how this answer differs from a first one."""

    turn: Turn
    user_id: int
    history: list[PromptTurn] | None = None  # None: read with the pending answer; a retry brings its own
    excluded: tuple[str, ...] = ()  # dishes turned down with "다른 거"
    retry_of: int | None = None  # the answer this one replaces
    one_off: tuple[TasteItem, ...] = ()  # taste said with the question but not remembered: this answer only


@dataclass(frozen=True)
class _Started:
    pending: Turn
    history: list[PromptTurn]
    profile: TasteProfile
    recent: frozenset[str]
    stored: dict[str, Any]  # what the pending row was created with (seed, parameters, adapter)


def prompt_turns(turns: Sequence[Any], before_id: int) -> list[PromptTurn]:
    """Earlier exchanges as the model sees them: each question with its accepted answer.

    Rejected and failed answers are never shown as the model's own words; a question without an accepted answer is
    left out whole.
    """
    accepted: dict[int, Any] = {}
    for turn in turns:
        if turn.role == "assistant" and turn.status == "ok" and turn.reply_to is not None:
            accepted[turn.reply_to] = turn  # turns come oldest first, so the newest accepted answer wins
    return [PromptTurn(question=turn.text, answer=accepted[turn.id].text)
            for turn in turns if turn.role == "user" and turn.id < before_id and turn.id in accepted]


class Answerer:
    def __init__(self, store: Store, generator: TextGenerator, drawer: AnswerDrawer, *, generation: GenerationDefaults,
                 catalog: DishNames | None, safety: SafetyNotes | None, taste: TasteDesk | None,
                 seed_source: Callable[[], int], check_fit: bool = True,
                 ingredients: AllergenIngredients | None = None) -> None:
        self.store, self.generator, self.drawer = store, generator, drawer
        # ingredient words that carry an allergen: an allergy bans them like the dishes (bot/service/drawing.py)
        self.ingredients = ingredients if ingredients is not None else AllergenIngredients.load()
        self.generation, self.catalog, self.safety, self.taste = generation, catalog, safety, taste
        self.seed_source = seed_source
        self.check_fit = check_fit  # resample an answer that names no dish fitting what was asked (model/food/fit.py)
        self.in_flight = 0
        self.answered = 0

    async def answer(self, question: Question, on_partial: DeltaCallback | None) -> Answer:
        self.in_flight += 1
        try:
            verdict = self.safety.check(question.turn.text) if self.safety is not None else None
            started = await self._start(question)
            if started is None:  # /forget (another chat or replica) deleted the question while it waited
                return Answer(0, question.turn.id, replies.FORGOTTEN_TEXT, 0, "failed", ())
            if verdict is not None and verdict.refusal:
                return await self._refuse(question, started, verdict)
            profile = started.profile.with_items(question.one_off)
            avoid = await self._avoid(question, profile, started.recent, verdict)
            built = build_prompt(
                started.history, question.turn.text, context=self._context(question, profile, avoid, started),
                excluded_dishes=question.excluded, tokenizer=self.generator.tokenizer,
                budget=self.generator.max_context - self.generation.max_new_tokens,
            )
            notice = replies.TRUNCATED_NOTICE if built.question_truncated else None
            drawn = await self._draw(question, started, built.text, avoid, on_partial, needs_dish=bool(profile.allergies))
            if drawn is None:
                return Answer(started.pending.id, question.turn.id, replies.FAILED_TEXT, started.stored["seed"],
                              "failed", (), notice)
            return await self._finish(question, started, built.text, drawn, profile, avoid, verdict, notice)
        finally:
            self.in_flight -= 1

    async def _start(self, question: Question) -> _Started | None:
        """The history, the pending answer and the user's taste, in one transaction."""
        seed = self.seed_source()
        adapter = self._adapter()
        params = GenerationRequest(prompt="", seed=seed, **asdict(self.generation)).sampling_params()
        stored = {"seed": seed, "params": params, "adapter_name": adapter.name, "adapter_version": adapter.version}
        read_taste = self.taste.context_reader(question.user_id) if self.taste is not None else None
        try:
            turns, pending, taste = await self.store.begin_answer(
                question.turn, **stored, history_limit=0 if question.history is not None else HISTORY_LIMIT,
                also=read_taste)
        except QuestionGone:
            return None
        history = prompt_turns(turns, question.turn.id) if question.history is None else question.history
        profile, recent = taste or (TasteProfile(), frozenset())
        return _Started(pending, history, profile, recent, stored)

    def _adapter(self) -> AdapterInfo:
        try:
            return self.generator.info().adapter
        except Exception:  # info() is for bookkeeping only; never fail an answer over it
            return AdapterInfo()

    async def _refuse(self, question: Question, started: _Started, verdict: SafetyVerdict) -> Answer:
        seed = started.stored["seed"]
        await self.store.finish_answer(started.pending.id, status="ok", text=verdict.refusal, seed=seed, attempts=0)
        log.info("turn %d: refused the premise (%s)", started.pending.id, ", ".join(n.id for n in verdict.notes))
        self.answered += 1
        return Answer(started.pending.id, question.turn.id, verdict.refusal, seed, "ok", (), can_retry=False)

    async def _avoid(self, question: Question, profile: TasteProfile, recent: frozenset[str],
                     verdict: SafetyVerdict | None) -> AvoidList:
        """Everything this answer must not name, with why."""
        avoid = AvoidList()
        avoid.add(question.excluded, "turned down")
        if self.taste is not None:
            await self.taste.feed(avoid, profile, recent)
        avoid = avoid.asked(self._dishes_in(question.turn.text))
        if verdict is not None and self.catalog is not None:
            avoid.add(verdict.avoided_dishes(self.catalog), "safety note")  # e.g. raw fish in pregnancy
        if profile.allergies:
            avoid.guard_words(IngredientGuard(self.ingredients, profile.allergies))
        return avoid

    def _context(self, question: Question, profile: TasteProfile, avoid: AvoidList, started: _Started) -> str | None:
        """The prompt's 맥락: the user's taste, and for a user with allergies a few catalog dishes that fit the
        question and that nothing rules out ("후보: …", as the starter data writes candidates). An allergy to 밀 or 대두
        bans hundreds of dishes while sampling; without candidates a small model often names none at all."""
        lines = [profile.prompt_note()]
        picks = self._safe_picks(question, profile, avoid, started.stored["seed"])
        if picks:
            lines.append(f"후보: {', '.join(picks)}")
        return "\n".join(line for line in lines if line) or None

    def _safe_picks(self, question: Question, profile: TasteProfile, avoid: AvoidList, seed: int) -> list[str]:
        """For a user with allergies: catalog dishes that fit the question and that nothing rules out, the same ones
        for the same seed (the prompt's candidates, and the answer's suggestion when the model named none)."""
        if not profile.allergies or self.catalog is None or not hasattr(self.catalog, "dishes"):
            return []
        pool = candidates(self.catalog, wishes_in(question.turn.text), avoid.dishes, CANDIDATES * 4,
                          random.Random(seed))
        # the catalog's allergens stop at its columns; a name can still carry an ingredient word (콩나물국: 콩나물)
        return [name for name in pool if not avoid.word_bans(name)][:CANDIDATES]

    def _dishes_in(self, text: str) -> tuple[str, ...]:
        return tuple(self.catalog.names_in(text)) if self.catalog is not None else ()

    async def _draw(self, question: Question, started: _Started, prompt: str, avoid: AvoidList,
                    on_partial: DeltaCallback | None, *, needs_dish: bool = False) -> Drawn | None:
        """Sample until an answer names nothing it must not (bounded). None when generation failed (stored so).
        With `needs_dish` (a user with allergies), an answer that names no catalog dish is drawn again too, softly:
        an allergy must not buy its safety by recommending nothing."""
        pending = started.pending.id
        request = GenerationRequest(prompt=prompt, seed=started.stored["seed"], **asdict(self.generation),
                                    avoid=avoid.spellings(self.catalog))

        async def resampled(request: GenerationRequest, attempts: int) -> None:
            # The front end's partial text starts over with the new sample.
            await self.store.update_turn(pending, seed=request.seed, attempts=attempts)

        fit = request_check(question.turn.text, self.catalog) if self.check_fit else None
        wishes = list(fit.wishes) if fit is not None else []

        def check(text: str) -> str | None:
            if fit is not None and fit.misses(text):
                return f"names no dish that fits {wishes}"
            if needs_dish and self.catalog is not None and not self._dishes_in(text):
                return "names no dish (the user has allergies)"
            return None

        try:
            return await self.drawer.draw(request, avoid, Partial(on_partial), resampled, check=check)
        except GeneratorBusy as exc:
            if question.retry_of is not None:
                await self.store.delete_turn(pending)  # nothing ran; the retry is undone whole
            else:
                await self.store.finish_answer(pending, status="failed", error=BUSY_REASON)
            raise ConversationBusy(str(exc)) from exc
        except asyncio.CancelledError:
            await asyncio.shield(self.store.finish_answer(pending, status="failed", error="cancelled"))
            raise
        except Exception as exc:
            log.exception("generation failed for turn %d", pending)
            await self.store.finish_answer(pending, status="failed", error=f"{type(exc).__name__}: {exc}")
            return None

    async def _finish(self, question: Question, started: _Started, prompt: str, drawn: Drawn, profile: TasteProfile,
                      avoid: AvoidList, verdict: SafetyVerdict | None, notice: str | None) -> Answer:
        """Store the answer (the prompt and the model's own words, exactly: preference training replays them) and
        say what the user sees."""
        pending = started.pending.id
        if drawn.attempts > 1:
            log.info("turn %d: %d samples to avoid %s", pending, drawn.attempts, avoid.reasons())
        values = _outcome(drawn, prompt)
        if drawn.blocked:
            return await self._fallback(question, pending, drawn, profile, avoid, values, notice)
        final, dishes = drawn.text.strip(), drawn.dishes
        if final and profile.allergies and not dishes:
            # The model named no dish: the catalog's safe picks are offered beside its words, stored as shown so
            # that "다른 거" turns them down too. An allergy must not buy its safety by recommending nothing.
            picks = tuple(self._safe_picks(question, profile, avoid, started.stored["seed"]))
            if picks:
                final, dishes = f"{final}\n\n{taste_replies.safe_suggestion(picks)}", picks
        if final and verdict is not None and verdict.cautions:
            final = "\n\n".join([final, *verdict.cautions])  # stored as shown: the caution is part of the answer
        recommended = (Recommended(question.user_id, dishes, self.taste.clock())
                       if self.taste is not None else None)
        await self.store.finish_answer(pending, status="ok", text=final, recommended=recommended, **values)
        self.answered += 1
        shown = final or replies.EMPTY_TEXT
        if profile.allergies and not drawn.dishes and not _cautions(shown):
            # the model's own words name nothing the catalog vouches for: one short line, unless they say to check
            shown = f"{shown}\n\n{taste_replies.check_ingredients(profile.allergies)}"
        return Answer(pending, question.turn.id, shown, drawn.request.seed, "ok", dishes, notice,
                      can_vote=bool(values["completion"]))

    async def _fallback(self, question: Question, turn_id: int, drawn: Drawn, profile: TasteProfile,
                        avoid: AvoidList, values: dict[str, Any], notice: str | None) -> Answer:
        """Every sample named a dish with one of the user's allergens: the turn fails; the user gets a refusal."""
        named = [b.dish for b in drawn.blocked]
        allergens = [a for a in profile.allergies if any(f"allergy:{a}" in b.reasons for b in drawn.blocked)]
        asked = bool(avoid.guaranteed & set(self._dishes_in(question.turn.text)) or avoid.word_bans(question.turn.text))
        log.warning("turn %d: %d samples all named allergen dishes %s; fallback shown", turn_id, drawn.attempts, named)
        await self.store.finish_answer(turn_id, status="failed", error=f"allergy guarantee: samples named {named}",
                                       **values)
        text = taste_replies.fallback(allergens or profile.allergies, asked_for_it=asked)
        return Answer(turn_id, question.turn.id, text, drawn.request.seed, "failed", (), notice, fallback=True)


CAUTION_WORDS = ("확인", "주의")


def _cautions(text: str) -> bool:
    """Does the answer already carry a line that tells the user to check or beware (the model's own, or a safety
    note's)? A second one would stack cautions."""
    return any(word in text for word in CAUTION_WORDS)


def _outcome(drawn: Drawn, prompt: str) -> dict[str, Any]:
    """The columns an answer's outcome fills: seed and samples drawn, the exact prompt and completion, timings."""
    values: dict[str, Any] = {"seed": drawn.request.seed, "attempts": drawn.attempts, "prompt": prompt,
                              "completion": drawn.text.strip()}
    if drawn.result is not None:
        result = drawn.result
        values.update(
            prompt_tokens=result.prompt_tokens, new_tokens=result.new_tokens, ttft_ms=result.ttft_s * 1000,
            total_ms=result.total_s * 1000, adapter_name=result.adapter.name, adapter_version=result.adapter.version,
        )
    return values
