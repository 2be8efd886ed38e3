"""What the front ends see of the conversation service, and what the service needs of a generator.

Front ends get an `Answer` (or a `TasteChoice`) back, and catch `ConversationBusy` and `RetryRefused`. The generator
seam is a Protocol: the real `model.serving.generator.Generator` and the tests' fakes both fit it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bot.taste.profile import TasteItem
from model import AdapterInfo, GenerationRequest, GenerationResult, GeneratorInfo

DeltaCallback = Callable[[str], Awaitable[None]]  # the answer's text so far, as it is generated


class DishNames(Protocol):
    """The dish catalog as the service reads answers with it (model/food/dishes.py `DishCatalog`)."""

    def names_in(self, text: str) -> list[str]: ...


class TextStream(Protocol):
    """`Generator.stream()`'s value: text deltas, then `result` once the iteration ended."""

    result: GenerationResult | None

    def __aiter__(self) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...


class TextGenerator(Protocol):
    """The generator surface the service uses (model/serving/generator.py)."""

    tokenizer: Any
    max_context: int

    def stream(self, request: GenerationRequest) -> TextStream: ...

    async def reload_adapter(self, path: str | Path) -> AdapterInfo: ...

    def info(self) -> GeneratorInfo: ...


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
    proposal: tuple[TasteItem, ...] = ()  # status "ask", or beside an "ok" answer: what we ask to remember
    unsure: tuple[str, ...] = ()  # allergens to ask about: an allergy, or only disliked? (asked, never guessed)
    confirm: str | None = None  # beside an "ok" answer: the "기억해 둘까요?" question, sent after the answer
    learn_id: int = 0  # `confirm` asks about a dislike learned from turn-downs: the taste question's id
    fallback: bool = False  # every sample named a dish with one of the user's allergens: a polite refusal instead
    can_vote: bool = False  # the model's own non-empty words were stored: a 👍/👎 on them is something to learn from


@dataclass(frozen=True)
class TasteChoice:
    text: str  # what was (not) remembered
    answer: Answer | None  # the answer to the question the statement came with, if it asked one


class ConversationBusy(Exception):
    """The generator's queue is full (or another replica kept the user's turn too long). The question is stored."""


class RetryRefused(Exception):
    """A forged, stale or foreign button. `reason` is a polite Korean sentence for the user; nothing was changed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TasteRefused(RetryRefused):
    """A forged, foreign or vanished taste confirmation button."""
