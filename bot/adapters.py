"""Adapter names from users (admins' /reload, MECHURI_ADAPTER) resolved inside the adapters folder, never outside."""

from __future__ import annotations

from pathlib import Path

from model import AdapterError


class AdapterRefused(AdapterError):
    """An adapter name that does not resolve inside the adapters folder."""


def resolve_adapter(root: Path, name: str) -> Path:
    """`name` as a folder inside `root`; refuses absolute paths, `..` and symlinks that lead out of `root`."""
    name = name.strip()
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise AdapterRefused(
            f"어댑터 이름이 올바르지 않아요: {name!r}. / Invalid adapter name {name!r}: give a folder name inside {root}."
        )
    base = root.resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base):
        raise AdapterRefused(
            f"어댑터 폴더 밖을 가리키는 이름이에요: {name!r}. / Adapter {name!r} resolves outside {base}; refused."
        )
    if not path.is_dir():
        raise AdapterRefused(
            f"어댑터를 찾을 수 없어요: {name!r}. / No adapter folder {name!r} in {base}; train or copy it there first."
        )
    return path
