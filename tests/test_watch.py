"""The hosts' watch (sagecraft.training.watch) over real sockets on 127.0.0.1: hosts killed,
stopped, failing, done, and strangers on its port. The hosts whose end is tested run in their
own processes, so that a kill is the kernel closing their sockets, as on SageMaker."""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from sagecraft.errors import ClusterError
from sagecraft.training.watch import HELLO_TIMEOUT_S, MAX_STRANGERS, Watch

HOSTS = ("algo-1", "algo-2", "algo-3")
GRACE = 0.3

HOST_PROCESS = textwrap.dedent(
    """
    import os, sys, time
    from sagecraft.training.watch import HELLO_TIMEOUT_S, MAX_STRANGERS, Watch
    hosts, rank, port, then = sys.argv[1].split(","), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    watch = Watch(hosts, rank, leader_address="127.0.0.1", port=port, silence=30,
                  end=lambda exc: os._exit(3), grace=0.3)
    if rank == 0:
        watch.listen()
    watch.begin(lambda: "while fitting", time.monotonic() + 10)
    print("ready", flush=True)
    if then == "done":
        watch.done()
        sys.exit(0)
    if then == "fail":
        watch.failing(ValueError("a bad label"))
    time.sleep(60)
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Host:
    """A host's watch in this process; `ended` holds what it would have ended the process with."""

    def __init__(
        self, rank: int, port: int, hosts: tuple[str, ...] = HOSTS, silence: float = 30, grace: float = GRACE
    ) -> None:
        self.ended: list[BaseException] = []
        self.watch = Watch(
            hosts,
            rank,
            leader_address="127.0.0.1",
            port=port,
            silence=silence,
            end=self.ended.append,
            grace=grace,
            beat=0.2,
        )

    def ended_within(self, seconds: float) -> BaseException | None:
        deadline = time.monotonic() + seconds
        while not self.ended and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.ended[0] if self.ended else None


@pytest.fixture
def port() -> int:
    return _free_port()


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    made: list[Host] = []
    yield made
    for host in made:
        host.watch.close()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def _in_process(made: list[Host], rank: int, port: int, **kwargs: object) -> Host:
    host = Host(rank, port, **kwargs)  # type: ignore[arg-type]
    made.append(host)
    if rank == 0:
        host.watch.listen()
    return host


def _begin(*hosts: Host) -> None:
    for host in hosts:
        host.watch.begin(lambda: "while fitting", time.monotonic() + 10)


def _other_process(
    processes: list[subprocess.Popen], rank: int, port: int, then: str = "wait"
) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOST_PROCESS, ",".join(HOSTS), str(rank), str(port), then],
        stdout=subprocess.PIPE,
        text=True,
    )
    processes.append(process)
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    return process


def test_a_killed_host_is_known_at_once_and_passed_on_to_the_others(
    port: int, hosts: list[Host], processes: list[subprocess.Popen]
) -> None:
    leader = _in_process(hosts, 0, port)
    _begin(leader)
    killed = _other_process(processes, 1, port)
    third = _in_process(hosts, 2, port)
    _begin(third)
    time.sleep(0.5)
    assert leader.watch.departure is None and third.watch.departure is None
    killed.send_signal(signal.SIGKILL)
    for host in (leader, third):
        news = host.watch.wait_departure(5)
        assert news is not None and news.startswith(
            "host algo-2 of 3 ended while fitting: its process is gone"
        )
        ended = host.ended_within(5)
        assert isinstance(ended, ClusterError) and str(ended) == news


def test_a_stopped_host_is_known_after_the_silence_and_passed_on(
    port: int, hosts: list[Host], processes: list[subprocess.Popen]
) -> None:
    leader = _in_process(hosts, 0, port, silence=1.5)
    _begin(leader)
    stopped = _other_process(processes, 1, port)
    third = _in_process(hosts, 2, port, silence=1.5)
    _begin(third)
    began = time.monotonic()
    stopped.send_signal(signal.SIGSTOP)
    try:
        for host in (leader, third):
            news = host.watch.wait_departure(10)
            assert news is not None and news.startswith("host algo-2 of 3 stopped answering while fitting")
            assert "nothing heard from it for 1.5 s (collective_timeout)" in news
        assert time.monotonic() - began >= 1.5  # not before the silence
        assert isinstance(third.ended_within(5), ClusterError)
    finally:
        stopped.send_signal(signal.SIGKILL)


def test_a_failing_host_tells_the_others_which_end_after_the_grace(
    port: int, hosts: list[Host], processes: list[subprocess.Popen]
) -> None:
    leader = _in_process(hosts, 0, port)
    _begin(leader)
    failing = _other_process(processes, 1, port, then="fail")
    third = _in_process(hosts, 2, port)
    _begin(third)
    for host in (leader, third):
        news = host.watch.wait_departure(5)
        assert news == "host algo-2 of 3 failed while fitting; its log and failure reason say why"
    # The failing host's own watch ends it after the grace when its main thread does not
    # (here it sleeps): exit status 3 is the `end` the test process gave it.
    assert failing.wait(10) == 3


