"""Which files one Telegram text message passes through, from the handler to the generator and back.

A real PTB Application (tests/tg_harness.py: the fake Bot API in-process, a SQLite file), the real dish catalog and
safety notes, and the real generator on a tiny Polyglot-shaped model. After a warm-up message, one more message is
traced with a profile hook, and two sets of project files (bot/, model/) are reported:

- **the path**: every file on the call stack at each point where the message leaves our code: the call into the
  generator (`Generator.stream`), each hop to the database thread (`Database.run`), and each Bot API call. This is
  the chain a reader follows from the handler to the generated text and back.
- **every file touched**: every bot/ or model/ file in which any function ran for that message, on any thread
  (the generator's worker and the database thread included; the hook is installed before they start): helpers consulted on the way (the catalog, the fit
  check, the safety notes, the taste profile) and the generator's own stages (decode step, sampling, masks).

    .venv/bin/python bench/message_path.py [--text "매운 거 추천해줘"]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tg_harness import telegram_bot  # noqa: E402

OURS = (str(ROOT / "bot") + "/", str(ROOT / "model") + "/")
EXITS = ("generator", "database", "telegram")


def ours(filename: str) -> str | None:
    return str(Path(filename).relative_to(ROOT)) if filename.startswith(OURS) else None


class Tracer:
    def __init__(self) -> None:
        self.active = False  # installed before any thread starts (so every thread is traced), counting once active
        self.path: set[str] = set()
        self.touched: set[str] = set()
        self.exits = dict.fromkeys(EXITS, 0)

    @staticmethod
    def exit_kind(frame: FrameType) -> str | None:
        code, caller = frame.f_code, frame.f_back
        if code.co_name == "stream" and code.co_filename.endswith("model/serving/generator.py"):
            return "generator"
        if code.co_name == "run" and code.co_filename.endswith("bot/store/database.py"):
            return "database"
        if "/telegram/_bot.py" in code.co_filename and caller is not None and ours(caller.f_code.co_filename):
            return "telegram"
        return None

    def profile(self, frame: FrameType, event: str, _arg: Any) -> None:
        if event != "call" or not self.active:
            return
        mine = ours(frame.f_code.co_filename)
        if mine is not None:
            self.touched.add(mine)
        kind = self.exit_kind(frame)
        if kind is None:
            return
        self.exits[kind] += 1
        current: FrameType | None = frame
        while current is not None:
            found = ours(current.f_code.co_filename)
            if found is not None:
                self.path.add(found)
            current = current.f_back


async def trace(text: str, workdir: Path) -> Tracer:
    from bot.service.runtime import load_catalog, load_safety
    from model import Generator, load_model
    from model.demo.tiny import build_tiny_model

    model_dir = build_tiny_model(workdir / "tiny", flavour="polyglot")
    tracer = Tracer()
    threading.setprofile(tracer.profile)
    sys.setprofile(tracer.profile)
    generator = Generator(load_model(str(model_dir), quantization="none", device="cpu"), max_batch_size=4)
    try:
        async with telegram_bot(workdir, generator, catalog=load_catalog(), safety=await load_safety(),
                                max_new_tokens=24) as h:
            if h.service.taste is not None:
                await h.service.taste.reader()
            await h.text(1, 1, "점심 뭐 먹지?")  # warm-up: imports, caches and the first-use paths run now
            tracer.active = True
            await h.text(1, 1, text)
            tracer.active = False
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
        await generator.close()
    return tracer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--text", default="매운 거 추천해줘")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tracer = asyncio.run(trace(args.text, Path(tmp)))
    print(f"the path: {len(tracer.path)} files (exits: {tracer.exits})")
    for name in sorted(tracer.path):
        print(f"  {name}")
    others = sorted(tracer.touched - tracer.path)
    print(f"every file touched: {len(tracer.touched)} ({len(others)} beyond the path)")
    for name in others:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
