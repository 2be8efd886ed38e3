"""The terminal front end: run_chat in-process, `mechuri chat` as a subprocess on a fake, then on a tiny real model."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from bot_fixtures import all_turns, fresh_db, service_on
from fakes import FakeCatalog, FakeGenerator

from bot.service.replies import BUSY as BUSY_TEXT
from bot.service.replies import FORGET_CANCELLED, HELP_HINT, RELOAD_USAGE
from bot.terminal.chat import FORGET_ASK, HELP, MARKER, NO_RETRY_HERE, NOTHING_TO_RETRY, run_chat

TESTS = Path(__file__).resolve().parent
MECHURI = Path(sys.executable).with_name("mechuri")


def answers_in(out: str) -> list[str]:
    return [line.removeprefix(MARKER) for line in out.splitlines() if line.startswith(MARKER)]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return fresh_db(tmp_path)


async def test_run_chat_script(db: Path) -> None:
    gen = FakeGenerator(["짬뽕 어때요?", "짬뽕 또?", "탕수육 어때요?", "냉면 어때요?"])
    lines = ["다른 거", "중식 추천해줘", "", "다른 거", "/reset", "여름 메뉴", "/forget", "y", "/retry", "/quit", "안 읽힘"]
    out = io.StringIO()
    async with service_on(db, gen, catalog=FakeCatalog(["짬뽕", "탕수육", "냉면"])) as service:
        assert await run_chat(service, lines, out) == 0
    said = answers_in(out.getvalue())
    assert said[0] == NOTHING_TO_RETRY
    assert said[1:3] == ["짬뽕 어때요?", "탕수육 어때요?"]  # the resample dropped "짬뽕 또?"
    assert said[3].startswith("새 대화") and said[4] == "냉면 어때요?"
    assert said[5] == FORGET_ASK and said[6].endswith("개를 모두 지웠어요. 언제든 다시 물어보세요.") and said[7] == NOTHING_TO_RETRY
    assert len(said) == 8 and len(gen.requests) == 4
    assert all_turns(db) == []  # /forget really deleted


async def test_run_chat_streams_and_reports_refusals(db: Path) -> None:
    gen = FakeGenerator(["  김치찌개에 계란말이 어때요?"], chunk=2)
    out = io.StringIO()
    async with service_on(db, gen) as service:
        await run_chat(service, ["저녁 뭐 먹지"], out, stream=True)
        await service.reply(0, 0, "다른 창에서 한 질문")  # makes the chat's latest answer stale
        gen.busy = True
        await run_chat(service, ["점심은?"], out)
    assert out.getvalue().startswith(MARKER + "김치찌개에 계란말이 어때요?\n")
    assert answers_in(out.getvalue())[-1] == BUSY_TEXT


async def test_commands_behave_like_the_bot(db: Path, tmp_path: Path) -> None:
    """/help, /status, /reload and /forget (with its y/N question) work; unknown commands never reach the model."""
    (tmp_path / "adapters" / "spicy").mkdir(parents=True)
    gen = FakeGenerator(["짬뽕 어때요?"])
    lines = ["/help", "/menu", "/reload", "/reload ../etc", "/reload missing", "/reload spicy", "/status",
             "/Help", "/forget", "n", "중식 추천해줘", "/forget", "아니요", "/forget"]
    out = io.StringIO()
    async with service_on(db, gen, adapters_dir=tmp_path / "adapters") as service:
        assert await run_chat(service, lines, out) == 0
    text = out.getvalue()
    said = answers_in(text)
    assert text.startswith(MARKER + HELP + "\n") and said[1] == HELP_HINT and said[2] == RELOAD_USAGE
    assert said[3].startswith("어댑터 '../etc'를 불러오지 못했어요.") and "이유: 어댑터 이름이 올바르지 않아요" in text
    assert said[4].startswith("어댑터 'missing'을 불러오지 못했어요.") and str(tmp_path) not in text
    assert said[5].startswith("어댑터 'spicy' 준비 완료") and gen.adapter.name == "spicy"
    assert said[6] == "📊 메추리 상태" and "어댑터: spicy" in text and "모델: fake" in text
    assert said[7] == HELP_HINT  # commands are case-sensitive, as in Telegram
    assert said[8:10] == [FORGET_ASK, FORGET_CANCELLED] and said[10] == "짬뽕 어때요?"
    assert said[11:13] == [FORGET_ASK, FORGET_CANCELLED]  # anything but y/yes/네 keeps the history
    assert said[13:] == [FORGET_ASK, FORGET_CANCELLED]  # the input ended: nothing is deleted
    assert len(gen.requests) == 1 and len(all_turns(db)) == 2  # only the one question reached the model


async def test_a_refused_premise_and_a_caution(db: Path) -> None:
    """A dangerous premise gets a polite refusal without a generation and cannot be retried; a hazard gets a caution."""
    from model.food.dishes import DishCatalog
    from model.food.safety import SafetyNotes

    gen = FakeGenerator(["호박죽 어때요?"])
    out = io.StringIO()
    lines = ["술 마시고 운전해도 되는 안주 추천", "다른 거", "아기 이유식으로 꿀 넣은 죽 추천해줘"]
    async with service_on(db, gen, catalog=DishCatalog.load(), safety=SafetyNotes.load()) as service:
        await run_chat(service, lines, out)
    said = answers_in(out.getvalue())
    assert said[0].startswith("술을 마신 뒤에 운전하는 건 한 잔이라도 안 돼요.") and said[1] == NO_RETRY_HERE
    assert said[2] == "호박죽 어때요?" and "꿀을 먹이면 안 돼요" in out.getvalue()
    assert len(gen.requests) == 1
    stored = [(role, status) for _, role, _, status, _, _ in all_turns(db)]
    assert stored == [("user", "ok"), ("assistant", "ok")] * 2  # the refusal is stored like any answer


def run_cli(args: list[str], stdin: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    done = subprocess.run([str(MECHURI), *args], input=stdin, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout


FAKE_CLI = """
import sys
sys.path.insert(0, {tests!r})
from fakes import FakeGenerator
import bot.terminal.chat

