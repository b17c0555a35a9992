"""The report page of a real run, loaded in a real headless Chromium over the DevTools protocol.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it when absent); without
it the test is skipped, saying so. The page must load without a console error and with
every picture decoded; a screenshot is saved beside it (``report.png``). At 1600 x 1000
the learning curves and the confusion matrix are both on the first screen; at 600 px
wide the dashboard is one column.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.settings import Settings
from harness.training.fit import run

MakeSettings = Callable[..., Settings]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class DevTools:
    """A minimal Chrome DevTools protocol client over one page's websocket."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.socket = connect(url, max_size=None, open_timeout=30)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(event.get("method") == method for event in self.events):
            self.events.append(json.loads(self.socket.recv(timeout=max(deadline - time.monotonic(), 0.1))))


def start_chromium(profile: Path) -> tuple[subprocess.Popen[bytes], str]:
    assert CHROMIUM is not None
    browser = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # CI containers run as root
            "--disable-gpu",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--window-size=1280,2000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while not (port_file.is_file() and port_file.read_text().strip()):
        if time.monotonic() > deadline or browser.poll() is not None:
            browser.kill()
            pytest.fail(f"{CHROMIUM} did not open its DevTools port")
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    # No proxy for loopback: urllib's global opener keeps whatever proxy an earlier test set.
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(f"http://127.0.0.1:{port}/json/list", timeout=30) as answer:
        pages = [target for target in json.load(answer) if target["type"] == "page"]
    return browser, pages[0]["webSocketDebuggerUrl"]


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium executable (apt-get install chromium; .ci/run does)"
)
def test_the_page_of_every_run_loads_in_chromium_with_every_picture(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    pytest.importorskip("websockets", reason="the DevTools client needs websockets (the dev extra)")
    result = run(
        make_settings(
            "dataset_stats",
            "model_info",
            "confusion_matrix",
            "samples",
            "plots",
            "sampler_tracking",
            "report",
            "trainer.max_epochs=2",
        )
    )
    page = result.run_dir / "report.html"
    assert page.is_file(), "written by the run itself, no other command"
    assert result.summary.artifacts["report"] == "report.html"

    browser, url = start_chromium(tmp_path / "profile")
    try:
        tools = DevTools(url)
        for domain in ("Page", "Runtime", "Log"):
            tools.call(f"{domain}.enable")
        tools.call("Page.navigate", url=page.resolve().as_uri())
        tools.wait_for("Page.loadEventFired")
        images = tools.call(
            "Runtime.evaluate",
            expression="JSON.stringify([...document.images]"
            ".map(i => [i.getAttribute('src'), i.naturalWidth]))",
            returnByValue=True,
        )["result"]["value"]
        text = tools.call("Runtime.evaluate", expression="document.body.innerText", returnByValue=True)
        wide = boxes(tools, 1600, 1000)
        shot = tools.call("Page.captureScreenshot", format="png")
        narrow = boxes(tools, 600, 1000)
        tools.socket.close()
    finally:
        browser.kill()
        browser.wait()

    errors = [
        event["params"]
        for event in tools.events
        if event.get("method") == "Runtime.exceptionThrown"
        or (event.get("method") == "Runtime.consoleAPICalled" and event["params"]["type"] == "error")
        or (event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] == "error")
    ]
    assert errors == []
    decoded = json.loads(images)
    sources = {source for source, _ in decoded}
    assert {"plots/losses.png", "confusion_matrix/latest.png", "samples/latest.png"} <= sources
    assert "sampler_tracking/draws.png" in sources
    assert [source for source, width in decoded if width == 0] == [], "every picture decoded"
    body = text["result"]["value"]
    assert "status: completed" in body and "Data set" in body and "Model" in body and "Settings" in body
    screenshot = result.run_dir / "report.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    assert screenshot.stat().st_size > 10_000

    curves, matrix = wide["plots/losses.png"], wide["confusion_matrix/latest.png"]
    assert curves["bottom"] <= 1000 and matrix["bottom"] <= 1000, f"first screen at 1600 x 1000: {wide}"
    assert matrix["left"] > 300 and curves["width"] > 200, "side by side, using the width"
    assert wide["samples/latest.png"]["top"] < 1000, "the samples start on the first screen"
    lefts = {round(box["left"]) for name, box in narrow.items() if name.startswith("panel:")}
    assert len(lefts) == 1, f"one column at 600 px: {narrow}"
    assert narrow["plots/losses.png"]["right"] <= 600, "nothing wider than the window"


def boxes(tools: DevTools, width: int, height: int) -> dict[str, dict[str, float]]:
    """At a `width` x `height` window: the box of each dashboard picture and of each panel (``panel:<i>``)."""
    tools.call(
        "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
    )
    script = """JSON.stringify(Object.fromEntries([
        ...[...document.querySelectorAll('.dashboard img')].map(i => [i.getAttribute('src'), i]),
        ...[...document.querySelectorAll('.dashboard > *')].map((e, n) => ['panel:' + n, e]),
    ].map(([name, element]) => {
        const box = element.getBoundingClientRect();
        return [name, {left: box.left, right: box.right, top: box.top + window.scrollY,
                       bottom: box.bottom + window.scrollY, width: box.width}];
    })))"""
    value = tools.call("Runtime.evaluate", expression=script, returnByValue=True)["result"]["value"]
    found: dict[str, dict[str, float]] = json.loads(value)
    return found
