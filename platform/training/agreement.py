"""Rounds in which the hosts of a multi-host job compare notes, so that they fail together.

Every host calls the same rounds in the same order (each is a collective exchange through
`Cluster.gather_json`). A round either agrees, or raises the same ClusterError on every host,
naming the hosts that differ or the host that failed: a host never trains on alone, and none
waits for a host that has already given up. On a one-host job a round costs nothing and a step's
own error is raised as it is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..cluster import Cluster
from ..errors import ClusterError, SagecraftError

T = TypeVar("T")


def together(cluster: Cluster, stage: str, step: Callable[[], T]) -> T:
    """Run `step` on every host; if it raises a SagecraftError on any, every host raises a
    ClusterError that names each failing host and its message ("host algo-2 of 3: ...", or
    "hosts algo-1, algo-3 of 3: ..." for hosts that failed alike)."""
    cluster.stage = stage
    if cluster.size == 1:
        return step()
    try:
        result, error = step(), None
    except SagecraftError as exc:
        result, error = None, str(exc)
    errors = cluster.gather_json(error)
    by_message: dict[str, list[str]] = {}
    for host, message in zip(cluster.hosts, errors, strict=True):
        if message:
            by_message.setdefault(message, []).append(host)
    if by_message:
        raise ClusterError(
            "; ".join(
                f"{'host' if len(hosts) == 1 else 'hosts'} {', '.join(hosts)} of {cluster.size}: {message}"
                for message, hosts in by_message.items()
            )
        )
    return result  # type: ignore[return-value]


def job_wide(exc: SagecraftError) -> SagecraftError:
    """Mark an error that every host raises alike (decided from what all of them hold): its
    failure message then names no single host."""
    exc.where = ""
    return exc


def agree(cluster: Cluster, what: str, value: Any) -> None:
    """Every host's JSON-able `value` must be equal: a ClusterError names the hosts and what
    each holds when they are not."""
    values = cluster.gather_json(value)
    if all(v == values[0] for v in values):
        return
    groups: dict[str, list[str]] = {}
    for host, held in zip(cluster.hosts, values, strict=True):
        groups.setdefault(_show(held), []).append(host)
    raise ClusterError(
        f"the hosts of the job disagree on {what}: "
        + "; ".join(f"{', '.join(hosts)}: {shown}" for shown, hosts in groups.items())
    )


def digest(values: Mapping[str, Any]) -> str:
    """A short fingerprint of JSON-able values (the hyperparameters, say)."""
    text = json.dumps(values, sort_keys=True, default=str).encode()
    return hashlib.sha256(text).hexdigest()[:16]


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 200 else text[:197] + "..."
