"""The auth key held apart even when the key source lists it more than once (DESIGN.md 5a): a
second copy of the auth key must not become a transaction key (the enclave would then sign
transactions with the auth key, and hello would list it as an account)."""

from __future__ import annotations

from enclave.core import EnclaveCore
from enclave.policy import Policy, PolicyConfig
from signer_client.signing import LocalKey
from signer_client.txcodec import signing_payload
from tests.enclave.running import ALLOWED_TO, ANVIL_ADDRESS, ANVIL_KEY, AUTH_ADDRESS, AUTH_KEY
from tests.enclave.test_policy import fields


def test_a_duplicated_auth_key_never_becomes_a_transaction_key() -> None:
    keys = [LocalKey(AUTH_KEY), LocalKey(ANVIL_KEY), LocalKey(AUTH_KEY)]
    policy = Policy(
        PolicyConfig(chain_ids=(1,), allowed_to=(ALLOWED_TO,), auth_address=AUTH_ADDRESS)
    )
    c = EnclaveCore(keys, policy)
    hello = c.handle({"id": 1, "method": "hello"}, 0.0)["result"]
    assert hello["addresses"] == [ANVIL_ADDRESS]
    payload = "0x" + signing_payload(fields(to=ALLOWED_TO)).hex()
    params = {"sender": AUTH_ADDRESS.lower(), "payload": payload}
    reply = c.handle({"id": 2, "method": "sign_transaction", "params": params}, 0.0)
    assert reply.get("error", {}).get("code") == "unknown_sender", reply
