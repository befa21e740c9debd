"""The local page (``python -m fer_core serve``) as a person uses it: headless Chromium driven by Playwright.

The server runs as a real process (the CLI, on the real FacePipeline), with HOME, TMPDIR and the weights
cache inside a temp folder and a Python audit hook logging every file it opens for writing. The browser
uploads skimage's astronaut, a truncated copy and two files over the limits, and watches Chromium's fake
camera play a clip made from the astronaut. The JSON the page downloads is compared with what
``python -m fer_core predict --json`` prints for the same files.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from _browser import require_playwright
from _images import astronaut
from fer_core.decode import check_byte_size, decode_image
from fer_core.errors import ImageTooLargeError
from fer_core.labels import EMOTION_COLORS, EMOTIONS
from fer_core.report import hex_to_rgb, json_document
from fer_core.serve import is_loopback, render_page

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "artifacts" / "screenshots"
MAX_BYTES, MAX_PIXELS = 200_000, 1_000_000  # small limits, so that small files can cross them
LABEL = re.compile(r"^1 (%s) [01]\.\d\d$" % "|".join(EMOTIONS))
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]

# Runs the CLI with an audit hook that logs every path Python opens for writing (and creates, renames, copies).
AUDITED_CLI = r"""
import os, sys
_log = open(os.environ["WRITE_AUDIT_LOG"], "a", buffering=1)
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_TARGET_IS_SECOND = ("os.rename", "os.replace", "os.link", "os.symlink", "shutil.copyfile", "shutil.move")
def _hook(event, args):
    try:
        if event == "open" and not isinstance(args[0], (int, type(None))) and (args[2] or 0) & _WRITE:
            _log.write(os.path.abspath(os.fsdecode(args[0])) + "\n")
        elif event in _TARGET_IS_SECOND or event == "os.mkdir":
            _log.write(os.path.abspath(os.fsdecode(args[1] if event in _TARGET_IS_SECOND else args[0])) + "\n")
    except Exception:
        pass
sys.addaudithook(_hook)
from fer_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


# ---------------------------------------------------------------- without a server


def test_only_loopback_addresses_count_as_local():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("no-such-host.invalid")


def test_page_config_cannot_close_its_script_tag():
    html = render_page({"name": "</script><script>alert(1)</script>"}, "n0nce").decode()
    assert "</script><script>alert(1)" not in html
    assert html.count('nonce="n0nce"') == 2 and "__CONFIG__" not in html and "__NONCE__" not in html


def test_byte_limit_is_a_typed_too_large_error():
    check_byte_size(MAX_BYTES, MAX_BYTES)
    with pytest.raises(ImageTooLargeError, match="200,001 bytes, more than max_bytes=200,000") as err:
        check_byte_size(MAX_BYTES + 1, MAX_BYTES)
    assert err.value.status == "too_large"


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "fer_core", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_busy_port_fails_before_loading_models():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = _cli("serve", "--port", str(taken.getsockname()[1]))
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "cannot listen on 127.0.0.1" in err and "pick another --port" in err
    assert "loading" not in err


def test_another_interface_needs_the_flag_and_warns():
    proc = _cli("serve", "--host", "0.0.0.0", "--port", "0")
    try:
        line = proc.stderr.readline()  # the warning comes first, before any model loads
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert line.startswith("warning: listening on 0.0.0.0") and "no login" in line


# ---------------------------------------------------------------- the server and the browser


@dataclass
class Server:
    base: str
    root: Path
    audit_log: Path
    writes_before_ready: int
    proc: subprocess.Popen
    stderr: Path
    files: dict[str, Path] = field(default_factory=dict)

    def writes(self) -> list[str]:
        return self.audit_log.read_text().splitlines()


