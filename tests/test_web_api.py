"""The web page through its HTTP API (gradio_client, as bench/web_sessions.py drives it), on the quick demo model and
the real service: history across a server restart, votes exported as Telegram's are, the taste panel, the admin
area for admins only, and the safe defaults of `mechuri web`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_server import WebServer, start_web_server

from bot.feedback.export import ExportOptions, export_feedback
from bot.service import replies
from bot.settings import SettingsError, load_settings
from bot.store.users import new_browser_key, web_user_id
from bot.web.server import check_exposure
from mechuri.cli import main

pytestmark = pytest.mark.timeout(600)


def client(server: WebServer, auth: tuple[str, str] | None = None) -> Any:
    from gradio_client import Client

    return Client(server.url, auth=auth, verbose=False)


def text_of(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def shown(history: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], text_of(m)) for m in history]


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('web-api') / 'web.db'}"


@pytest.fixture(scope="module")
def server(quick_demo_dir: Path, db_url: str) -> Iterator[WebServer]:
    running = start_web_server(quick_demo_dir, db_url, web_auth="boss:pw1,guest:pw2", web_admins="boss")
    yield running
    running.stop()


def test_history_survives_a_server_restart_and_votes_export_like_telegrams(
        server: WebServer, quick_demo_dir: Path, db_url: str, tmp_path: Path) -> None:
    key = new_browser_key()
    api = client(server, ("guest", "pw2"))
    history = api.predict("해장 추천해줘", [], key, api_name="/send")
    first = text_of(history[-1])
    history = api.predict(history, key, api_name="/retry")
    second = text_of(history[-1])
    assert [r for r, _ in shown(history)] == ["user", "assistant"] and second != first
    assert api.predict(key, api_name="/vote_up") == "고마워요! 다음 추천에 참고할게요."
    server.stop()
    restarted = start_web_server(quick_demo_dir, db_url, web_auth="boss:pw1,guest:pw2", web_admins="boss")
    try:
        again = client(restarted, ("guest", "pw2"))
        opened = again.predict(key, api_name="/open")
        assert opened[0] == key and shown(opened[1]) == [("user", "해장 추천해줘"), ("assistant", second)]
        # A stranger's browser sees nothing of it.
        assert again.predict(new_browser_key(), api_name="/open")[1] == []
    finally:
        restarted.stop()
    out = tmp_path / "kto.jsonl"
    export_feedback(db_url, out, options=ExportOptions(format="kto"))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    labels = {row["completion"].strip(): row["label"] for row in rows}
    assert labels.get(first) is False and labels.get(second) is True, rows
    assert all("user" not in row for row in rows)


@pytest.fixture(scope="module")
def fresh(quick_demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    db = tmp_path_factory.mktemp("web-api-2") / "web.db"
    running = start_web_server(quick_demo_dir, f"sqlite+aiosqlite:///{db}", web_auth="boss:pw1,guest:pw2",
                               web_admins="boss")
    yield running
    running.stop()


def test_the_admin_area_is_for_admins_only(fresh: WebServer) -> None:
    assert client(fresh, ("boss", "pw1")).predict(api_name="/admin_status").startswith("📊 메추리 상태")
    guest = client(fresh, ("guest", "pw2"))
    assert guest.predict(api_name="/admin_status") == replies.ADMIN_ONLY
    assert guest.predict("../etc", api_name="/admin_reload") == replies.ADMIN_ONLY
    refused = client(fresh, ("boss", "pw1")).predict("../etc", api_name="/admin_reload")
    assert "불러오지 못했어요" in refused and "/" + "tmp" not in refused  # no server path shown
    with pytest.raises(Exception):  # noqa: B017 - no login, no page
        client(fresh)


def test_the_taste_panel_edits_what_answers_avoid(fresh: WebServer) -> None:
    key = new_browser_key()
    api = client(fresh, ("guest", "pw2"))
    text, allergies, diets, _others, said = api.predict(key, ["새우", "땅콩"], ["채식"], api_name="/taste_save")
    assert sorted(allergies) == ["땅콩", "새우"] and diets == ["채식"] and "새우 알레르기를 기억했어요" in said
    text, allergies, *_ = api.predict(key, ["땅콩"], [], api_name="/taste_save")
    assert allergies == ["땅콩"] and "새우" not in text
    # A statement in chat gets the same confirmation as in Telegram.
    history = api.predict("오이 싫어해", [], key, api_name="/send")
    assert text_of(history[-1]) == "오이를 싫어하신다고 기억해 둘까요?"
    history = api.predict(history, key, api_name="/confirm_yes")
    assert "기억했어요" in text_of(history[-1])
    text, *_ = api.predict(key, api_name="/taste")
    assert "오이" in text and "땅콩" in text


def test_web_users_never_meet_telegram_users() -> None:
    keys = [new_browser_key() for _ in range(1000)]
    ids = {web_user_id(k) for k in keys}
    assert len(ids) == 1000 and max(ids) < 0 and min(ids) >= -(2**62)
    assert web_user_id(keys[0]) == web_user_id(keys[0])
    with pytest.raises(ValueError):
        web_user_id("short")


def test_another_address_needs_a_login(capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(env_file=None)
    assert "local only" in check_exposure(settings, "127.0.0.1") and check_exposure(settings, "::1")
    with pytest.raises(SettingsError, match="MECHURI_WEB_AUTH"):
        check_exposure(settings, "0.0.0.0")
    assert "login required" in check_exposure(load_settings(env_file=None, web_auth="a:b"), "0.0.0.0")
    # The command refuses before loading any model, and says how to fix it.
    assert main(["web", "--host", "0.0.0.0", "--model", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "MECHURI_WEB_AUTH" in err and "Traceback" not in err


def test_mechuri_web_demo_serves_the_page(quick_demo_dir: Path, tmp_path: Path) -> None:
    """The command itself, as a newcomer runs it (the quick demo model, already in this XDG cache)."""
    import os
    import re
    import signal
    import subprocess
    import sys

    from web_server import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MECHURI_")}
    env.update(XDG_CACHE_HOME=str(quick_demo_dir.parents[2]), XDG_DATA_HOME=str(tmp_path / "data"),
               HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    process = subprocess.Popen([sys.executable, "-m", "mechuri", "web", "--demo-quick", "--port", str(port)],
                               stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        lines = []
        for line in process.stderr:
            lines.append(line)
            if "메추리 웹 페이지" in line:
                break
        assert re.search(rf"http://127\.0\.0\.1:{port}/ .*local only", lines[-1]), "".join(lines)[-2000:]
        assert "SMALL DEMO MODEL" in "".join(lines)  # the same banner as the demo chat
        from gradio_client import Client

        history = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            "매운 요리 추천해줘", [], new_browser_key(), api_name="/send")
        assert text_of(history[-1]) and text_of(history[-1]) != "…"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert (tmp_path / "data" / "mechuri" / "demo.db").exists()  # the history is in the user's data folder


def test_the_sessions_benchmark_runs_against_a_server_process(quick_demo_dir: Path) -> None:
    """bench/web_sessions.py end to end, small: the page in its own process, the service's times paired with the
    clients' (a message without one would fail), and the order and nothing-lost checks reported clean."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "bench/web_sessions.py", "--model", str(quick_demo_dir), "--sessions", "2",
                           "--messages", "2", "--sequential", "2", "--max-new-tokens", "16"], cwd=repo,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    assert [row[1] for row in rows] == ["2", "2", "4", "4"], done.stdout
    assert all(float(row[2]) > 0 for row in rows), done.stdout  # the client's time includes the service's
    assert "Lost or out of order: none" in done.stdout and "own process" in done.stdout