async def fake_generator(settings, args):
    return FakeGenerator(["짬뽕 어때요?", "짜장면 어때요?"])

bot.terminal.chat.load_generator = fake_generator
from mechuri.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_mechuri_chat_with_piped_stdin_on_a_fake(tmp_path: Path) -> None:
    script = tmp_path / "fake_chat.py"
    script.write_text(textwrap.dedent(FAKE_CLI.format(tests=str(TESTS))))
    db = tmp_path / "x.db"
    done = subprocess.run(
        [sys.executable, str(script), "chat", "--database-url", f"sqlite+aiosqlite:///{db}", "--user-id", "42"],
        input="중식 추천해줘\n다른 거\n/reload\n/forget\nN\n", capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert answers_in(done.stdout) == ["짬뽕 어때요?", "짜장면 어때요?", RELOAD_USAGE, FORGET_ASK, FORGET_CANCELLED]
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT DISTINCT user_id FROM conversations").fetchall() == [(42,)]


def test_bad_settings_are_reported_one_line_each(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(MECHURI), "chat", "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"], input="",
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "MECHURI_TOP_P": "7", "MECHURI_ADMIN_IDS": "a,b"}, cwd=tmp_path,
    )
    assert done.returncode == 2
    problems = [line for line in done.stderr.splitlines() if "MECHURI_" in line]
    assert len(problems) == 2 and "MECHURI_TOP_P is invalid (got '7')" in problems[1]


