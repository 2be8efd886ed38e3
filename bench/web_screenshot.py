"""The README's screenshot of the web page: `mechuri web --demo`'s page (the demo model, the real service, a fresh
SQLite file) in the system's headless Chromium, after two example questions and one "🔄 다른 거".

    .venv/bin/python bench/web_screenshot.py [--model DIR] [--out docs/img/web.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from web_server import start_web_server  # noqa: E402

from bench.web_sessions import demo_model  # noqa: E402

IDLE = """const t = document.querySelector('#chat [data-testid="status-tracker"]');
return !t || (t.classList.contains('hide') && !t.classList.contains('generating'));"""
STEPS = (("send", "매운 요리 추천해줘"), ("click", "retry"), ("send", "아침에 간단하게 먹을 수 있는 음식 추천해줘"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="model folder (default: the demo model)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "img" / "web.png"))
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    model = Path(args.model) if args.model else demo_model()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_web_server(model, f"sqlite+aiosqlite:///{Path(tmp) / 'web.db'}", seed=3, max_new_tokens=96)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1150",
                    "--lang=ko-KR", "--hide-scrollbars"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(server.url)
            box = lambda: driver.find_element("css selector", "#message textarea")  # noqa: E731
            wait(lambda: box().is_enabled())
            for action, what in STEPS:
                print(action, what, flush=True)
                count = len(driver.find_elements("css selector", '#chat [data-testid="bot"]'))
                if action == "send":
                    box().send_keys(what + "\n")
                    wait(lambda c=count: len(driver.find_elements("css selector", '#chat [data-testid="bot"]')) > c)
                else:
                    driver.find_element("css selector", f"#{what}").click()
                time.sleep(0.5)
                calm = [0]

                def idle(calm: list[int] = calm) -> bool:
                    calm[0] = calm[0] + 1 if driver.execute_script(IDLE) else 0
                    return calm[0] >= 10

                wait(idle)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(args.out)
            print(f"wrote {args.out}")
        except SystemExit:
            driver.save_screenshot("/tmp/web_screenshot_failed.png")
            raise
        finally:
            driver.quit()
            server.stop()


def wait(check, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit("the page did not answer in time")


if __name__ == "__main__":
    main()
