"""Join the hosts of a multi-host job into one collective: XGBoost's, never a protocol of ours.

Called by the trainer once the configuration is checked, on every host. The first host in
resourceconfig.json's `hosts` runs XGBoost's `RabitTracker`; every host (the first too) enters
`xgboost.collective` with its index in `hosts` as its task id, so that its rank is that index
(task ids are compared as text: they are zero-padded). Host names are resolved, never read from
/etc/hosts (SageMaker says it may be wrong), with retries: a name can take a while to appear.
Leaving, on every path, finalizes the collective (without it a survivor of a failed job crashes
at exit) and stops the tracker. Beside the collective the hosts keep a watch on each other
(`sagecraft.training.watch`), as XGBoost's collective can wait for good on a host that is gone.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from ..cluster import Cluster
from ..errors import ClusterError
from .watch import Ending, Watch, watch_port

log = logging.getLogger(__name__)

DEFAULT_PORT = 9099  # the port SageMaker's built-in XGBoost uses
DEFAULT_BOOTSTRAP_TIMEOUT_S = 600
DEFAULT_COLLECTIVE_TIMEOUT_S = 1800  # XGBoost's own default for a collective call


@dataclass(frozen=True)
class JoinSettings:
    """From the core hyperparameters cluster_port, bootstrap_timeout and collective_timeout."""

    port: int = DEFAULT_PORT
    bootstrap_timeout: float = DEFAULT_BOOTSTRAP_TIMEOUT_S
    collective_timeout: float = DEFAULT_COLLECTIVE_TIMEOUT_S


def resolve(host: str, deadline: float, clock: Callable[[], float] = time.monotonic) -> str:
    """The IPv4 address `host` resolves to, retried with backoff until `deadline`."""
    delay = 0.1
    while True:
        try:
            return str(socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
        except (socket.gaierror, UnicodeError) as exc:
            if clock() + delay > deadline:
                raise ClusterError(
                    f"host name {host} did not resolve within the bootstrap timeout ({exc}); "
                    "has that host started? Raise bootstrap_timeout if names take long to appear"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def end_process(exc: BaseException) -> None:
    """End this process at once, with exit status 1 (its main thread may never return)."""
    log.error("training failed: %s; ending this host now", exc)
    logging.shutdown()
    os._exit(1)


@contextmanager
def joined(
    hosts: Sequence[str], current_host: str, settings: JoinSettings, end: Ending = end_process
) -> Iterator[Cluster]:
    """The job's cluster, joined; a one-host job's without any communication. Raises
    ClusterError naming the host or address when the hosts cannot join within the deadline.
    `end` is what the hosts' watch calls (from its own thread) when this host must end at once
    with an error: it writes the failure and ends the process."""
    if len(hosts) == 1:
        yield Cluster.single(current_host)
        return
    from xgboost import collective

    deadline = time.monotonic() + settings.bootstrap_timeout
    leader = resolve(hosts[0], deadline)
    resolve(current_host, deadline)  # a host whose own name does not resolve cannot be reached
    rank = list(hosts).index(current_host)
    watch = Watch(
        hosts,
        rank,
        leader_address=leader,
        port=watch_port(settings.port),
        silence=settings.collective_timeout,
        end=end,
    )
    tracker = None
    try:
        if rank == 0:
            watch.listen()
            tracker = _start_tracker(hosts, leader, settings)
        _init(collective, leader, rank, settings, deadline, hosts)
        try:
            cluster = Cluster(hosts, current_host, collective=True, watch=watch)
            if collective.get_rank() != rank or collective.get_world_size() != len(hosts):
                raise ClusterError(
                    f"host {current_host} joined as rank {collective.get_rank()} of "
                    f"{collective.get_world_size()}, not {rank} of {len(hosts)}: is another job "
                    f"using {hosts[0]}:{settings.port}?"
                )
            watch.begin(lambda: cluster.stage, time.monotonic() + settings.bootstrap_timeout)
            log.info("joined the cluster as %s (rank %d)", cluster.describe(), rank)
            try:
                yield cluster
            except BaseException as exc:
                watch.failing(exc)
                raise
        finally:
            _finalize(collective)
    finally:
        if tracker is not None:
            _stop(tracker)
        watch.close()


def fit_returned(cluster: Cluster) -> None:
    """This host's fit returned: from now on another host's end does not end this one (the
    leader is about to save the model)."""
    if cluster._watch is not None:
        cluster._watch.done()


def _start_tracker(hosts: Sequence[str], leader: str, settings: JoinSettings) -> object:
    """XGBoost's tracker on the first host, started."""
    from xgboost.tracker import RabitTracker

    tracker = RabitTracker(
        n_workers=len(hosts),
        host_ip=leader,
        port=settings.port,
        sortby="task",
        timeout=max(1, int(settings.bootstrap_timeout)),
    )
    try:
        tracker.start()
    except Exception as exc:
        raise ClusterError(
            f"the tracker could not start on {hosts[0]} ({leader}:{settings.port}): "
            f"{_last_line(exc)}; is the port (cluster_port) free?"
        ) from None
    log.info("tracker for %d hosts listening on %s:%d", len(hosts), leader, settings.port)
    return tracker


