"""What every front end loads at start, and the one way to build the conversation service from the settings: the
generator on the configured model, the dish catalog and the safety notes."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from pathlib import Path
from typing import Any

from bot.service.adapters import resolve_adapter
from bot.service.contract import DishNames, TextGenerator
from bot.service.conversation import ConversationService
from bot.service.ordering import SharedLocks
from bot.settings import Settings, check_fits_context
from bot.store.history import Store
from model import DishCatalog, SafetyNotes

log = logging.getLogger(__name__)


def build_service(settings: Settings, store: Store, generator: TextGenerator, *, catalog: DishNames | None = None,
                  safety: SafetyNotes | None = None, locks: SharedLocks | None = None, paced: bool = True,
                  max_resamples: int = 3, seed: int | None = None) -> ConversationService:
    """The conversation service as configured. `paced`: messages taken at a front end's door keep
    MECHURI_USER_COOLDOWN_S apart (the terminal's one user is not paced). `seed`: draw every sampling seed from this
    one, so a scripted session gives the same answers again (default: fresh random seeds)."""
    extra: dict[str, Any] = {}
    if seed is not None:
        extra["seed_source"] = functools.partial(random.Random(seed).getrandbits, 31)
    return ConversationService(
        store, generator, generation=settings.generation_defaults(), catalog=catalog, safety=safety,
        max_resamples=max_resamples, adapters_dir=settings.adapters_dir, max_concurrent=settings.max_concurrent,
        variety_days=settings.variety_days, locks=locks, cooldown_s=settings.user_cooldown_s if paced else 0.0,
        **extra,
    )


async def start_generator(settings: Settings, *, adapter: str | None = None, device: str | None = None,
                          use_configured_adapter: bool = True) -> Any:
    """The real generator, loaded off the event loop. `adapter` is a folder, or a name inside the adapters folder;
    without it, the configured adapter (MECHURI_ADAPTER) is used unless `use_configured_adapter` is off."""
    from model import Generator, LlamaCppGenerator, load_model

    name = adapter or (settings.adapter if use_configured_adapter else None)
    path: Path | None = None
    if name:
        given = Path(name)
        path = given if adapter and given.is_dir() else resolve_adapter(settings.adapters_dir, name)
    if settings.quantization == "gguf":  # llama.cpp: its own slots, batching and prompt cache (docs/decisions.md)
        generator = await asyncio.to_thread(
            LlamaCppGenerator, settings.model_base, adapter=path, slots=settings.max_batch_size,
            max_queue=settings.max_queue, prompt_cache_mib=settings.prefix_cache_mib, repack=settings.llama_repack,
            kv_tokens=settings.llama_kv_tokens or None, kv_unified=settings.llama_kv_unified,
            kv_type=settings.llama_kv_type, mmap=settings.llama_mmap)
        check_fits_context(settings, generator.max_context)
        return generator
    loaded = await asyncio.to_thread(
        load_model, settings.model_base, adapter=path, quantization=settings.quantization, device=device
    )
    check_fits_context(settings, loaded.max_context)
    return Generator(loaded, max_batch_size=settings.max_batch_size, max_queue=settings.max_queue,
                     capture=settings.capture_decode, prefix_cache_mib=settings.prefix_cache_mib)


def load_catalog() -> DishCatalog | None:
    try:
        return DishCatalog.load()
    except (ImportError, AttributeError, OSError, ValueError) as exc:
        log.warning("dish catalog unavailable (%s): '다른 거' will not steer away from turned-down dishes", exc)
        return None


async def load_safety() -> SafetyNotes | None:
    """The food-safety notes, with Kiwi started off the event loop (about 1.3 s) so the first question does not wait."""
    try:
        from model import warm_up_morphology

        await asyncio.to_thread(warm_up_morphology)
        return await asyncio.to_thread(SafetyNotes.load)
    except (ImportError, AttributeError, OSError, ValueError) as exc:
        log.warning("safety notes unavailable (%s): answers will carry no food-safety cautions", exc)
        return None
