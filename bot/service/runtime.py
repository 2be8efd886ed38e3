"""What every front end loads at start: the generator on the configured model, the dish catalog and the safety
notes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from bot.service.adapters import resolve_adapter
from bot.settings import Settings, check_fits_context

log = logging.getLogger(__name__)


async def start_generator(settings: Settings, *, adapter: str | None = None, device: str | None = None,
                          use_configured_adapter: bool = True) -> Any:
    """The real generator, loaded off the event loop. `adapter` is a folder, or a name inside the adapters folder;
    without it, the configured adapter (MECHURI_ADAPTER) is used unless `use_configured_adapter` is off."""
    from model import Generator, load_model

    name = adapter or (settings.adapter if use_configured_adapter else None)
    path: Path | None = None
    if name:
        given = Path(name)
        path = given if adapter and given.is_dir() else resolve_adapter(settings.adapters_dir, name)
    loaded = await asyncio.to_thread(
        load_model, settings.model_base, adapter=path, quantization=settings.quantization, device=device
    )
    check_fits_context(settings, loaded.max_context)
    return Generator(loaded, max_batch_size=settings.max_batch_size, max_queue=settings.max_queue,
                     capture=settings.capture_decode)


def load_catalog() -> Any | None:
    try:
        from model import DishCatalog

        return DishCatalog.load()
    except (ImportError, AttributeError, OSError, ValueError) as exc:
        log.warning("dish catalog unavailable (%s): '다른 거' will not steer away from turned-down dishes", exc)
        return None


async def load_safety() -> Any | None:
    """The food-safety notes, with Kiwi started off the event loop (about 1.3 s) so the first question does not wait."""
    try:
        from model import SafetyNotes, warm_up_morphology

        await asyncio.to_thread(warm_up_morphology)
        return await asyncio.to_thread(SafetyNotes.load)
    except (ImportError, AttributeError, OSError, ValueError) as exc:
        log.warning("safety notes unavailable (%s): answers will carry no food-safety cautions", exc)
        return None
