"""``python -m fer_core serve``: one local page to try the model on a photo or a webcam.

Analysts who read the campaign dashboards want to drop in one of their own images and see what the
model sees before they trust a campaign figure. The page posts each photo or camera frame to this
server, which scores it with the same ``FacePipeline`` as ``predict`` and answers with the same JSON
record (``fer_core.report``), the annotated picture and Grad-CAM overlays.

Why the standard library's ``http.server`` and a single hand-written page, not Streamlit or Gradio:
the page needs two endpoints, and a framework would add a large dependency tree (Streamlit pulls in
Tornado, protobuf, altair and more; Gradio a FastAPI stack and front-end bundles) whose front ends
load fonts or scripts we would have to audit for network use. One inlined page works offline by
construction, and the Content-Security-Policy below makes the browser refuse anything but this server.

Privacy: request bodies are read into memory, scored and dropped; nothing is written to disk.
Reach: it listens on 127.0.0.1 unless told otherwise, and then warns.
"""
from __future__ import annotations

import base64
import ipaddress
import json
import secrets
import socket
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from fer_core.decode import IMAGE_SUFFIXES, check_byte_size
from fer_core.errors import ImageError
from fer_core.labels import EMOTION_COLORS, EMOTIONS
from fer_core.report import annotate, image_record, json_document
from fer_core.types import ImageResult

__all__ = ["ScoringService", "make_server", "serve", "is_loopback"]

DISPLAY_MAX_SIDE = 1600  # the annotated picture is sent at most this large: the page shows it smaller
_DRAIN_CHUNK = 1 << 20
_DRAIN_LIMIT = 4 << 30  # an oversized upload is read and dropped up to this, so the browser gets the answer