def test_db_upgrade_and_downgrade_commands(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    run_cli(["db", "upgrade", "--database-url", url], "")
    run_cli(["db", "downgrade", "base", "--database-url", url], "")
    with sqlite3.connect(tmp_path / "cli.db") as raw:
        assert raw.execute("SELECT count(*) FROM sqlite_master WHERE name = 'turns'").fetchone() == (0,)


@pytest.mark.timeout(180)
def test_mechuri_chat_end_to_end_on_a_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The check from the issue: two answers printed, both stored, different seeds, the first rejected."""
    db = tmp_path / "x.db"
    out = run_cli(["chat", "--model", str(tiny_model_dir), "--database-url", f"sqlite+aiosqlite:///{db}"],
                  "매운 요리 추천해줘\n다른 거\n", env={"HF_HUB_OFFLINE": "1"})
    said = answers_in(out)
    assert len(said) == 2 and all(said)
    with sqlite3.connect(db) as raw:
        turns = raw.execute("SELECT role, status, seed, reply_to, new_tokens FROM turns ORDER BY id").fetchall()
    assert [(t[0], t[1]) for t in turns] == [("user", "ok"), ("assistant", "rejected"), ("assistant", "ok")]
    assert turns[1][2] != turns[2][2] and turns[1][3] == turns[2][3] == 1
    assert all(t[4] > 0 for t in turns[1:])


async def test_the_service_on_the_real_generator(any_model_dir: Path, any_adapter_dir: Path, tmp_path: Path) -> None:
    """The fake's surface matches the real Generator: streaming, seeds, token budgets, timings, adapter reload."""
    import asyncio

    from model import Generator, load_model

    db = await asyncio.to_thread(fresh_db, tmp_path)
    loaded = await asyncio.to_thread(load_model, str(any_model_dir), quantization="none", device="cpu")
    generator = Generator(loaded, max_batch_size=4, max_queue=8)
    partials: list[str] = []

    async def on_partial(text: str) -> None:
        partials.append(text)

    adapters = any_adapter_dir.parent
    try:
        async with service_on(db, generator, adapters_dir=adapters) as service:
            first = await service.reply(1, 1, "매운 요리 추천해줘", on_partial=on_partial)
            second = await service.retry(1, 1, first.turn_id)
            long = await service.reply(1, 1, "국밥 " * 3000)
            info = await service.reload_adapter(any_adapter_dir.name)
            adapted = await service.reply(1, 1, "점심 추천")
    finally:
        await generator.close()
    assert first.status == second.status == long.status == adapted.status == "ok"
    assert first.seed != second.seed and partials and first.text.startswith(partials[-1].strip()[:5])
    assert long.notice is not None
    stored = dict(
        (r[0], r[1:]) for r in sqlite3.connect(db).execute(
            "SELECT id, status, prompt_tokens, new_tokens, ttft_ms, adapter_name FROM turns WHERE role = 'assistant'")
    )
    assert stored[first.turn_id][0] == "rejected" and stored[second.turn_id][0] == "ok"
    assert all(r[1] + 64 <= generator.max_context and r[2] > 0 and r[3] > 0 for r in stored.values())
    assert stored[adapted.turn_id][4] == info.name == any_adapter_dir.name


def test_an_answer_budget_larger_than_the_model_context_fails_clearly(tiny_model_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run([str(MECHURI), "chat", "--model", str(tiny_model_dir), "--max-new-tokens", "1000",
                           "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"], input="해장\n",
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "MECHURI_MAX_NEW_TOKENS is too large for this model (got 1000)" in proc.stderr
    assert "at most 960" in proc.stderr


async def test_run_chat_confirms_taste_statements_with_a_y_n_line(db: Path) -> None:
    from bot.taste.profile import allergy, diet
    from model import DishCatalog

    gen = FakeGenerator(["새우튀김 어때요?", "비빔밥 어때요?", "냉면 어때요?", "된장찌개 어때요?"])
    lines = ["나 새우 알레르기 있어. 저녁 추천해줘", "y", "/taste", "오이 싫어해", "점심 추천해줘",
             "/taste 식단 채식", "/taste 알레르기 계란", "/taste 지우기 새우", "/taste 식단 케토", "요즘 채식 중이야", ""]
    out = io.StringIO()
    async with service_on(db, gen, catalog=DishCatalog.load()) as service:
        assert await run_chat(service, lines, out) == 0
        profile = await service.taste.store.profile(0)
    said = answers_in(out.getvalue())
    # answered at once (새우튀김 resampled away), "기억해 둘까요?" after the answer
    assert said[:3] == ["비빔밥 어때요?", "새우 알레르기를 기억해 둘까요? (y/N)", "기억했어요 ✅"]
    assert said[3] == "🍽 내 입맛 기록" and "• 알레르기: 새우" in out.getvalue()
    # "점심 추천해줘" was neither yes nor no: the statement was declined and the line answered as a new message
    assert said[4:7] == ["오이를 싫어하신다고 기억해 둘까요? (y/N)", "알겠어요, 기억하지 않을게요.", "냉면 어때요?"]
    assert said[7:10] == ["식단: 채식 켰어요.", "달걀 알레르기를 기억했어요.", "새우 지웠어요."]
    assert said[10].startswith("식단은 이 중에서") and said[11:] == ["이미 기억하고 있어요."]
    assert profile.items == (diet("veg"), allergy("달걀"))
    assert len(gen.requests) == 3
