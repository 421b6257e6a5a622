"""The FastAPI app of ``maskahand serve``.

Routes: ``GET /`` the page; ``GET /api/health``; ``GET /api/examples`` (names of the shared examples);
``POST /api/ground`` (multipart: ``video`` + ``image`` files, or ``example`` = a name from
:data:`EXAMPLES`) -> JSON with the overlay video and heatmap PNG (base64), the top actions and the time, or
``{"error": ...}`` with 400 (bad input: the CLI's typed errors), 401 (token), 411/413 (size), 503 (busy).
Nothing from a request becomes a path: uploads are stored under fixed names, examples are looked up in a
fixed table.
"""

from __future__ import annotations

import base64
import hmac
import logging
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import (
    FastAPI,
    Request,  # at module level: FastAPI resolves the handler's annotation by name here
)
from fastapi.responses import HTMLResponse, JSONResponse

from ..video.errors import VideoError
from .engine import BusyError, GroundingEngine
from .uploads import UploadError, check_image, check_video, display_name

log = logging.getLogger(__name__)
TOKEN_HEADER = "x-maskahand-token"
# name -> (video, image) under serve.examples_dir; the only files a request can name
EXAMPLES = {
    "espresso": ("videos/opra_espresso_vp9.mp4", "images/opra_espresso_target.jpg"),
}
CHUNK = 1 << 20


def available_examples(root: str | None) -> dict[str, tuple[Path, Path]]:
    """The examples whose two files exist under ``root`` (none without a root)."""
    if not root:
        return {}
    base = Path(root)
    pairs = {name: (base / v, base / i) for name, (v, i) in EXAMPLES.items()}
    return {name: pair for name, pair in pairs.items() if pair[0].is_file() and pair[1].is_file()}


def _json(status: int, body: dict[str, Any]):

    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


class BodyLimit:
    """ASGI wrapper: refuses a request body over ``limit`` bytes (413) or of unknown length (411) before
    anything reads it (h11 holds a client to its Content-Length)."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            status, message = 0, ""
            if length is None or not length.isdigit():
                status, message = 411, "the request must state its Content-Length"
            elif int(length) > self.limit:
                status = 413
                message = f"upload of {int(length) / 2**20:.1f} MiB; this server takes at most {self.limit / 2**20:g} MiB"
            if status:
                await _json(status, {"error": message})(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(engine: GroundingEngine, token: str | None = None, model_name: str = ""):
    """The ASGI application (FastAPI inside the body-size guard)."""
    # deferred: starlette at import
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException

    cfg = engine.recipe.serve
    examples = available_examples(cfg.examples_dir)
    page = resources.files("maskahand.serve").joinpath("page.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_app):
        yield
        engine.close()  # here, not only after uvicorn.run: uvicorn re-raises SIGTERM/SIGINT once it has stopped

    app = FastAPI(title="maskahand serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/api/health")
    async def health() -> dict:
        return {"ok": True, "model": model_name, "queued": engine.waiting, "token": token is not None}

    @app.get("/api/examples")
    async def list_examples() -> dict:
        return {"examples": sorted(examples)}

    async def store(upload: Any, path: Path, what: str) -> str:
        if not isinstance(upload, UploadFile):
            raise UploadError(f"no {what} file in the request")
        with open(path, "wb") as f:  # a fixed name in the request's private folder
            while chunk := await upload.read(CHUNK):
                f.write(chunk)
        return display_name(upload.filename, f"the {what}")

    @app.post("/api/ground")
    async def ground(request: Request):
        if token is not None and not hmac.compare_digest(
            request.headers.get(TOKEN_HEADER, "").encode(), token.encode()
        ):
            return _json(401, {"error": "this server needs its token (the Token field)"})
        try:
            with engine.admit(), engine.workdir() as work:
                async with request.form(max_files=2, max_fields=4) as form:
                    example = form.get("example")
                    if example:
                        if not isinstance(example, str) or example not in examples:
                            raise UploadError(
                                f"unknown example; this server has: {', '.join(sorted(examples)) or 'none'}"
                            )
                        video, image = examples[example]
                        video_name, image_name = video.name, image.name
                    else:
                        video, image = work / "video", work / "image"
                        video_name = await store(form.get("video"), video, "video")
                        image_name = await store(form.get("image"), image, "image")
                try:
                    await run_in_threadpool(check_video, video, video_name, cfg, engine.recipe.video)
                    await run_in_threadpool(check_image, image, image_name, cfg)
                    title = f"{video_name} -> {image_name}"
                    result = await run_in_threadpool(engine.ground, work, video, image, title)
                except (VideoError, ValueError) as e:  # decoding failures deeper down name the stored file
                    message = str(e).replace(str(video), video_name).replace(str(image), image_name)
                    raise UploadError(message.replace(str(work), "upload")) from None
        except BusyError as e:
            return _json(503, {"error": str(e)})
        except HTTPException as e:  # a malformed form, too many files or fields (Starlette's parser)
            return _json(e.status_code, {"error": f"bad request: {e.detail}"})
        except UploadError as e:
            log.info("serve: refused: %s", e)
            return _json(400, {"error": str(e)})
        except Exception:
            log.exception("serve: grounding failed")
            return _json(500, {"error": "internal error while grounding (see the server's log)"})
        log.info("serve: grounded %s in %.2f s", title, result.seconds)
        return _json(
            200,
            {
                "overlay": base64.b64encode(result.overlay).decode(),
                "overlay_type": result.overlay_type,
                "heatmap": base64.b64encode(result.heatmap).decode(),
                "actions": [[n, s] for n, s in result.actions],
                "windows": result.windows,
                "seconds": round(result.seconds, 3),
                "waited": round(result.waited, 3),
                "title": title,
            },
        )

    return BodyLimit(app, int(cfg.max_upload_mb * 2**20))
