"""The web page in a real browser: headless Chromium (Debian's, through its chromedriver) against `mechuri web`'s page
served on 127.0.0.1, on the quick demo model, the real service and a SQLite file. What a person does and sees:
ask and watch the answer stream in, "다른 거", 👍, reload, state an allergy and confirm it."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from web_server import WebServer, start_web_server

from model.food.dishes import DishCatalog

pytestmark = pytest.mark.timeout(600)

BOT = '#chat [data-testid="bot"]'
USER = '#chat [data-testid="user"]'
# Every text the last answer bubble showed, recorded in the page as it changes (a streamed answer shows several).
WATCH = """
window.__seen = [];
const chat = document.querySelector('#chat');
new MutationObserver(() => {
  const bots = chat.querySelectorAll('[data-testid="bot"]');
  if (!bots.length) return;
  const text = bots[bots.length - 1].innerText.trim();
  if (window.__seen[window.__seen.length - 1] !== text) window.__seen.push(text);
}).observe(chat, {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture(scope="module")
def server(quick_demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    db = tmp_path_factory.mktemp("web-browser") / "web.db"
    running = start_web_server(quick_demo_dir, f"sqlite+aiosqlite:///{db}")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def page(server: WebServer, chromium: Callable[..., Any]) -> Any:
    driver = chromium()
    driver.get(server.url)
    wait_for(lambda: box(driver).is_enabled(), "the message box to open")
    return driver


def db_rows(server: WebServer, sql: str, *args: Any) -> list[tuple]:
    path = server.database_url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as db:
        return db.execute(sql, args).fetchall()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # an element not there yet, or replaced while we read it
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def box(driver: Any) -> Any:
    return driver.find_element("css selector", "#message textarea")


def texts(driver: Any, selector: str) -> list[str]:
    return [e.text.strip() for e in driver.find_elements("css selector", selector)]


IDLE = """const t = document.querySelector('#chat [data-testid="status-tracker"]');
return !t || (t.classList.contains('hide') && !t.classList.contains('generating'));"""


def idle(driver: Any) -> bool:
    """No event is writing to the chat (Gradio shows its status tracker on an event's outputs meanwhile)."""
    return bool(driver.execute_script(IDLE)) and box(driver).is_enabled()


def ask(driver: Any, text: str) -> str:
    before = len(texts(driver, BOT))
    driver.execute_script(WATCH)
    field = box(driver)
    field.send_keys(text)
    field.send_keys("\n")
    wait_for(lambda: len(texts(driver, BOT)) > before and texts(driver, BOT)[-1] not in ("", "…"), "an answer")
    return settled(driver)


def settled(driver: Any) -> str:
    """The last answer once it stops changing."""
    last, calm = None, 0
    for _ in range(1000):
        time.sleep(0.15)
        now = texts(driver, BOT)[-1]
        calm = calm + 1 if now == last and now not in ("", "…") and idle(driver) else 0
        if calm >= 3:
            return now
        last = now
    raise AssertionError("the answer never settled")


def click(driver: Any, elem_id: str) -> None:
    driver.find_element("css selector", f"#{elem_id}").click()


def shown_buttons(driver: Any, elem_id: str) -> list[Any]:
    return [b for b in driver.find_elements("css selector", f"#{elem_id}") if b.is_displayed()]


def user_id(server: WebServer) -> int:
    return db_rows(server, "SELECT id FROM users")[0][0]


def test_an_answer_streams_in_and_is_stored(page: Any, server: WebServer) -> None:
    answer = ask(page, "매운 요리 추천해줘")
    seen = page.execute_script("return window.__seen")
    # Streamed: the bubble showed text while the answer was being generated, before the final one. (With the quick
    # model a sample takes less than one page update, so what shows may be a partial of a sample the service then
    # drew again: a resample starts the bubble over. A page that waited for the whole answer shows only "…".)
    assert answer in seen, seen
    before = [s for s in seen[: seen.index(answer)] if s not in ("", "…")]
    assert before, seen
    assert texts(page, USER)[-1] == "매운 요리 추천해줘"
    assert box(page).get_attribute("value") == ""  # emptied for the next message
    stored = db_rows(server, "SELECT text FROM turns WHERE role = 'assistant' ORDER BY id DESC LIMIT 1")[0][0]
    assert stored == answer
    # The browser's user is a web user: a negative id, never a Telegram one.
    assert user_id(server) < 0


def test_retry_shows_a_different_dish_and_turns_the_old_one_down(page: Any, server: WebServer) -> None:
    catalog = DishCatalog.load()
    before = texts(page, BOT)[-1]
    old_turn = db_rows(server, "SELECT id FROM turns WHERE role = 'assistant' ORDER BY id DESC LIMIT 1")[0][0]
    click(page, "retry")
    wait_for(lambda: texts(page, BOT)[-1] not in (before, "…"), "the new answer")
    after = settled(page)
    assert len(texts(page, BOT)) == 1  # the new answer took the turned-down one's place
    assert set(catalog.names_in(after)).isdisjoint(catalog.names_in(before)), (before, after)
    assert catalog.names_in(after), after
    assert db_rows(server, "SELECT status FROM turns WHERE id = ?", old_turn) == [("rejected",)]


def test_a_thumbs_up_is_stored_as_a_vote(page: Any, server: WebServer) -> None:
    click(page, "vote-up")
    wait_for(lambda: "고마워요" in page.find_element("css selector", "#notice").text, "the thanks")
    latest = db_rows(server, "SELECT text, vote FROM turns WHERE role = 'assistant' AND status = 'ok' "
                             "ORDER BY id DESC LIMIT 1")
    assert latest == [(texts(page, BOT)[-1], "up")]


def test_a_reload_shows_the_history(page: Any) -> None:
    shown = (texts(page, USER), texts(page, BOT))
    page.refresh()
    wait_for(lambda: box(page).is_enabled() and texts(page, BOT), "the history")
    assert (texts(page, USER), texts(page, BOT)) == shown


def test_an_allergy_is_confirmed_then_remembered(page: Any, server: WebServer) -> None:
    question = ask(page, "나 새우 알레르기 있어")
    assert question == "새우 알레르기를 기억해 둘까요?"
    wait_for(lambda: shown_buttons(page, "taste-yes"), "예 under the question")
    click(page, "taste-yes")
    wait_for(lambda: "기억했어요" in " ".join(texts(page, BOT)), "the confirmation")
    wait_for(lambda: not shown_buttons(page, "taste-yes"), "예 gone once answered")
    assert db_rows(server, "SELECT user_id, kind, value FROM taste_items") == [(user_id(server), "allergy", "새우")]
    # The taste panel shows it, checked.
    page.find_element("xpath", "//button[@role='tab' and contains(., '내 입맛')]").click()
    wait_for(lambda: "새우" in page.find_element("css selector", "#taste-text").text, "the taste panel")
    shrimp = page.find_element("xpath", "//*[@id='allergies']//label[contains(., '새우')]//input")
    assert shrimp.is_selected()
