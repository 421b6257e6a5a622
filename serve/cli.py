"""``maskahand serve --checkpoint CKPT``: the grounding page on http://127.0.0.1:8000/."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket

from ..core.cli_util import UsageError, add_config_option, load_recipe
from ..core.config import ServeRecipe
from .engine import GroundingEngine

log = logging.getLogger("maskahand.serve")
TOKEN_ENV = "MASKAHAND_SERVE_TOKEN"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a grounding page in the browser (upload a video and a target image)",
        description=(
            "Serve a page where a demonstration video and a target image are uploaded (or a shared example "
            "picked, serve.examples_dir) and grounded with CKPT: the moving overlay, the summed heatmap, the "
            "top actions, the time taken. Binds 127.0.0.1 unless --host says otherwise; an address others "
            "can reach should come with --token. Limits: serve.max_upload_mb, serve.max_video_seconds, "
            "serve.max_image_pixels; one inference at a time, serve.queue_size waiting."
        ),
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT")
    p.add_argument("--model", default="afformer", help="predictor: afformer | hotspots")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--token",
        default=None,
        help=f"a secret every request must carry (the page's Token field); also read from ${TOKEN_ENV}",
    )
    p.add_argument("--top", type=int, default=3, help="actions listed for a model with an action head")
    add_config_option(p)
    p.set_defaults(func=run_serve_command)


def is_loopback(host: str) -> bool:

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bindable(host: str, port: int) -> None:
    """A :class:`UsageError` when ``host:port`` cannot be bound (in use, not an address of this machine)."""

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise UsageError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None


def open_server_warning(host: str, port: int) -> str:
    bar = "!" * 78
    return (
        f"\n{bar}\n!! maskahand serve is OPEN: bound to {host}:{port} WITHOUT a token.\n"
        f"!! Anyone who can reach this address can upload files and run the model.\n"
        f"!! Add --token SECRET (or ${TOKEN_ENV}), or bind 127.0.0.1.\n{bar}"
    )


def run_serve_command(args: argparse.Namespace) -> int:

    recipe = load_recipe(ServeRecipe, args)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not 0 <= args.port < 65536:
        raise UsageError(f"--port {args.port}: not a port number")
    if not is_loopback(args.host) and token is None:
        log.warning("%s", open_server_warning(args.host, args.port))
    check_bindable(args.host, args.port)  # before minutes of model loading

    # deferred: uvicorn at import
    import uvicorn

    # deferred: fastapi, torch at import
    from ..evaluation.predictor import build_predictor
    from ..runtime.distributed import resolve_device
    from .app import available_examples, build_app

    device = resolve_device(recipe.eval.device)
    predictor = build_predictor(args.model, args.checkpoint, recipe, device)
    engine = GroundingEngine(predictor, recipe, top=args.top)
    try:
        app = build_app(engine, token=token, model_name=getattr(predictor, "name", args.model))
        examples = sorted(available_examples(recipe.serve.examples_dir))
        shown = f"[{args.host}]" if ":" in args.host else args.host
        log.info(
            "serve: http://%s:%d/ (model %s on %s; examples: %s; token %s)",
            shown, args.port, getattr(predictor, "name", args.model), device, ", ".join(examples) or "none",
            "required" if token else "not required",
        )  # fmt: skip
        try:
            uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
        except SystemExit as e:  # uvicorn exits (status 3) when it cannot start; its reason is logged above
            if e.code:
                raise RuntimeError(
                    f"the server on {args.host}:{args.port} could not start (see above)"
                ) from None
    finally:
        engine.close()
    return 0