def _y4m_clip(path: Path, frames: int = 24, width: int = 640, height: int = 480) -> Path:
    """A clip for Chromium's fake camera: the astronaut sliding left to right over grey (4:2:0 YUV)."""
    import cv2

    face = cv2.resize(astronaut(), (360, 360), interpolation=cv2.INTER_AREA)
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F6:1 Ip A1:1 C420jpeg\n".encode())
        for k in range(frames):
            canvas = np.full((height, width, 3), 90, np.uint8)
            x = round(k * (width - 360) / (frames - 1))
            canvas[60:420, x:x + 360] = face
            f.write(b"FRAME\n" + cv2.cvtColor(canvas, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    photo = folder / "astronaut.jpg"
    Image.fromarray(astronaut()).save(photo, quality=92)
    data = photo.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    noise = np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "heavy.jpg", quality=98)  # a real image, over MAX_BYTES
    Image.new("RGB", (1500, 1000), (120, 160, 200)).save(folder / "wide.png")  # a few KB, over MAX_PIXELS
    assert (folder / "heavy.jpg").stat().st_size > MAX_BYTES > (folder / "wide.png").stat().st_size
    (folder / "limits.yaml").write_text(f"max_bytes: {MAX_BYTES}\nmax_pixels: {MAX_PIXELS}\n")
    _y4m_clip(folder / "camera.y4m")
    return {p.name: p for p in folder.iterdir()}


@pytest.fixture(scope="module")
def server(tmp_path_factory, files) -> Server:
    from fer_core.weights import weights_home

    root = tmp_path_factory.mktemp("serve")
    home, tmp, cwd, cache = (root / "home", root / "tmp", root / "cwd", root / "fer_core_home")
    for d in (home, tmp, cwd):
        d.mkdir()
    if weights_home().is_dir():  # the verified weights (and converted detector), so nothing is fetched
        shutil.copytree(weights_home(), cache)
    audit_log, stderr = root / "writes.log", root / "stderr.log"
    audit_log.touch()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(home), "TMPDIR": str(tmp), "XDG_CACHE_HOME": str(home),
           "FER_CORE_HOME": str(cache), "WRITE_AUDIT_LOG": str(audit_log), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONDONTWRITEBYTECODE": "1"}  # Python's own bytecode cache is not ours to test
    with stderr.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", AUDITED_CLI, "serve", "--port", "0",
                                 "--config", str(files["limits.yaml"])],
                                cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    deadline, base = time.monotonic() + 300, None
    while base is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            match = re.search(r"serving on (http://127\.0\.0\.1:\d+/)", lines.get(timeout=1))
            base = match.group(1) if match else None
        except queue.Empty:
            pass
    if base is None:
        proc.kill()
        pytest.fail(f"the server did not start: {stderr.read_text()[-3000:]}")
    server = Server(base, root, audit_log, len(audit_log.read_text().splitlines()), proc, stderr, files)
    yield server
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cli_records(files) -> tuple[list[dict], str]:
    """What ``predict --json`` prints for the astronaut and the over-limit file, with the same limits."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-m", "fer_core", "predict", "--json", "--config", "limits.yaml",
                           "astronaut.jpg", "heavy.jpg"], cwd=files["astronaut.jpg"].parent, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr  # heavy.jpg is too_large
    return json.loads(proc.stdout), proc.stdout


@pytest.fixture(scope="module")
def browser(server, files):
    binary = require_playwright()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=binary, args=[
            *BROWSER_FLAGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={files['camera.y4m']}"])
        context = chromium.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        requests: list[str] = []
        context.on("request", lambda r: requests.append(r.url))
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        response = page.goto(server.base)
        yield SimpleNamespace(page=page, requests=requests, errors=errors, response=response)
        context.close()
        chromium.close()


def _wait(page, js: str, timeout_ms: int = 120_000):
    """page.wait_for_function with a function (the page's CSP forbids evaluating strings)."""
    return page.wait_for_function(js, timeout=timeout_ms, polling=100)


def _responsible_use_wording() -> str:
    """The README's first responsible-use bullet, first two sentences, as plain text."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Responsible use and privacy", 1)[1]
    bullet = section.split("\n- ", 2)[1]
    text = " ".join(bullet.replace("**", "").split())
    return " ".join(re.split(r"(?<=\.) ", text)[:2])


@pytest.mark.slow
@pytest.mark.browser
def test_page_says_it_is_local_and_frames_the_output(browser):
    page = browser.page
    assert "runs locally, stores nothing" in page.inner_text("#privacy").lower()
    assert "never written to disk" in page.inner_text("#privacy")
    wording = _responsible_use_wording()
    assert wording.startswith("The output estimates a facial expression from pixels.")
    assert wording in " ".join(page.inner_text("#framing").split())
    csp = browser.response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert page.inner_text("#model").startswith("fer-vgg@")


def _pixels(page, selector: str, points: list[tuple[int, int]]) -> list[list[int]]:
    """RGB at (x, y) of an <img>, read back through a canvas at its natural size."""
    return page.eval_on_selector(selector, """(img, points) => {
        const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        return points.map(([x, y]) => Array.from(g.getImageData(x, y, 1, 1).data.slice(0, 3)));
    }""", points)


@pytest.mark.slow
@pytest.mark.browser
def test_upload_the_astronaut_shows_boxes_bars_gradcam_and_the_cli_json(browser, files, cli_records):
    page, (cli, cli_text) = browser.page, cli_records
    assert cli_text == json_document(cli)  # the CLI prints exactly this function's text
    expected = cli[0]
    face = expected["faces"][0]
    page.set_input_files("#files", [files["astronaut.jpg"]])
    _wait(page, "() => document.querySelector('article.result[data-status=ok] img.gradcam')?.complete")
    card = "article.result[data-status=ok]"
    assert "ok · 512×512 · 1 face" in page.inner_text(f"{card} .result-head")

    # the drawn picture: the photo itself, with the face's box in its emotion's colour
    assert page.eval_on_selector(f"{card} img.annotated", "i => [i.naturalWidth, i.naturalHeight]") == [512, 512]
    x, y, w, h = (round(v) for v in face["box"])
    box_colour = list(hex_to_rgb(EMOTION_COLORS[face["emotion"]]))
    bottom, left, corner = _pixels(page, f"{card} img.annotated", [(x + w // 2, y + h), (x, y + h // 2), (10, 500)])
    assert bottom == box_colour and left == box_colour
    assert corner == decode_image(files["astronaut.jpg"].read_bytes())[500, 10].tolist()

    # per face: the numbers of the JSON, the 7 bars, the Grad-CAM overlay
    faces = page.query_selector_all(f"{card} .face")
    assert len(faces) == 1 and faces[0].get_attribute("data-emotion") == face["emotion"]
    title = faces[0].inner_text()
    assert f"{face['emotion']} {face['probabilities'][face['emotion']]:.2f}" in title
    assert f"sentiment {face['sentiment']}" in title and f"valence {face['valence']:+.2f}" in title
    bars = [t.strip() for t in page.eval_on_selector_all(f"{card} .bars .v", "els => els.map(e => e.textContent)")]
    assert bars == [f"{100 * face['probabilities'][e]:.1f}%" for e in EMOTIONS]
    assert page.eval_on_selector(f"{card} img.gradcam", "i => i.naturalWidth") == 112

    # the download is what `predict --json astronaut.jpg` prints
    with page.expect_download() as download:
        page.click(f"{card} a.download")
    assert download.value.suggested_filename == "astronaut.json"
    assert Path(download.value.path()).read_text() == json_document([expected])


@pytest.mark.slow
@pytest.mark.browser
def test_corrupt_and_over_limit_files_show_typed_errors(browser, files, cli_records):
    page = browser.page
    page.set_input_files("#files", [files["truncated.jpg"], files["heavy.jpg"], files["wide.png"]])
    _wait(page, "() => document.querySelectorAll('article.result').length >= 4 && "
                "!document.querySelector('article.result[data-status=pending]')")
    cards = {c.query_selector("h3").inner_text(): c for c in page.query_selector_all("article.result")}

    truncated = cards["truncated.jpg"]
    assert truncated.get_attribute("data-status") == "decode_error"
    assert re.match(r"decode_error: JPEG image is truncated .*Re-download or re-export the file",
                    truncated.query_selector(".error").inner_text())

    heavy = cards["heavy.jpg"]
    assert heavy.get_attribute("data-status") == "too_large"
    size = files["heavy.jpg"].stat().st_size
    assert heavy.query_selector(".error").inner_text() == (
        f"too_large: file holds {size:,} bytes, more than max_bytes={MAX_BYTES:,}; "
        "recompress or downscale it before scoring, or raise max_bytes")
    with page.expect_download() as download:
        heavy.query_selector("a.download").click()
    assert Path(download.value.path()).read_text() == json_document([cli_records[0][1]])  # the CLI's record

    wide = cards["wide.png"]
    assert wide.get_attribute("data-status") == "too_large"
    assert f"more than max_pixels={MAX_PIXELS:,}" in wide.query_selector(".error").inner_text()
    for card in (truncated, heavy, wide):
        assert card.query_selector("img") is None and card.query_selector(".face") is None
    assert "Traceback" not in page.inner_text("body")


@pytest.mark.slow
@pytest.mark.browser
def test_webcam_draws_faces_and_labels_that_follow_the_video(browser, server):
    page = browser.page
    page.click("#cam-start")
    seen: list[tuple[int, str, str, str, str]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len({s[1] for s in seen}) < 4:
        state = page.evaluate("""() => ({
            frames: Number(document.getElementById('cam-status').dataset.frames || 0),
            boxes: Array.from(document.querySelectorAll('#overlay .box')).map(b => ({
                left: b.style.left, emotion: b.dataset.emotion, colour: getComputedStyle(b).borderTopColor,
                label: b.querySelector('.label').textContent}))})""")
        for box in state["boxes"]:
            seen.append((state["frames"], box["left"], box["emotion"], box["colour"], box["label"]))
        time.sleep(0.15)
    assert len({s[1] for s in seen}) >= 4, f"the box did not follow the moving face: {seen[-10:]}"
    for _, _, emotion, colour, label in seen:
        assert LABEL.match(label) and label.split()[1] == emotion, label
        assert colour == "rgb(%d, %d, %d)" % hex_to_rgb(EMOTION_COLORS[emotion])
    frames = int(page.get_attribute("#cam-status", "data-frames"))
    assert frames >= 4 and "frames/s" in page.inner_text("#cam-status")
    columns = page.eval_on_selector_all("#timeline g.frame", "gs => gs.map(g => g.dataset.emotion || null)")
    assert len(columns) >= min(frames, 45) - 1 and sum(c is not None for c in columns) >= 3

    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / "serve.png"), full_page=False)
    page.click("#cam-stop")
    assert page.inner_text("#cam-status").startswith("Camera off")
    assert page.query_selector_all("#overlay .box") == []


@pytest.mark.slow
def test_http_api_refuses_foreign_hosts_wrong_types_and_oversized_bodies(server, files):
    def post(body: bytes, headers: dict[str, str], path: str = "/api/score?name=x.jpg") -> tuple[int, dict]:
        req = urllib.request.Request(server.base.rstrip("/") + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    octet = {"Content-Type": "application/octet-stream"}
    assert post(b"x", {**octet, "Host": "attacker.example:80"})[0] == 403  # DNS rebinding
    assert post(b"x", {"Content-Type": "text/plain"})[0] == 415  # a cross-site "simple" request
    assert post(b"x", octet, "/elsewhere")[0] == 404
    status, body = post(files["heavy.jpg"].read_bytes(), octet)
    assert status == 413 and body["record"]["status"] == "too_large" and body["record"]["faces"] == []
    status, body = post(b"", octet)
    assert status == 200 and body["record"]["status"] == "empty"


@pytest.mark.slow
@pytest.mark.browser
def test_the_page_fetched_nothing_but_the_local_server(browser, server):
    assert browser.requests, "no request was recorded"
    foreign = [u for u in browser.requests
               if urlsplit(u).scheme not in ("data", "blob") and not u.startswith(server.base)]
    assert foreign == []
    assert any("/api/score?name=frame.jpg" in u for u in browser.requests)
    # the one console error expected: Chromium's own line for the 413 answer to heavy.jpg
    unexpected = [e for e in browser.errors if "status of 413" not in e]
    assert unexpected == []


@pytest.mark.slow
@pytest.mark.browser
def test_nothing_is_written_outside_the_temp_folder_and_nothing_while_serving(server, browser):
    writes = server.writes()
    outside = [p for p in writes if not p.startswith(str(server.root)) and not p.startswith("/dev/")]
    assert outside == [], outside
    assert writes[server.writes_before_ready:] == [], "files were written while serving photos and frames"
    assert "Traceback" not in server.stderr.read_text()
