"""The 메추리 web page: Gradio's own components and events, wired to bot/web/chat.py, taste.py and admin.py.

Every event has an API name, so the page's HTTP API (gradio_client) is the same conversation as the page:
`/open` (the browser key → the history), `/send`, `/retry`, `/vote_up`, `/vote_down`, `/confirm_yes`, `/confirm_no`,
`/reset`, `/forget`, `/taste`, `/taste_save`, `/taste_forget`, `/admin_status`, `/admin_reload`. The browser key
is a BrowserState (the browser's local storage), an explicit argument for an API client.

Each tab's components are built by one function into a small dataclass; each group's events are wired by another.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from bot.service import replies
from bot.taste.profile import ALLERGEN_ORDER, DIETS
from bot.web.admin import AdminDesk
from bot.web.chat import MAX_MESSAGE_CHARS, History, Latest, Update, WebChat
from bot.web.taste import TastePanel, TasteView

EXAMPLES = ["매운 요리 추천해줘", "아침에 간단하게 먹을 수 있는 음식 추천해줘"]
INTRO = ("## 메추리 🐦 메뉴 추천\n먹고 싶은 분위기를 말하면 메뉴를 골라 드려요. 마음에 안 들면 **🔄 다른 거**, "
         "알레르기나 싫어하는 음식은 말로 알려 주시거나 **내 입맛** 탭에서 고칠 수 있어요.")
BROWSER_KEY = "mechuri-browser"
BROWSER_SECRET = "mechuri-web-browser-key-v1"
# The default theme fetches Google Fonts: offline (and in the browser tests) a page would wait on a request that
# never returns. Local font stacks only.
THEME = gr.themes.Default(font=["system-ui", "Noto Sans CJK KR", "sans-serif"], font_mono=["monospace"])


@dataclass(frozen=True)
class ChatTab:
    chatbot: gr.Chatbot
    confirm_row: gr.Row
    yes: gr.Button
    no: gr.Button
    box: gr.Textbox
    retry: gr.Button
    up: gr.Button
    down: gr.Button
    reset: gr.Button
    forget: gr.Button
    forget_row: gr.Row
    forget_yes: gr.Button
    forget_no: gr.Button
    notice: gr.Markdown


@dataclass(frozen=True)
class TasteTab:
    tab: gr.Tab
    text: gr.Markdown
    allergies: gr.CheckboxGroup
    diets: gr.CheckboxGroup
    save: gr.Button
    others: gr.Dropdown
    drop: gr.Button
    notice: gr.Markdown

    @property
    def outputs(self) -> list[Any]:
        """What every taste view fills, in _taste_outputs' order."""
        return [self.text, self.allergies, self.diets, self.others]


@dataclass(frozen=True)
class AdminTab:
    tab: gr.Tab
    status: gr.Button
    adapter: gr.Textbox
    reload: gr.Button
    text: gr.Markdown


@dataclass(frozen=True)
class Page:
    """The page's per-browser state and its tabs: what the event wiring reads."""

    browser: gr.BrowserState
    latest: gr.State
    chat: ChatTab
    taste: TasteTab
    admin: AdminTab


def build_page(chat: WebChat, panel: TastePanel, admin: AdminDesk, *, banner: str | None = None) -> gr.Blocks:
    with gr.Blocks(title="메추리", analytics_enabled=False) as blocks:
        # Gradio encrypts the value with a per-process random secret unless given one, and a server restart would
        # then forget every browser. The key itself is the secret (192 random bits); this only has to be stable.
        browser = gr.BrowserState(None, storage_key=BROWSER_KEY, secret=BROWSER_SECRET)
        latest = gr.State(Latest())
        gr.Markdown(INTRO + (f"\n\n> {banner}" if banner else ""))
        page = Page(browser, latest, _chat_tab(), _taste_tab(), _admin_tab())
        _wire_open(blocks, page, chat, panel, admin)
        _wire_chat(page, chat, panel)
        _wire_taste(page, panel)
        _wire_admin(page.admin, admin)
    return blocks


