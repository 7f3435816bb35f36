"""The explorer's web app (Starlette, served by uvicorn): one page, its static files, and a JSON API.

    GET  /                  the page (static/index.html)
    GET  /static/NAME       explorer.css and the page's scripts (explorer.js, update.js, model_view.js,
                            head_view.js, neuron_view.js, save.js, start.js): the names in STATIC only,
                            from this package
    GET  /api/run           the run: task, view, checkpoints, a first input from its own data
    POST /api/attention     {checkpoint, prompt | image[, words]} -> every layer's weights and the labels
    POST /api/neuron        {checkpoint, prompt | image[, words], layer, head, query} -> one query, step by step
    POST /api/generate      {checkpoint, prompt} -> the prompt and one more token (text models that write)

An image travels as a data: URL (or bare base64) inside the JSON, so no form parsing is needed; the
body of every request is refused past `max_bytes` before it is read in full. Whatever goes wrong
with one request is one line in {"error": ...} (400 for the input, 404, 413, 500 for a bug), and the
server goes on serving. The model runs in a worker thread (Explorer's lock makes requests take turns),
so a long request never blocks the event loop.
"""

import base64
import binascii
import json
from importlib.resources import files

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from multitx.data.images.images import EncodedImage
from multitx.errors import UserError
from multitx.explore.analysis import Explorer, Source

LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")  # the names of this machine a browser uses
STATIC = {"index.html": "text/html; charset=utf-8", "explorer.css": "text/css; charset=utf-8",
          "explorer.js": "text/javascript; charset=utf-8",
          "update.js": "text/javascript; charset=utf-8",
          "model_view.js": "text/javascript; charset=utf-8",
          "head_view.js": "text/javascript; charset=utf-8",
          "neuron_view.js": "text/javascript; charset=utf-8",
          "save.js": "text/javascript; charset=utf-8",
          "start.js": "text/javascript; charset=utf-8"}  # every file the explorer serves, by name


class Refused(Exception):
    """A request that cannot be answered: an HTTP status and one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def static_file(name: str) -> Response:
    if name not in STATIC:  # nothing else, however the path is spelled: no way out of the package
        raise Refused(404, f"no file {name!r} here")
    body = (files("multitx.explore") / "static" / name).read_bytes()
    return Response(body, media_type=STATIC[name], headers={"Cache-Control": "no-store"})


async def body_of(request: Request, max_bytes: int) -> dict:
    """The request's JSON object, read no further than max_bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise Refused(413, f"the request is {int(declared) / 1e6:.1f} MB, more than the {max_bytes / 1e6:.1f} MB "
                           f"allowed (max_upload_mb=); use a smaller image")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise Refused(413, f"the request is more than the {max_bytes / 1e6:.1f} MB allowed (max_upload_mb=); "
                               f"use a smaller image")
        chunks.append(chunk)
    try:
        found = json.loads(b"".join(chunks) or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "the request is not JSON") from None
    if not isinstance(found, dict):
        raise Refused(400, "the request is not a JSON object")
    return found


def source_of(body: dict) -> Source:
    """A prompt or an image from a request; words (captioner) if given."""
    prompt, image, words = body.get("prompt"), body.get("image"), body.get("words")
    if prompt is not None and not isinstance(prompt, str):
        raise Refused(400, "prompt must be text")
    if words is not None and (not isinstance(words, int) or isinstance(words, bool) or words < 1):
        raise Refused(400, "words must be a whole number, at least 1")
    if image is None:
        return Source(prompt=prompt if prompt is not None else None, words=words)
    if not isinstance(image, str):
        raise Refused(400, "image must be a data: URL or base64 text")
    name = str(body.get("name") or "image")[:120]
    try:
        data = base64.b64decode(image.split(",", 1)[1] if image.startswith("data:") else image, validate=True)
    except (binascii.Error, ValueError, IndexError):
        raise Refused(400, f"the uploaded file {name} is not base64 data; upload an image file") from None
    return Source(image=EncodedImage(f"the uploaded file {name}", data), words=words)


def whole(body: dict, key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Refused(400, f"{key} must be a whole number")
    return value


def build_app(explorer: Explorer, *, max_bytes: int = 8_000_000, hosts: tuple[str, ...] = LOOPBACK) -> Starlette:
    """The app serving `explorer`'s run; a request body may hold at most max_bytes. `hosts`: the names a
    request may address it by (its Host header), so that another web site cannot reach it through a DNS name
    it points at 127.0.0.1 (DNS rebinding); ("*",) for any, when it listens beyond this machine."""

    def checkpoint_of(body: dict) -> str:
        name = body.get("checkpoint") or explorer.default
        if not isinstance(name, str):
            raise Refused(400, "checkpoint must be a name, e.g. step_0000400")
        return name

    def answer(work):
        """An endpoint computing `work(body)` in a worker thread; every failure one line."""
        async def endpoint(request: Request) -> Response:
            try:
                body = await body_of(request, max_bytes)
                return JSONResponse(await run_in_threadpool(work, body))
            except Refused as err:
                return JSONResponse({"error": str(err)}, status_code=err.status)
            except UserError as err:
                return JSONResponse({"error": str(err)}, status_code=400)
            except Exception as err:  # a bug: said in one line, and the server serves on
                return JSONResponse({"error": f"internal error: {type(err).__name__}: {err}"[:300]},
                                    status_code=500)
        return endpoint

    async def page(request: Request) -> Response:
        return static_file("index.html")

    async def static(request: Request) -> Response:
        try:
            return static_file(request.path_params["name"])
        except Refused as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)

    async def run(request: Request) -> Response:
        return JSONResponse({**explorer.about(), "max_upload_bytes": max_bytes})

    async def not_found(request: Request, exc) -> Response:
        return JSONResponse({"error": f"no page {request.url.path!r} here"}, status_code=404)

    async def not_allowed(request: Request, exc) -> Response:
        return JSONResponse({"error": f"{request.method} is not how {request.url.path} is asked"}, status_code=405)

    routes = [
        Route("/", page),
        Route("/static/{name}", static),
        Route("/api/run", run),
        Route("/api/attention", answer(lambda b: explorer.attention(checkpoint_of(b), source_of(b))),
              methods=["POST"]),
        Route("/api/neuron", answer(lambda b: explorer.neuron(checkpoint_of(b), source_of(b), whole(b, "layer"),
                                                              whole(b, "head"), whole(b, "query"))), methods=["POST"]),
        Route("/api/generate", answer(lambda b: explorer.generate(checkpoint_of(b), source_of(b).prompt or "")),
              methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed},
                     middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))])
