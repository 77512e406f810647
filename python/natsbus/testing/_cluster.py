"""A JetStream cluster of throwaway nats-servers on loopback."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from typing_extensions import Self

from ._binary import ServerStartError
from ._process import Started, StrPath, free_ports, quote
from ._server import NatsServer


class NatsCluster(Started):
    """A JetStream cluster of ``size`` nats-server processes on loopback.

    Nodes are named ``n1``..``nN``, share ``cluster.name`` and route to each other. Ready when every
    node reports JetStream healthy (which needs an elected meta leader).

    Args:
        size: number of nodes (3 by default; JetStream needs at least 3 for R3 streams).
        name: the cluster name.
        config: extra config text appended to every node's config.
        binary: the nats-server executable; :func:`find_server_binary` if ``None``.
        debug: turn on debug logging on every node.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        name: str = "natsbus-test",
        config: Optional[str] = None,
        binary: Optional[StrPath] = None,
        debug: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        host = "127.0.0.1"
        ports = free_ports(3 * size, host)
        client_ports = ports[:size]
        route_ports = ports[size : 2 * size]
        self._name = name
        self._nodes: list[NatsServer] = []
        for index in range(size):
            routes = ", ".join(
                quote(f"nats-route://{host}:{route_ports[other]}")
                for other in range(size)
                if other != index
            )
            node_config = (
                "cluster {\n"
                f"  name: {quote(name)}\n"
                f"  listen: {quote(f'{host}:{route_ports[index]}')}\n"
                f"  routes: [{routes}]\n"
                "}\n"
            )
            if config:
                node_config += config
            node = NatsServer(
                port=client_ports[index],
                host=host,
                server_name=f"n{index + 1}",
                config=node_config,
                binary=binary,
                debug=debug,
            )
            node._monitor_port = ports[2 * size + index]
            self._nodes.append(node)

    @property
    def name(self) -> str:
        """The cluster name."""
        return self._name

    @property
    def nodes(self) -> Sequence[NatsServer]:
        """The nodes, in order (``nodes[0]`` is ``n1``)."""
        return tuple(self._nodes)

    @property
    def urls(self) -> list[str]:
        """The client URL of every node."""
        return [node.url for node in self._nodes]

    @property
    def url(self) -> str:
        """All client URLs, comma-separated (what ``natsbus.connect`` and ``$NATS_URL`` accept)."""
        return ",".join(self.urls)

    def __iter__(self) -> Iterator[NatsServer]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def start(self, timeout: float = 30.0) -> Self:
        """Start every node and wait until all of them report JetStream healthy."""
        deadline = time.monotonic() + timeout
        try:
            for node in self._nodes:
                node._launch()
            for node in self._nodes:
                node._wait_ready(deadline, "/healthz")
            self._wait_meta_current(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_meta_current(self, deadline: float) -> None:
        """Wait until the meta leader sees every other node as a current peer.

        ``/healthz`` turns 200 once a leader is elected; placing an R3 stream right away can still
        fail while a follower has not caught up, so wait for that too.
        """
        if len(self._nodes) < 2:
            return
        delay = 0.01
        while True:
            for node in self._nodes:
                try:
                    with urllib.request.urlopen(node.monitor_url + "/jsz", timeout=1.0) as resp:
                        meta = json.load(resp).get("meta_cluster") or {}
                except (urllib.error.URLError, OSError, ValueError):
                    continue
                peers = meta.get("replicas") or []
                if (
                    meta.get("leader") == node._server_name
                    and len(peers) == len(self._nodes) - 1
                    and all(peer.get("current") and not peer.get("offline") for peer in peers)
                ):
                    return
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"cluster {self._name!r}: the JetStream meta group did not settle in time; "
                    f"node logs: {', '.join(node.log_file for node in self._nodes)}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def wait_settled(self, timeout: float = 30.0) -> None:
        """Wait until the JetStream meta leader counts every other node as a current peer.

        A node that missed heartbeats (a busy machine, a restart) is "offline" to the meta
        group for a while, and placing an R3 stream then fails with "no suitable peers for
        placement". Raises ``ServerStartError`` when the cluster does not settle in time.
        """
        self._wait_meta_current(time.monotonic() + timeout)

    def stop(self) -> None:
        """Stop every node and remove their temporary files."""
        for node in self._nodes:
            node.stop()

    def stop_node(self, index: int) -> None:
        """Stop node ``index`` (0-based), keeping its store so :meth:`start_node` resumes it."""
        self._nodes[index].stop(cleanup=False)

    def start_node(self, index: int, timeout: float = 30.0) -> NatsServer:
        """Start node ``index`` again (same ports and store) and wait until it is healthy and
        the meta leader counts it as a current peer again (so that an R3 stream can be placed
        right away)."""
        node = self._nodes[index]
        deadline = time.monotonic() + timeout
        node._launch()
        node._wait_ready(deadline, "/healthz")
        self._wait_meta_current(deadline)
        return node

    def is_running(self) -> bool:
        """Whether every node's process is alive."""
        return all(node.is_running() for node in self._nodes)

    def __repr__(self) -> str:
        return f"NatsCluster(name={self._name!r}, urls={self.urls!r})"
