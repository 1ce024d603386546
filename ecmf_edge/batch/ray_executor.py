"""Work spread over Ray actors (the ``cluster`` extra): each actor builds its state once (a loaded
:class:`~ecmf_edge.Recognizer`, a feature extractor) and then handles the items it is handed.

Used by ``ecmf-edge label --ray`` (files -> timelines) and ``ecmf-edge train --ray`` (corpus samples ->
feature rows). Results come back to the driver, which writes them, so actors need only read access to
the inputs (a shared file system or the same paths on every node) and the bundle.

``address=None`` starts a local Ray instance (useful on one machine too: the actors are separate
processes); ``"auto"`` joins the cluster this machine belongs to, ``"ray://host:10001"`` a remote one
through Ray Client, ``"host:6379"`` a head node's GCS.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ecmf_edge.errors import DependencyError, DeviceError, InputError

__all__ = ["RayOptions", "require_ray", "ray_map", "check_address", "CONNECT_TIMEOUT_S"]

logger = logging.getLogger("ecmf_edge")

# How long a cluster address may take to answer before the run stops with an error.
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide work runs on Ray."""

    # None: a local Ray instance; "auto": the cluster this machine belongs to; "ray://host:10001"; "host:6379".
    address: str | None = None
    # Actors, each with its own loaded models.
    actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0


def require_ray():
    try:
        import ray
    except ImportError:
        raise DependencyError("Ray is not installed: run `pip install 'ecmf-edge[cluster]'` (or `pip install ray`)") from None
    return ray


def check_address(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast when a ``host:port`` or ``ray://host:port`` address does not answer (Ray itself would keep
    retrying for minutes). ``None`` and ``"auto"`` are not checked here.

    Raises:
        InputError: an address that is not host:port.
        DeviceError: nothing answers at the address within ``timeout`` seconds.
    """
    if address in (None, "", "auto", "local"):
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--ray {address!r} is not an address: use 'auto', 'HOST:6379' or 'ray://HOST:10001'")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise DeviceError(f"no Ray cluster answers at {address} ({exc.strerror or exc}): start one with `ray start --head`, "
                          "check the address, or leave --ray without an address for a local one") from None


def _init(ray, address: str | None, actors: int, cpus_per_actor: float, gpus_per_actor: float) -> bool:
    """Connect (or start a local instance); True when this call started it."""
    if ray.is_initialized():
        return False
    check_address(address)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True,
                              "logging_level": logging.WARNING}
    if not address:
        kwargs["num_cpus"] = max(1, min(int(actors * max(cpus_per_actor, 1)), os.cpu_count() or 1))
        if gpus_per_actor:
            kwargs.pop("num_cpus")
        # Workers import the installed package; a source checkout also reaches them through PYTHONPATH.
        kwargs["runtime_env"] = {"env_vars": {k: os.environ[k] for k in ("PYTHONPATH", "ECMF_EDGE_ENGINES",
                                                                         "ECMF_EDGE_TEST_BUNDLE") if k in os.environ}}
    elif address == "auto":
        kwargs["address"] = "auto"
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise DeviceError(f"cannot join the Ray cluster at {address}: {' '.join(str(exc).split())[:160]} "
                          "(start one with `ray start --head`, or leave --ray without an address)") from None
    return True


def ray_map(init: Callable[[], Any], call: Callable[[Any, Any], Any], items: Sequence[Any], *,
            address: str | None = None, actors: int = 1, cpus_per_actor: float = 1.0,
            gpus_per_actor: float = 0.0) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, call(state, items[index]))`` as actors finish, where each actor's ``state = init()``.

    ``init`` and ``call`` must be importable functions (or picklable callables). Exceptions raised by
    ``call`` travel back and are raised here; callers that must go on after one bad item catch inside
    ``call``.

    Raises:
        DependencyError: Ray is not installed.
        DeviceError: the cluster at ``address`` does not answer.
    """
    if not items:
        return
    if isinstance(actors, bool) or not isinstance(actors, int) or actors < 1:
        raise InputError(f"actors={actors!r} is invalid: use 1 or more")
    ray = require_ray()
    started_here = _init(ray, address, actors, cpus_per_actor, gpus_per_actor)
    try:
        from ray.util import ActorPool

        class _Worker:
            def __init__(self, make_state):
                self.state = make_state()

            def run(self, index, item):
                return index, call(self.state, item)

        # ray.remote(cls), as `@ray.remote` would do: a name of its own, since the actor class is not a _Worker
        worker = ray.remote(_Worker)
        options: dict[str, Any] = {"num_cpus": cpus_per_actor}
        if gpus_per_actor:
            options["num_gpus"] = gpus_per_actor
        pool = ActorPool([worker.options(**options).remote(init) for _ in range(min(actors, len(items)))])
        yield from pool.map_unordered(lambda actor, pair: actor.run.remote(*pair), list(enumerate(items)))
    finally:
        if started_here:
            ray.shutdown()