def _chat_tab() -> ChatTab:
    with gr.Tab("대화"):
        chatbot = gr.Chatbot(label="메추리", elem_id="chat", height=440, feedback_options=None,
                             buttons=["copy"], placeholder="무엇이 먹고 싶으세요?")
        with gr.Row(visible=False) as confirm_row:
            yes = gr.Button("예, 기억해 주세요", variant="primary", elem_id="taste-yes")
            no = gr.Button("아니요", elem_id="taste-no")
        box = gr.Textbox(show_label=False, placeholder="예: 비 오는 날 따뜻한 국물 요리 추천해줘",
                         max_length=MAX_MESSAGE_CHARS, submit_btn="보내기", elem_id="message",
                         interactive=False)  # until the page knows its browser (the load event, _wire_open)
        with gr.Row():
            retry = gr.Button("🔄 다른 거", elem_id="retry")
            up = gr.Button("👍", elem_id="vote-up", min_width=60)
            down = gr.Button("👎", elem_id="vote-down", min_width=60)
            reset = gr.Button("새 대화", elem_id="reset")
            forget = gr.Button("기록 지우기", variant="stop", elem_id="forget")
        with gr.Row(visible=False) as forget_row:
            gr.Markdown(replies.FORGET_ASK)
            forget_yes = gr.Button("모두 지우기", variant="stop", elem_id="forget-yes")
            forget_no = gr.Button("취소", elem_id="forget-no")
        notice = gr.Markdown(elem_id="notice")
        gr.Examples(EXAMPLES, inputs=box, label="이렇게 물어보세요")
    return ChatTab(chatbot, confirm_row, yes, no, box, retry, up, down, reset, forget, forget_row, forget_yes,
                   forget_no, notice)


def _taste_tab() -> TasteTab:
    with gr.Tab("내 입맛", elem_id="taste-tab") as tab:
        text = gr.Markdown(elem_id="taste-text")
        allergies = gr.CheckboxGroup(list(ALLERGEN_ORDER), label="알레르기 (이 재료가 든 메뉴는 절대 추천하지 않아요)",
                                     elem_id="allergies")
        diets = gr.CheckboxGroup([d.label for d in DIETS.values()], label="식단", elem_id="diets")
        save = gr.Button("저장", variant="primary", elem_id="taste-save")
        others = gr.Dropdown([], label="싫어하는 것·좋아하는 것 (고르면 지울 수 있어요)", elem_id="taste-others")
        drop = gr.Button("고른 항목 지우기", elem_id="taste-drop")
        notice = gr.Markdown(elem_id="taste-notice")
    return TasteTab(tab, text, allergies, diets, save, others, drop, notice)


def _admin_tab() -> AdminTab:
    with gr.Tab("관리", visible=False, elem_id="admin-tab") as tab:
        status = gr.Button("상태 보기", elem_id="admin-status")
        adapter = gr.Textbox(label="어댑터 이름 (어댑터 폴더 안의 폴더)", elem_id="adapter-name")
        reload = gr.Button("어댑터 불러오기", elem_id="admin-reload")
        text = gr.Markdown(elem_id="admin-text")
    return AdminTab(tab, status, adapter, reload, text)


def _taste_outputs(shown: TasteView) -> tuple[Any, ...]:
    return shown.text, shown.allergies, shown.diets, gr.update(choices=shown.others, value=None)


def _taste_shower(panel: TastePanel) -> Callable[[Any], Awaitable[tuple[Any, ...]]]:
    async def show_taste(key: Any) -> tuple[Any, ...]:
        return _taste_outputs(await panel.show(key))
    return show_taste


def _wire_open(blocks: gr.Blocks, page: Page, chat: WebChat, panel: TastePanel, admin: AdminDesk) -> None:
    async def open_page(key: Any, request: gr.Request) -> tuple[Any, ...]:
        key, history, last = await chat.open(key)
        return (key, history, last, gr.update(visible=bool(last.asking)),
                gr.update(visible=admin.is_admin(request.username)), gr.update(interactive=True),
                *_taste_outputs(await panel.show(key)))

    blocks.load(open_page, [page.browser],
                [page.browser, page.chat.chatbot, page.latest, page.chat.confirm_row, page.admin.tab, page.chat.box,
                 *page.taste.outputs], api_name="open")


