"""The chat demo in a real browser: Debian's Chromium, driven by Playwright.

`examples/chat.py` is served on the test's own event loop (uvicorn on asyncio, hypercorn
on trio, `wsrooms.testing.serve`); Playwright's synchronous API drives headless Chromium
from a worker thread, so the same test runs on both. Playwright cannot download a browser
here: it launches `/usr/bin/chromium` (`apt-get install chromium`; `scripts/test` does).

Set WSROOMS_UPDATE_SCREENSHOT=1 to copy the screenshot to docs/assets/chat.png.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest
from examples import chat

from wsrooms.testing import serve

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "assets" / "chat.png"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if importlib.util.find_spec("playwright") is None or not CHROMIUM.is_file():  # pragma: no cover
    if os.environ.get("WSROOMS_REQUIRE_BROWSER") == "1":
        raise RuntimeError("the browser test needs playwright and /usr/bin/chromium")
    pytestmark = [pytest.mark.skip(reason="needs playwright and /usr/bin/chromium")]
else:
    pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def talk_in_the_browser(
    base_url: str, profile: Path, screenshot: Path, restart: Callable[[str], None]
) -> None:
    """Two pages in room A and one in room B: what one A page says, only A pages see."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 760, "height": 560},
        )
        expect.set_options(timeout=10_000)
        try:
            ann, bob, cat = (browser.new_page() for _ in range(3))

            def open_chat(page: Page, room: str, name: str) -> None:
                page.goto(f"{base_url}/?room={room}&name={name}")
                expect(page.locator("#status")).to_have_text(f"connected as {name}")

            def say(page: Page, text: str) -> None:
                page.locator("input[name=text]").fill(text)
                page.locator("#form button").click()

            open_chat(ann, "A", "ann")
            open_chat(bob, "A", "bob")
            open_chat(cat, "B", "cat")
            expect(ann.locator("#log")).to_contain_text("bob joined (2 here)")

            say(ann, "hello, room A")
            expect(bob.locator("#log p").last).to_have_text("ann: hello, room A")
            expect(ann.locator("#log p").last).to_have_text("ann: hello, room A")
            # cat's page takes its own message after ann's was broadcast: a copy of ann's
            # sent to room B would have reached cat's outbox before it.
            say(cat, "hello, room B")
            expect(cat.locator("#log p").last).to_have_text("cat: hello, room B")
            expect(cat.locator("#log")).not_to_contain_text("hello, room A")
            expect(cat.locator("#log")).not_to_contain_text("bob")
            expect(ann.locator("#log")).not_to_contain_text("room B")

            say(bob, "hi ann")
            expect(ann.locator("#log p").last).to_have_text("bob: hi ann")
            bob.close()
            expect(ann.locator("#log p").last).to_have_text("bob left (1 here)")
            expect(cat.locator("#log")).not_to_contain_text("left")
            ann.screenshot(path=str(screenshot))

            # The server ends ann's connection as a restart would (1012): the page
            # reconnects by itself, rejoins room A, and talks again.
            restart("ann")
            expect(ann.locator("#log p").last).to_have_text("ann joined (1 here)")
            expect(ann.locator("#status")).to_have_text("connected as ann")
            say(ann, "back again")
            expect(ann.locator("#log p").last).to_have_text("ann: back again")
            expect(cat.locator("#log")).not_to_contain_text("back again")
        finally:
            browser.close()


async def test_chat_in_chromium(tmp_path: Path) -> None:
    """Two pages in room A and one in B: messages reach exactly their room, a page that
    closes is announced to the rest of its room, and a page whose connection the server
    ends reconnects by itself (uvicorn on asyncio, hypercorn on trio)."""
    screenshot = tmp_path / "chat.png"
    async with serve(chat.app, lifespan=True) as server:
        base_url = f"http://{server.host}:{server.port}"

        async def close_with_1012(name: str) -> None:
            for connection in chat.hub.members("A"):
                if isinstance(connection, chat.Chat) and connection.name() == name:
                    await connection.close(1012, "service restart")

        def restart(name: str) -> None:  # called from the browser's thread
            anyio.from_thread.run(close_with_1012, name)

        await anyio.to_thread.run_sync(
            talk_in_the_browser, base_url, tmp_path / "profile", screenshot, restart
        )
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    if os.environ.get("WSROOMS_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(screenshot, SCREENSHOT)
