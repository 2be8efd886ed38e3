"""Adapter names from users (admins' /reload, MECHURI_ADAPTER) resolved inside the adapters folder, never outside."""

from __future__ import annotations

from pathlib import Path

from bot.korean import with_particle
from model import AdapterError


class AdapterRefused(AdapterError):
    """An adapter name that does not resolve inside the adapters folder. `str(exc)` is for the log and the operator's
    terminal (it names the folder); `reason` is one Korean sentence for a chat, without any server path."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


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
