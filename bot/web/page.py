"""The 메추리 web page: Gradio's own components and events, wired to bot/web/chat.py, taste.py and admin.py.

Every event has an API name, so the page's HTTP API (gradio_client) is the same conversation as the page:
`/open` (the browser key → the history), `/send`, `/retry`, `/vote_up`, `/vote_down`, `/confirm_yes`, `/confirm_no`,
`/reset`, `/forget`, `/taste`, `/taste_save`, `/taste_forget`, `/admin_status`, `/admin_reload`. The browser key
is a BrowserState (the browser's local storage), an explicit argument for an API client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from bot.service import replies
from bot.taste.profile import ALLERGEN_ORDER, DIETS
from bot.web.admin import AdminDesk
from bot.web.chat import MAX_MESSAGE_CHARS, History, Latest, WebChat
from bot.web.taste import TastePanel, TasteView

EXAMPLES = ["매운 요리 추천해줘", "아침에 간단하게 먹을 수 있는 음식 추천해줘"]
INTRO = ("## 메추리 🐦 메뉴 추천\n먹고 싶은 분위기를 말하면 메뉴를 골라 드려요. 마음에 안 들면 **🔄 다른 거**, "
         "알레르기나 싫어하는 음식은 말로 알려 주시거나 **내 입맛** 탭에서 고칠 수 있어요.")
BROWSER_KEY = "mechuri-browser"
BROWSER_SECRET = "mechuri-web-browser-key-v1"
# The default theme fetches Google Fonts: offline (and in the browser tests) a page would wait on a request that
# never returns. Local font stacks only.
THEME = gr.themes.Default(font=["system-ui", "Noto Sans CJK KR", "sans-serif"], font_mono=["monospace"])


def _taste_outputs(shown: TasteView) -> tuple[Any, ...]:
    return shown.text, shown.allergies, shown.diets, gr.update(choices=shown.others, value=None)


def build_page(chat: WebChat, panel: TastePanel, admin: AdminDesk, *, banner: str | None = None) -> gr.Blocks:
    with gr.Blocks(title="메추리", analytics_enabled=False) as page:
        # Gradio encrypts the value with a per-process random secret unless given one, and a server restart would
        # then forget every browser. The key itself is the secret (192 random bits); this only has to be stable.
        browser = gr.BrowserState(None, storage_key=BROWSER_KEY, secret=BROWSER_SECRET)
        latest = gr.State(Latest())
        gr.Markdown(INTRO + (f"\n\n> {banner}" if banner else ""))
        with gr.Tab("대화"):
            chatbot = gr.Chatbot(label="메추리", elem_id="chat", height=440, feedback_options=None,
                                 buttons=["copy"], placeholder="무엇이 먹고 싶으세요?")
            with gr.Row(visible=False) as confirm_row:
                yes = gr.Button("예, 기억해 주세요", variant="primary", elem_id="taste-yes")
                no = gr.Button("아니요", elem_id="taste-no")
            box = gr.Textbox(show_label=False, placeholder="예: 비 오는 날 따뜻한 국물 요리 추천해줘",
                             max_length=MAX_MESSAGE_CHARS, submit_btn="보내기", elem_id="message",
                             interactive=False)  # until the page knows its browser (the load event below)
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
        with gr.Tab("내 입맛", elem_id="taste-tab") as taste_tab:
            taste_text = gr.Markdown(elem_id="taste-text")
            allergies = gr.CheckboxGroup(list(ALLERGEN_ORDER), label="알레르기 (이 재료가 든 메뉴는 절대 추천하지 않아요)",
                                         elem_id="allergies")
            diets = gr.CheckboxGroup([d.label for d in DIETS.values()], label="식단", elem_id="diets")
            save = gr.Button("저장", variant="primary", elem_id="taste-save")
            others = gr.Dropdown([], label="싫어하는 것·좋아하는 것 (고르면 지울 수 있어요)", elem_id="taste-others")
            drop = gr.Button("고른 항목 지우기", elem_id="taste-drop")
            taste_notice = gr.Markdown(elem_id="taste-notice")
        with gr.Tab("관리", visible=False, elem_id="admin-tab") as admin_tab:
            status_button = gr.Button("상태 보기", elem_id="admin-status")
            adapter = gr.Textbox(label="어댑터 이름 (어댑터 폴더 안의 폴더)", elem_id="adapter-name")
            reload = gr.Button("어댑터 불러오기", elem_id="admin-reload")
            admin_text = gr.Markdown(elem_id="admin-text")
        taste_outputs = [taste_text, allergies, diets, others]

        async def open_page(key: Any, request: gr.Request) -> tuple[Any, ...]:
            key, history, last = await chat.open(key)
            return (key, history, last, gr.update(visible=bool(last.asking)),
                    gr.update(visible=admin.is_admin(request.username)), gr.update(interactive=True),
                    *_taste_outputs(await panel.show(key)))

        page.load(open_page, [browser], [browser, chatbot, latest, confirm_row, admin_tab, box, *taste_outputs],
                  api_name="open")

        async def streamed(updates: AsyncIterator[tuple[History, Latest]]) -> AsyncIterator[tuple[Any, ...]]:
            async for history, last in updates:
                yield history, last, gr.update(visible=bool(last.asking))

        async def send(text: str, history: History, key: Any) -> AsyncIterator[tuple[Any, ...]]:
            async for update in streamed(chat.send(text, history, key)):
                yield *update, ""  # the box empties for the next message; only sending writes to it

        async def again(history: History, key: Any, last: Latest) -> AsyncIterator[tuple[Any, ...]]:
            async for update in streamed(chat.retry(history, key, last)):
                yield update

        def settle(accept: bool) -> Any:
            async def handler(history: History, key: Any, last: Latest) -> AsyncIterator[tuple[Any, ...]]:
                async for update in streamed(chat.settle(accept, history, key, last)):
                    yield update
            return handler

        chat_outputs = [chatbot, latest, confirm_row]
        box.submit(send, [box, chatbot, browser], [*chat_outputs, box], api_name="send")
        retry.click(again, [chatbot, browser, latest], chat_outputs, api_name="retry")
        async def show_taste(key: Any) -> tuple[Any, ...]:
            return _taste_outputs(await panel.show(key))

        for button, accept, name in ((yes, True, "confirm_yes"), (no, False, "confirm_no")):
            # The panel shows what was just remembered.
            button.click(settle(accept), [chatbot, browser, latest], chat_outputs, api_name=name).then(
                show_taste, [browser], taste_outputs, api_name=False)

        async def vote_up(key: Any, last: Latest) -> str:
            return await chat.vote(True, key, last)

        async def vote_down(key: Any, last: Latest) -> str:
            return await chat.vote(False, key, last)

        up.click(vote_up, [browser, latest], notice, api_name="vote_up")
        down.click(vote_down, [browser, latest], notice, api_name="vote_down")
        reset.click(chat.reset, [browser], [chatbot, latest], api_name="reset")
        forget.click(lambda: gr.update(visible=True), None, forget_row, api_name=False)
        forget_no.click(lambda: (gr.update(visible=False), replies.FORGET_CANCELLED), None, [forget_row, notice],
                        api_name=False)

        async def forget_all(key: Any) -> tuple[Any, ...]:
            history, last = await chat.forget(key)
            return (history, last, gr.update(visible=False), *_taste_outputs(await panel.show(key)))

        forget_yes.click(forget_all, [browser], [chatbot, latest, forget_row, *taste_outputs], api_name="forget")

        async def save_taste(key: Any, chosen: list[str], diet_labels: list[str]) -> tuple[Any, ...]:
            shown, said = await panel.save(key, chosen, diet_labels)
            return (*_taste_outputs(shown), said)

        async def drop_taste(key: Any, item: str | None) -> tuple[Any, ...]:
            shown, said = await panel.forget_item(key, item)
            return (*_taste_outputs(shown), said)

        save.click(save_taste, [browser, allergies, diets], [*taste_outputs, taste_notice], api_name="taste_save")
        drop.click(drop_taste, [browser, others], [*taste_outputs, taste_notice], api_name="taste_forget")
        taste_tab.select(show_taste, [browser], taste_outputs, api_name="taste")

        def status(request: gr.Request) -> str:
            return admin.status(request.username)

        async def reload_adapter(name: str, request: gr.Request) -> str:
            return await admin.reload(request.username, name)

        status_button.click(status, None, admin_text, api_name="admin_status")
        reload.click(reload_adapter, [adapter], admin_text, api_name="admin_reload")
    return page
