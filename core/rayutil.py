"""One way to start Ray for every stage: embedded locally by default, a cluster when given an address.

Token authentication (Ray >= 2.52). A cluster started with ``ray start --head`` requires a token when one
existed on the head at start-up (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) or
``RAY_AUTH_MODE=token`` was set there. A driver given an explicit address, however, never turns
authentication on by itself: it connects without a token and then retries for ~20 s on
``InvalidAuthToken``. And a driver in token mode cannot use a cluster without authentication (its actors
never start). So before ``ray.init`` we ask the cluster's GCS once, over plain gRPC, whether it accepts a
call without a token; then with the token Ray would find (Ray's own token loader, same precedence). The
answer sets ``RAY_AUTH_MODE`` for this process to what the cluster uses, or fails at once with one message
naming the variables to set.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from typing import Any

from .config import RayConfig

log = logging.getLogger(__name__)

AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
PROBE_TIMEOUT_S = 5.0
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[^:/\s]+):(\d+)$")


class RayConnectError(RuntimeError):
    """A Ray cluster given by address cannot be used (authentication, mostly); the message says what to do."""


def _token_sources() -> str:
    """Where Ray looks for a token, with what this process has set."""
    env = os.environ
    return (
        f"{TOKEN_ENV} ({'set' if env.get(TOKEN_ENV) else 'not set'}), "
        f"{TOKEN_PATH_ENV} ({env.get(TOKEN_PATH_ENV) or 'not set'}), "
        f"or the file ~/.ray/auth_token ({'present' if _default_token_file_exists() else 'absent'})"
    )


def _default_token_file_exists() -> bool:
    return os.path.isfile(os.path.join(os.path.expanduser("~"), ".ray", "auth_token"))


def _local_token_header() -> dict[str, str]:
    """``{"authorization": "Bearer ..."}`` from where Ray keeps the token, or ``{}`` when there is none."""
    # deferred: ray at import
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]  # private, no stub

    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()  # the environment may have changed since Ray last looked
    try:
        return dict(loader.get_token_for_http_header(ignore_auth_mode=True))
    except Exception as e:  # noqa: BLE001 - Ray raises AuthenticationError for an unreadable token file
        raise RayConnectError(f"cannot read the Ray authentication token: {e}. Set {_token_sources()}") from e


def probe_gcs(address: str, header: dict[str, str] | None, timeout: float = PROBE_TIMEOUT_S) -> str:
    """One GCS call: ``"ok"``, ``"unauthenticated"`` or ``"unavailable"`` (nothing answers / other error)."""
    # deferred: grpc, ray at import
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    metadata = list((header or {}).items())
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]  # generated
            stub.GetClusterId(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            if code == grpc.StatusCode.UNAUTHENTICATED:
                return "unauthenticated"
            log.debug("GCS probe of %s: %s", address, e)
            return "unavailable"
    return "ok"


def _set_auth_mode(mode: str) -> None:
    """Make this process (and the processes it starts) use ``mode``; Ray re-reads its config."""
    # deferred: ray at import
    from ray._raylet import Config  # type: ignore[attr-defined]  # private, no stub

    if os.environ.get(AUTH_MODE_ENV) != mode:
        os.environ[AUTH_MODE_ENV] = mode
        Config.initialize("")


def configure_auth(address: str) -> str:
    """Match this driver's Ray authentication to the cluster at ``address``; returns the mode used.

    ``"token"`` / ``"disabled"`` when the cluster answered, ``"unchecked"`` when the address is not a plain
    ``host:port`` GCS address (``auto``, ``ray://``) or nothing answered (Ray then reports it as usual).
    Raises :class:`RayConnectError` when the cluster wants a token that this machine does not have.
    """
    if not _HOST_PORT.match(address):
        return "unchecked"
    status = probe_gcs(address, None)
    if status == "unavailable":
        return "unchecked"
    if status == "ok":
        if os.environ.get(AUTH_MODE_ENV, "").lower() == "token":
            log.info("the Ray cluster at %s does not use token authentication: connecting without", address)
        _set_auth_mode("disabled")
        return "disabled"
    header = _local_token_header()
    if not header:
        raise RayConnectError(
            f"the Ray cluster at {address} requires an authentication token and none was found. Copy the "
            f"head node's token (`ray get-auth-token` there, or its ~/.ray/auth_token) and set "
            f"{TOKEN_ENV}=<token> or {TOKEN_PATH_ENV}=<file>, or put it in ~/.ray/auth_token"
        )
    status = probe_gcs(address, header)
    if status == "unauthenticated":
        raise RayConnectError(
            f"the Ray cluster at {address} rejected this machine's authentication token, taken from "
            f"{_token_sources()}. Set {TOKEN_ENV} or {TOKEN_PATH_ENV} to the head node's token "
            "(`ray get-auth-token` there)"
        )
    if status == "unavailable":
        return "unchecked"
    _set_auth_mode("token")
    return "token"


def init_ray(cfg: RayConfig | None = None) -> dict[str, Any]:
    """Connect to ``cfg.address`` or ``RAY_ADDRESS``, else start (or reuse) an embedded local runtime.

    Returns the cluster's resources. Reuses an already-initialised Ray (tests start one per session).
    """
    # deferred: ray at import
    import ray

    cfg = cfg or RayConfig()
    if ray.is_initialized():
        return ray.cluster_resources()
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        mode = configure_auth(address)
        log.info("connecting to Ray cluster at %s (authentication: %s)", address, mode)
        ray.init(address=address, log_to_driver=True)
    else:
        if AUTH_MODE_ENV not in os.environ:
            # what Ray does for a new local runtime anyway (token authentication, a token generated when
            # none exists), said explicitly so that Ray does not warn about choosing it on every start
            _set_auth_mode("token")
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
        if cfg.num_cpus is not None:
            kwargs["num_cpus"] = cfg.num_cpus
        if cfg.num_gpus is not None:
            kwargs["num_gpus"] = cfg.num_gpus
        if cfg.object_store_memory is not None:
            kwargs["object_store_memory"] = cfg.object_store_memory
        ray.init(**kwargs)
        log.info("started embedded Ray: %s", ray.cluster_resources())
    return ray.cluster_resources()


def node_record() -> dict[str, str]:
    """Where this process runs: ``{"node_id": Ray node id (when in Ray), "host": host name}``.

    Mining and synthesis record it per video / per shard, so a cluster run shows which node did what
    (several nodes on one machine share the host name, never the node id).
    """

    record = {"host": socket.gethostname()}
    try:
        # deferred: ray at import
        import ray

        if ray.is_initialized():
            record["node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - provenance only: never fail the work for it
        pass
    return record
