"""One way to start Ray for every stage: embedded locally by default, a cluster when given an address."""

from __future__ import annotations

import logging
import os
from typing import Any

from maskahand.config import RayConfig

log = logging.getLogger(__name__)


def init_ray(cfg: RayConfig | None = None) -> dict[str, Any]:
    """Connect to ``cfg.address`` or ``RAY_ADDRESS``, else start (or reuse) an embedded local runtime.

    Returns the cluster's resources. Reuses an already-initialised Ray (tests start one per session).
    """
    import ray

    cfg = cfg or RayConfig()
    if ray.is_initialized():
        return ray.cluster_resources()
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
    else:
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