def is_loopback(host: str) -> bool:
    """True when ``host`` (a name or address) resolves only to loopback addresses (127.0.0.0/8, ::1)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


class ScoringService:
    """The page's one door to the pipeline: bytes in, the ``predict`` record (plus pictures) out.

    One request at a time reaches the pipeline (a lock): the detector's interpreter is not
    thread-safe, and on a laptop a queue of frames would only add latency.
    """

    def __init__(self, pipeline: Any, max_bytes: int) -> None:
        self.pipeline = pipeline
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()

    def refused(self, name: str, error: ImageError) -> dict[str, Any]:
        """The answer for an image refused before scoring (too many bytes): the same record shape."""
        return self._answer(image_record(name, ImageResult(status=error.status, error=str(error)),
                                         getattr(self.pipeline, "scoring_id", None)))

    def score(self, name: str, data: bytes, *, pictures: bool) -> dict[str, Any]:
        """Score one image held in memory. ``pictures``: add the annotated image and Grad-CAM overlays
        (uploads); camera frames go without, the page draws their boxes over the video itself."""
        started = time.perf_counter()
        with self._lock:
            result = self.pipeline.score_images([data])[0]
            answer = self._answer(image_record(name, result, getattr(self.pipeline, "scoring_id", None)))
            if pictures and result.status in ("ok", "no_face"):
                image = self.pipeline.decode([data])[0]
                answer["annotated"] = png_data_url(_fit(annotate(image, result), DISPLAY_MAX_SIDE))
                answer["gradcam"], answer["gradcam_error"] = self._explain(image, result)
        answer["ms"] = round(1000 * (time.perf_counter() - started), 1)
        return answer

    def _explain(self, image: np.ndarray, result: ImageResult) -> tuple[list[str], str | None]:
        if not result.faces:
            return [], None
        from fer_core.gradcam import explain_faces

        try:
            overlays = explain_faces(image, [fr.face for fr in result.faces], self.pipeline.model)
        except Exception as e:  # a model without a spatial layer, a TF failure: the scores still stand
            return [], f"Grad-CAM unavailable for this model: {type(e).__name__}: {e}"
        return [png_data_url(ov) for ov in overlays], None

    @staticmethod
    def _answer(record: dict[str, Any]) -> dict[str, Any]:
        # "json" is the download: the text `python -m fer_core predict --json FILE` prints for this file
        return {"record": record, "json": json_document([record])}

    def page_config(self) -> dict[str, Any]:
        """What the page needs to know: labels, colours, limits and versions (all from their one source)."""
        return {"emotions": list(EMOTIONS), "colours": EMOTION_COLORS, "suffixes": list(IMAGE_SUFFIXES),
                "max_bytes": self.max_bytes, "max_pixels": self.pipeline.max_pixels, **self.pipeline.versions}


def _fit(rgb: np.ndarray, max_side: int) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def png_data_url(rgb: np.ndarray) -> str:
    """An RGB array as a ``data:image/png`` URL (encoded in memory)."""
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _page_template() -> str:
    return resources.files("fer_core").joinpath("static/serve.html").read_text(encoding="utf-8")


def render_page(config: dict[str, Any], nonce: str) -> bytes:
    """The page with its config inlined (``<`` escaped so no value can close the script tag)."""
    blob = json.dumps(config).replace("<", "\\u003c")
    return _page_template().replace("__NONCE__", nonce).replace("__CONFIG__", blob).encode("utf-8")


# Only this server may be reached: no fonts, scripts, images or connections elsewhere (offline by construction).
_CSP = ("default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self' data: blob:; "
        "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'")


class _Handler(BaseHTTPRequestHandler):
    """GET / (the page), POST /api/score?name=FILE[&pictures=0] (raw image bytes in the body)."""

    server_version = "fer_core-serve"
    service: ScoringService
    allowed_hosts: frozenset[str] | None  # Host headers accepted (None: any; set when bound to loopback)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # a line per camera frame would drown the console; errors are printed where they happen

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), "application/json; charset=utf-8")

    def _problem(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _host_ok(self) -> bool:
        # DNS rebinding: a web page elsewhere cannot reach this server under its own host name
        if self.allowed_hosts is None or (self.headers.get("Host") or "").lower() in self.allowed_hosts:
            return True
        self._problem(HTTPStatus.FORBIDDEN, "unexpected Host header; open the page at the address the server printed")
        return False

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if not self._host_ok():
            return
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            nonce = secrets.token_urlsafe(16)
            self._send(HTTPStatus.OK, render_page(self.service.page_config(), nonce), "text/html; charset=utf-8",
                       {"Content-Security-Policy": _CSP.format(nonce=nonce),
                        "Permissions-Policy": "camera=(self), microphone=(), geolocation=()"})
        elif path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        else:
            self._problem(HTTPStatus.NOT_FOUND, f"no page at {path}; the page is at /")

    def do_POST(self) -> None:  # noqa: N802
        if not self._host_ok():
            return
        url = urlsplit(self.path)
        if url.path != "/api/score":
            self._problem(HTTPStatus.NOT_FOUND, f"no endpoint {url.path}; POST images to /api/score")
            return
        # a cross-site form or "simple" fetch cannot send this type without a CORS preflight, which fails here
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/octet-stream":
            self._problem(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the image file as the body, with Content-Type: "
                          "application/octet-stream")
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._problem(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required (send the whole file as the body)")
            return
        query = parse_qs(url.query)
        name = (query.get("name") or ["image"])[0].replace("\\", "/").rsplit("/", 1)[-1][:255] or "image"
        pictures = (query.get("pictures") or ["1"])[0] != "0"
        n_bytes = int(length)
        try:
            try:
                check_byte_size(n_bytes, self.service.max_bytes)
            except ImageError as e:
                self._drain(n_bytes)
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, self.service.refused(name, e))
                return
            data = self.rfile.read(n_bytes)  # in memory only; dropped with this request
            self._json(HTTPStatus.OK, self.service.score(name, data, pictures=pictures))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away (camera stopped, tab closed)
        except Exception as e:  # never a stack trace on the page: a typed line there, the trace here
            traceback.print_exc(file=sys.stderr)
            self._problem(HTTPStatus.INTERNAL_SERVER_ERROR,
                          f"internal error while scoring ({type(e).__name__}); the server console has the details")

    def _drain(self, n_bytes: int) -> None:
        """Read and drop an oversized body (never kept), so the browser reads the answer, not a reset."""
        if n_bytes > _DRAIN_LIMIT:
            self.close_connection = True
            return
        left = n_bytes
        while left > 0:
            chunk = self.rfile.read(min(_DRAIN_CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)


def make_server(service: ScoringService, host: str, port: int) -> ThreadingHTTPServer:
    """Bind (raises OSError on a busy port) and return the server; ``serve_forever`` runs it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_cls = type("_Server", (ThreadingHTTPServer,), {"address_family": family, "daemon_threads": True})
    handler = type("Handler", (_Handler,), {"service": service, "allowed_hosts": None})
    server = server_cls((host, port), handler)
    if is_loopback(host):
        bound = server.server_address[1]
        names = {"127.0.0.1", "localhost", "[::1]", host if ":" not in host else f"[{host}]"}
        handler.allowed_hosts = frozenset(f"{n}:{bound}".lower() for n in names)
    return server


def serve(cfg: Any, *, host: str = "127.0.0.1", port: int = 8501) -> int:
    """Bind first (a busy port fails before any model loads), load the pipeline, print the URL, serve."""
    from fer_core.pipeline import FacePipeline

    if not is_loopback(host):
        print(f"warning: listening on {host}, not only on this machine: anyone who can reach port {port} can "
              "upload images to this page, which has no login. Camera access needs the page opened as "
              "http://localhost or over https, so the webcam works only on this machine.", file=sys.stderr)
    service = ScoringService(None, cfg.max_bytes)  # its pipeline is loaded once the port is ours
    try:
        server = make_server(service, host, port)
    except OSError as e:
        print(f"error: cannot listen on {host}:{port}: {e.strerror or e}; pick another --port", file=sys.stderr)
        return 2
    print("loading the face detector and the emotion model...", file=sys.stderr, flush=True)
    service.pipeline = FacePipeline.from_config(cfg)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving on http://{shown}:{server.server_address[1]}/ (Ctrl+C to stop); images stay in memory, "
          "nothing is stored", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
