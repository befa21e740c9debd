"""Headless Chromium driven over the Chrome DevTools Protocol (websocket-client).

Why CDP directly: it needs only Debian's ``chromium`` and one small pip package, never
downloads a browser, and gives console errors, JS evaluation and screenshots.
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--remote-allow-origins=*",
         "--window-size=1280,900")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or None (tests then skip with the install command)."""
    env = os.environ.get("CHROMIUM_BIN")
    if env and Path(env).is_file():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _require(module: str, pip_name: str) -> str:
    """The Chromium binary, when it and ``module`` are installed; else skip the calling test (fail under
    CI, which installs both)."""
    import importlib

    import pytest

    missing = []
    binary = find_chromium()
    if binary is None:
        missing.append("chromium (apt-get install -y chromium)")
    try:
        importlib.import_module(module)
    except ImportError:
        missing.append(f"{pip_name} (pip install -c requirements.lock {pip_name})")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def require_browser() -> None:
    """Chromium and websocket-client, for the DevTools driver below."""
    _require("websocket", "websocket-client")


def require_playwright() -> str:
    """Chromium and Playwright's Python package, which drives that system Chromium (executable_path: its
    own browser download is not reachable here); returns the binary."""
    return _require("playwright.sync_api", "playwright")


class BrowserError(RuntimeError):
    pass


class Page:
    """One tab: navigate, evaluate JS, collect console errors, take screenshots."""

    def __init__(self, ws_url: str) -> None:
        import websocket  # websocket-client

        self._ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True,
                                               enable_multithread=False)
        self._ids = itertools.count(1)
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def send(self, method: str, params: dict | None = None, timeout: float = 60.0) -> dict:
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self._ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
        raise BrowserError(f"{method}: no answer in {timeout}s")

    def _wait_event(self, name: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        self._ws.settimeout(timeout)
        while time.monotonic() < deadline:
            msg = json.loads(self._ws.recv())
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == name:
                    return msg
        raise BrowserError(f"no {name} within {timeout}s")

    def goto(self, url: str, timeout: float = 60.0) -> None:
        self.events.clear()
        self.send("Page.navigate", {"url": url})
        self._wait_event("Page.loadEventFired", timeout)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"JS failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.1)

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads (e.g. a missing script or image)."""
        self.evaluate("1")  # flush pending events
        out = []
        for ev in self.events:
            method, params = ev["method"], ev.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                out.append(f"{entry.get('text')} {entry.get('url', '')}")
        return out

    def screenshot(self, path: Path, full_page: bool = True, width: int = 1280) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.send("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": width, "height": min(size["height"], 6000), "scale": 1})
        data = self.send("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self._ws.close()
        except Exception:
            pass


class Chromium:
    """A headless Chromium with a fresh profile; use as a context manager."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or find_chromium()
        if not self.binary:
            raise BrowserError("no chromium binary; apt-get install -y chromium")
        self.profile = tempfile.mkdtemp(prefix="dash-chromium-")
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    def __enter__(self) -> "Chromium":
        args = [self.binary, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "about:blank"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if port_file.is_file() and port_file.read_text().strip():
                self.port = int(port_file.read_text().split()[0])
                return self
            if self.proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self.proc.returncode} before opening DevTools")
            time.sleep(0.1)
        self.__exit__(None, None, None)
        raise BrowserError("chromium did not open its DevTools port within 60s")

    def new_page(self) -> Page:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(req, timeout=30) as resp:
            target = json.loads(resp.read())
        return Page(target["webSocketDebuggerUrl"])

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


# JS used by the tests: what a person would check on a page.
CHARTS_DRAWN = """(() => {
  const charts = Array.from(document.querySelectorAll('div.chart'));
  return charts.every(c => c.querySelector('svg.main-svg'));
})()"""
PAGE_REPORT = """(() => {
  const charts = Array.from(document.querySelectorAll('div.chart'));
  const imgs = Array.from(document.querySelectorAll('img'));
  return {
    title: document.title,
    xss: window.__xss === undefined ? null : window.__xss,
    charts: charts.map(c => ({id: c.id, svg: !!c.querySelector('svg.main-svg'),
                              marks: c.querySelectorAll('.point, path.point, .bars path, g.trace').length})),
    images: imgs.map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0})),
    empties: Array.from(document.querySelectorAll('.empty')).map(e => e.textContent.trim()),
    scripts: Array.from(document.querySelectorAll('script')).map(s => s.getAttribute('src') || s.type),
    text: document.body.innerText,
  };
})()"""