def _wire_chat(page: Page, chat: WebChat, panel: TastePanel) -> None:
    tab, browser, latest = page.chat, page.browser, page.latest

    async def streamed(updates: AsyncIterator[Update]) -> AsyncIterator[tuple[Any, ...]]:
        async for history, last in updates:
            yield history, gr.skip() if last is None else last

    async def send(text: str, history: History, key: Any) -> AsyncIterator[tuple[Any, ...]]:
        async for update in streamed(chat.send(text, history, key)):
            yield update

    async def again(history: History, key: Any, last: Latest) -> AsyncIterator[tuple[Any, ...]]:
        async for update in streamed(chat.retry(history, key, last)):
            yield update

    def settle(accept: bool) -> Any:
        async def handler(history: History, key: Any, last: Latest) -> AsyncIterator[tuple[Any, ...]]:
            async for update in streamed(chat.settle(accept, history, key, last)):
                yield update
        return handler

    def show_confirm(last: Latest) -> Any:
        return gr.update(visible=bool(last.asking))

    # Only the chat and its state change while an answer streams: every output costs Gradio work on each update.
    # The box empties in the browser (the message was read when sent), and 예/아니요 show once the answer is there.
    chat_outputs = [tab.chatbot, latest]
    hide_confirm = {"fn": lambda: gr.update(visible=False), "outputs": tab.confirm_row, "api_name": False,
                    "queue": False}
    tab.box.submit(send, [tab.box, tab.chatbot, browser], chat_outputs, api_name="send").then(
        show_confirm, latest, tab.confirm_row, api_name=False, queue=False)
    tab.box.submit(None, None, tab.box, js="() => ''", api_name=False)
    tab.retry.click(again, [tab.chatbot, browser, latest], chat_outputs, api_name="retry").then(
        show_confirm, latest, tab.confirm_row, api_name=False, queue=False)
    show_taste = _taste_shower(panel)
    for button, accept, name in ((tab.yes, True, "confirm_yes"), (tab.no, False, "confirm_no")):
        button.click(**hide_confirm)  # pressed once: no second answer to the same question
        # The panel shows what was just remembered.
        button.click(settle(accept), [tab.chatbot, browser, latest], chat_outputs, api_name=name).then(
            show_confirm, latest, tab.confirm_row, api_name=False, queue=False).then(
            show_taste, [browser], page.taste.outputs, api_name=False)
    _wire_votes_and_forgetting(page, chat, panel)


def _wire_votes_and_forgetting(page: Page, chat: WebChat, panel: TastePanel) -> None:
    tab, browser, latest = page.chat, page.browser, page.latest

    async def vote_up(key: Any, last: Latest) -> str:
        return await chat.vote(True, key, last)

    async def vote_down(key: Any, last: Latest) -> str:
        return await chat.vote(False, key, last)

    async def forget_all(key: Any) -> tuple[Any, ...]:
        history, last = await chat.forget(key)
        return (history, last, gr.update(visible=False), *_taste_outputs(await panel.show(key)))

    tab.up.click(vote_up, [browser, latest], tab.notice, api_name="vote_up")
    tab.down.click(vote_down, [browser, latest], tab.notice, api_name="vote_down")
    tab.reset.click(chat.reset, [browser], [tab.chatbot, latest], api_name="reset")
    tab.forget.click(lambda: gr.update(visible=True), None, tab.forget_row, api_name=False)
    tab.forget_no.click(lambda: (gr.update(visible=False), replies.FORGET_CANCELLED), None,
                        [tab.forget_row, tab.notice], api_name=False)
    tab.forget_yes.click(forget_all, [browser], [tab.chatbot, latest, tab.forget_row, *page.taste.outputs],
                         api_name="forget")


def _wire_taste(page: Page, panel: TastePanel) -> None:
    tab, browser = page.taste, page.browser

    async def save_taste(key: Any, chosen: list[str], diet_labels: list[str]) -> tuple[Any, ...]:
        shown, said = await panel.save(key, chosen, diet_labels)
        return (*_taste_outputs(shown), said)

    async def drop_taste(key: Any, item: str | None) -> tuple[Any, ...]:
        shown, said = await panel.forget_item(key, item)
        return (*_taste_outputs(shown), said)

    tab.save.click(save_taste, [browser, tab.allergies, tab.diets], [*tab.outputs, tab.notice], api_name="taste_save")
    tab.drop.click(drop_taste, [browser, tab.others], [*tab.outputs, tab.notice], api_name="taste_forget")
    tab.tab.select(_taste_shower(panel), [browser], tab.outputs, api_name="taste")


def _wire_admin(tab: AdminTab, admin: AdminDesk) -> None:
    def status(request: gr.Request) -> str:
        return admin.status(request.username)

    async def reload_adapter(name: str, request: gr.Request) -> str:
        return await admin.reload(request.username, name)

    tab.status.click(status, None, tab.text, api_name="admin_status")
    tab.reload.click(reload_adapter, [tab.adapter], tab.text, api_name="admin_reload")
