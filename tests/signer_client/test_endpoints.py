"""Endpoint URLs parse strictly, and vsock is connected in a thread then handed to the loop."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

import signer_client.client as client_module
from enclave.core import EnclaveCore
from enclave.policy import Policy, PolicyConfig
from enclave.server import EnclaveServerProtocol
from signer_client import FakeSigner, Signer, SignerClient
from signer_client.endpoints import Endpoint, connect_vsock_socket, parse_endpoint
from signer_client.signing import LocalKey
from tests.enclave.running import ALLOWED_TO, ANVIL_ADDRESS, ANVIL_KEY


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("vsock://16:5000", Endpoint("vsock", cid=16, port=5000)),
        ("vsock://4294967295:5000", Endpoint("vsock", cid=4294967295, port=5000)),
        ("unix:///run/enclave.sock", Endpoint("unix", path="/run/enclave.sock")),
        ("tcp://127.0.0.1:7000", Endpoint("tcp", host="127.0.0.1", port=7000)),
    ],
)
def test_signer_urls_parse_into_endpoints(url: str, endpoint: Endpoint) -> None:
    assert parse_endpoint(url) == endpoint
    assert str(parse_endpoint(url)) == url


@pytest.mark.parametrize(
    "url",
    ["vsock://16", "vsock://x:1", "unix://relative.sock", "tcp://host", "http://x:1", "nothing"],
)
def test_malformed_signer_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(url)


class _FakeVsock:
    def __init__(self, family: int, kind: int) -> None:
        self.family, self.kind = family, kind
        self.calls: list[Any] = []

    def settimeout(self, t: float) -> None:
        self.calls.append(("timeout", t))

    def connect(self, address: tuple[int, int]) -> None:
        self.calls.append(("connect", address))

    def setblocking(self, flag: bool) -> None:
        self.calls.append(("blocking", flag))

    def close(self) -> None:
        self.calls.append(("close",))


async def test_a_vsock_socket_is_connected_in_a_worker_thread_with_cid_and_port() -> None:
    made: list[_FakeVsock] = []

    def factory(family: int, kind: int) -> Any:
        made.append(_FakeVsock(family, kind))
        return made[-1]

    sock = await connect_vsock_socket(16, 5000, 1.0, factory)
    assert sock is made[0]
    assert made[0].family == getattr(socket, "AF_VSOCK", 40)
    assert made[0].calls == [("timeout", 1.0), ("connect", (16, 5000)), ("blocking", False)]


async def test_the_client_hands_a_connected_vsock_socket_to_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    core = EnclaveCore([LocalKey(ANVIL_KEY)], Policy(PolicyConfig(chain_ids=(1,))))
    seen: list[tuple[int, int]] = []

    async def fake_connect(cid: int, port: int, connect_timeout: float) -> socket.socket:
        seen.append((cid, port))
        ours, theirs = socket.socketpair()  # one per lane (ordinary, urgent)
        await loop.connect_accepted_socket(
            lambda: EnclaveServerProtocol(core, loop.time, False), theirs
        )
        ours.setblocking(False)
        return ours

    monkeypatch.setattr(client_module, "connect_vsock_socket", fake_connect)
    tx = {"chainId": 1, "nonce": 0, "gas": 21000, "gasPrice": 1, "to": ALLOWED_TO}
    async with SignerClient("vsock://16:5000") as client:
        signed = await client.sign_transaction(tx, ANVIL_ADDRESS)
    assert seen == [(16, 5000), (16, 5000)]  # the ordinary lane and the urgent lane
    assert signed.sender == ANVIL_ADDRESS


async def test_the_fake_signer_satisfies_the_signer_protocol_with_real_signatures() -> None:
    from eth_account import Account

    fake = FakeSigner()
    assert isinstance(fake, Signer)
    tx = {"type": 2, "chainId": 1, "nonce": 3, "gas": 21000, "maxFeePerGas": 2,
          "maxPriorityFeePerGas": 1, "to": ALLOWED_TO, "value": 1}  # fmt: skip
    signed = await fake.sign_transaction(tx, ANVIL_ADDRESS)
    assert signed.raw == bytes(Account.sign_transaction(tx, ANVIL_KEY).raw_transaction)
    assert fake.signed == [signed]


def test_set_nodelay_turns_nagle_off_on_tcp_and_leaves_unix_alone() -> None:
    import socket

    from signer_client.endpoints import set_nodelay

    class Transport:
        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        def get_extra_info(self, name: str) -> object:
            return self.sock if name == "socket" else None

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        set_nodelay(Transport(tcp))  # type: ignore[arg-type]
        assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        set_nodelay(Transport(unix))  # type: ignore[arg-type]
