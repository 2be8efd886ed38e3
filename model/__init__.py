"""Mechuri's model package: prompt format, loading, generation, training. It knows nothing of Telegram or SQL.

This is the public API that `bot/` and the CLI use. Names resolve lazily, so `import model` stays cheap and torch is
imported only when something that needs it is touched.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

# On AVX512-BF16 CPUs bitsandbytes looks for an optional hub kernel when it is first imported (transformers may
# import it before any of our loading code runs) and warns that it is missing. We keep 4-bit layers off that path
# (model/loading.py keep_4bit_layout), so the warning is nothing a user could act on. Setting the level needs no import.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

_EXPORTS: dict[str, str] = {
    # pure Python
    "build_prompt": "model.prompt",
    "neutralise": "model.prompt",
    "BuiltPrompt": "model.prompt",
    "PromptTurn": "model.prompt",
    "GenerationRequest": "model.types",
    "GenerationResult": "model.types",
    "AdapterInfo": "model.types",
    "GeneratorInfo": "model.types",
    "ModelError": "model.types",
    "ModelLoadError": "model.types",
    "AdapterError": "model.types",
    "GeneratorBusy": "model.types",
    "GeneratorClosed": "model.types",
    "Dish": "model.food.dishes",
    "DishCatalog": "model.food.dishes",
    "request_check": "model.food.fit",
    "wishes_in": "model.food.fit",
    "SafetyNotes": "model.food.safety",
    "SafetyNotesError": "model.food.safety",
    "warm_up_morphology": "model.food.morph",
    # torch
    "DemoRecipe": "model.demo.build",
    "QUICK_RECIPE": "model.demo.build",
    "build_demo_model": "model.demo.build",
    "demo_dir": "model.demo.build",
    "load_model": "model.loading",
    "load_tokenizer": "model.loading",
    "LoadedModel": "model.loading",
    "Generator": "model.serving.generator",
    "LlamaCppGenerator": "model.serving.llamacpp",
    "GenerationStream": "model.serving.generator",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from model.demo.build import QUICK_RECIPE, DemoRecipe, build_demo_model, demo_dir
    from model.food.dishes import Dish, DishCatalog
    from model.food.fit import request_check, wishes_in
    from model.food.morph import warm_up_morphology
    from model.food.safety import SafetyNotes, SafetyNotesError
    from model.loading import LoadedModel, load_model, load_tokenizer
    from model.prompt import BuiltPrompt, PromptTurn, build_prompt, neutralise
    from model.serving.generator import GenerationStream, Generator
    from model.serving.llamacpp import LlamaCppGenerator
    from model.types import (
        AdapterError,
        AdapterInfo,
        GenerationRequest,
        GenerationResult,
        GeneratorBusy,
        GeneratorClosed,
        GeneratorInfo,
        ModelError,
        ModelLoadError,
    )


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