def _init(
    collective: object,
    leader: str,
    rank: int,
    settings: JoinSettings,
    deadline: float,
    hosts: Sequence[str],
) -> None:
    """Enter the collective, trying again (a tracker not up yet) until the deadline."""
    from xgboost.core import XGBoostError

    while True:
        try:
            with warnings.catch_warnings():  # XGBoost warns on every failed connection attempt
                warnings.simplefilter("ignore")
                collective.init(  # type: ignore[attr-defined]
                    dmlc_communicator="rabit",
                    dmlc_tracker_uri=leader,
                    dmlc_tracker_port=settings.port,
                    dmlc_task_id=f"{rank:05d}",
                    # Short: a host that starts before the tracker tries again at once (below)
                    # rather than after XGBoost's growing waits (6 s for its default).
                    dmlc_retry=2,
                    dmlc_timeout=max(1, int(settings.collective_timeout)),
                )
            return
        except XGBoostError as exc:
            if time.monotonic() + 1 > deadline:
                others = ", ".join(h for h in hosts if h != hosts[rank])
                missing = _unresolved([h for h in hosts if h != hosts[rank]])
                raise ClusterError(
                    f"the hosts did not all join within the bootstrap timeout: host {hosts[rank]} "
                    f"could not join the tracker on {hosts[0]} ({leader}:{settings.port}) with "
                    f"{others} ({_last_line(exc)}); "
                    + (
                        f"{', '.join(missing)} {'does' if len(missing) == 1 else 'do'} not "
                        "resolve: did it start?"
                        if missing
                        else "a host that did not start, or that cannot reach the first host, "
                        "keeps the others waiting"
                    )
                ) from None
            log.debug("the cluster is not ready yet (%s); trying again", _last_line(exc))
            time.sleep(0.2)


def _finalize(collective: object) -> None:
    """Leave the collective. After another host failed this raises too ("failed to shutdown"):
    logged only, so that the job's own error, already known, is what the host reports."""
    from xgboost.core import XGBoostError

    try:
        collective.finalize()  # type: ignore[attr-defined]
    except XGBoostError as exc:
        log.debug("leaving the collective: %s", _last_line(exc))


def _unresolved(hosts: Sequence[str]) -> list[str]:
    """The hosts whose names do not resolve now (one try each): the likely absentees."""
    missing = []
    for host in hosts:
        try:
            socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            missing.append(host)
    return missing


def _stop(tracker: object) -> None:
    """Let the tracker see every host leave, then free it; its errors no longer matter."""
    from xgboost.core import XGBoostError

    try:
        tracker.wait_for(5)  # type: ignore[attr-defined]
    except (XGBoostError, ValueError) as exc:
        log.debug("tracker: %s", _last_line(exc))
    try:
        tracker.free()  # type: ignore[attr-defined]
    except XGBoostError as exc:
        log.debug("tracker: %s", _last_line(exc))


def _last_line(exc: BaseException) -> str:
    lines = [
        line.strip(" -")
        for line in str(exc).splitlines()
        if line.strip() and not line.strip().startswith(("[bt]", "Stack trace"))
    ]
    return (lines[-1] if lines else str(exc))[:300]