def test_the_leader_killed_is_known_to_every_other_host(
    port: int, hosts: list[Host], processes: list[subprocess.Popen]
) -> None:
    leader = _other_process(processes, 0, port)
    others = [_in_process(hosts, rank, port) for rank in (1, 2)]
    _begin(*others)
    time.sleep(0.3)
    leader.send_signal(signal.SIGKILL)
    for host in others:
        news = host.watch.wait_departure(5)
        assert news is not None and news.startswith("host algo-1 of 3 ended while fitting")
        assert isinstance(host.ended_within(5), ClusterError)


def test_a_host_that_said_done_may_leave_and_one_done_ignores_the_others(
    port: int, hosts: list[Host], processes: list[subprocess.Popen]
) -> None:
    leader = _in_process(hosts, 0, port)
    _begin(leader)
    finished = _other_process(processes, 1, port, then="done")
    assert finished.wait(10) == 0
    third = _other_process(processes, 2, port)
    time.sleep(0.5)
    assert leader.watch.departure is None
    leader.watch.done()  # the leader's fit returned: it is saving the model
    third.send_signal(signal.SIGKILL)
    time.sleep(1)
    assert leader.watch.departure is None and not leader.ended


def test_a_host_that_never_connects_is_silent(port: int, hosts: list[Host]) -> None:
    leader = _in_process(hosts, 0, port, hosts=HOSTS[:2], silence=1.0)
    _begin(leader)
    news = leader.watch.wait_departure(10)
    assert news is not None and news.startswith("host algo-2 of 2 stopped answering while fitting")


def test_a_main_thread_that_fails_the_usual_way_within_the_grace_is_not_ended(
    port: int, hosts: list[Host], processes: list[subprocess.Popen]
) -> None:
    leader = Host(0, port, grace=5.0)
    leader.watch.listen()
    _begin(leader)
    other = _other_process(processes, 1, port)
    _other_process(processes, 2, port)
    other.send_signal(signal.SIGKILL)
    assert leader.watch.wait_departure(5) is not None
    leader.watch.close()  # what leaving the collective does once the error was written
    time.sleep(0.5)
    assert not leader.ended


@pytest.mark.parametrize(
    "sent",
    [
        b"GET / HTTP/1.1\r\nHost: algo-1\r\n\r\n",  # not the watch's protocol
        struct.pack("!cH", b"h", 1),  # a host already connected
        struct.pack("!cH", b"h", 7),  # not a host of the job
        struct.pack("!cH", b"h", 0),  # the leader itself
        struct.pack("!cH", b"x", 1),  # news, from a stranger
        b"h",  # a part of a frame, then nothing
        b"",  # nothing at all
    ],
)
def test_a_stranger_on_the_port_is_refused_and_changes_nothing(
    port: int, hosts: list[Host], sent: bytes
) -> None:
    leader = _in_process(hosts, 0, port, hosts=HOSTS[:2])
    _begin(leader)
    worker = _in_process(hosts, 1, port, hosts=HOSTS[:2])
    _begin(worker)
    time.sleep(0.3)  # the worker is the leader's algo-2 before the stranger knocks
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stranger:
        stranger.sendall(sent)
        if sent == b"h":
            time.sleep(0.2)
        assert stranger.recv(16) == b""  # closed by the leader (after its hello timeout at most)
    time.sleep(0.5)
    assert leader.watch.departure is None and worker.watch.departure is None
    assert not leader.ended and not worker.ended


def test_the_port_taken_is_a_clear_error(port: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        watch = Watch(HOSTS, 0, leader_address="127.0.0.1", port=port, silence=30, end=lambda exc: None)
        with pytest.raises(
            ClusterError, match=rf"could not listen on algo-1 \(127.0.0.1:{port}, cluster_port \+ 1\)"
        ):
            watch.listen()
        watch.close()


def test_an_unreachable_leader_is_a_clear_error(port: int) -> None:
    watch = Watch(HOSTS, 1, leader_address="127.0.0.1", port=port, silence=30, end=lambda exc: None)
    with pytest.raises(ClusterError, match=r"host algo-2 could not reach the hosts' watch on algo-1"):
        watch.begin(lambda: "while fitting", time.monotonic() + 0.5)
    watch.close()


def test_a_flood_of_silent_strangers_does_not_keep_a_host_out(port: int, hosts: list[Host]) -> None:
    """More silent connections than the watch holds at once: it stops accepting until they time
    out, and the job's host, queued by the kernel meanwhile, gets in without a false alarm."""
    leader = _in_process(hosts, 0, port, hosts=HOSTS[:2])
    _begin(leader)
    strangers = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(MAX_STRANGERS + 8)]
    try:
        deadline = time.monotonic() + 3
        while len(leader.watch._strangers) < MAX_STRANGERS and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert len(leader.watch._strangers) == MAX_STRANGERS  # the rest wait in the kernel's queue
        worker = _in_process(hosts, 1, port, hosts=HOSTS[:2])
        worker.watch.begin(lambda: "while fitting", time.monotonic() + 30)
        time.sleep(HELLO_TIMEOUT_S + 2)  # the strangers time out; the worker's hello is read
        assert leader.watch.departure is None and worker.watch.departure is None
        worker.watch.done()
        time.sleep(0.5)
        assert leader.watch.departure is None and not leader.ended and not worker.ended
    finally:
        for stranger in strangers:
            stranger.close()
