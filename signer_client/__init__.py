"""Client for the enclave signer: wire protocol, fast transaction encoding, reply verification.

::

    from signer_client import SignerClient, SignedTx
    client = await SignerClient.connect("unix:///run/enclave.sock")
    signed = await client.sign_transaction(tx, sender)   # signed.raw, signed.hash
    await client.close()

``tx`` is an eth-account style dict, or a :class:`TxFields` (skips the dict normalisation,
~1.5 us: the faster entry point for hot paths that build transactions themselves).

See ``client.py`` for the connection design and ``errors.py`` for the error tree.
"""

from signer_client.attestation import AttestationPolicy, AttestationResult, verify_attestation
from signer_client.client import SignerClient
from signer_client.errors import (
    AttestationError,
    BadRequest,
    FrameError,
    FrameTooLarge,
    HelloMismatch,
    PolicyDenied,
    ProtocolError,
    RemoteError,
    ReplyVerificationError,
    SignerError,
    SignerTimeout,
    SignerUnavailable,
    TransactionError,
    TruncatedFrame,
    TxDecodeError,
    TxFieldError,
    UnknownSender,
)
from signer_client.events import EventCounter, EventSink, SignerEvent
from signer_client.fake import ANVIL_DEV_KEY, FakeSigner, Signer
from signer_client.priority import URGENT_RESERVE, Ticket, reacting, urgent
from signer_client.protocol import PROTOCOL_VERSION, SignerInfo, SignerPins, check_hello
from signer_client.signing import LocalKey, SignedTx, to_checksum_address
from signer_client.txcodec import TxFields, decode_raw, tx_from_dict

__all__ = [
    "ANVIL_DEV_KEY",
    "PROTOCOL_VERSION",
    "URGENT_RESERVE",
    "AttestationError",
    "AttestationPolicy",
    "AttestationResult",
    "BadRequest",
    "EventCounter",
    "EventSink",
    "FakeSigner",
    "FrameError",
    "FrameTooLarge",
    "HelloMismatch",
    "LocalKey",
    "PolicyDenied",
    "ProtocolError",
    "RemoteError",
    "ReplyVerificationError",
    "SignedTx",
    "Signer",
    "SignerClient",
    "SignerError",
    "SignerEvent",
    "SignerInfo",
    "SignerPins",
    "SignerTimeout",
    "SignerUnavailable",
    "Ticket",
    "TransactionError",
    "TruncatedFrame",
    "TxDecodeError",
    "TxFieldError",
    "TxFields",
    "UnknownSender",
    "check_hello",
    "decode_raw",
    "reacting",
    "to_checksum_address",
    "tx_from_dict",
    "urgent",
    "verify_attestation",
]
