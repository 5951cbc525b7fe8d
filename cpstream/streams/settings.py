"""The one set of WebSocket protocol options every endpoint is built from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from autobahn.websocket.protocol import PreparedMessage

MAX_CLIENT_MESSAGE = 64 * 1024
# The echo endpoint's only exception: the Autobahn TestSuite echoes messages of
# up to 16 MiB (cases 9.1.6, 9.2.6) and compressed ones of 128 KiB (12.*, 13.*).
ECHO_MAX_MESSAGE = 16 * 1024 * 1024
SEND_BUFFER = 64 * 1024  # Linux doubles it: 128 KiB in the kernel
SERVER_NAME = "cpstream"

INSTANCES, LOGS, MESSAGES, ECHO = "instances", "logs", "messages", "echo"
# permessage-deflate (RFC 7692) pays on the log stream: text batches written
# per viewer anyway, 4x fewer bytes. On the instance and message streams it
# would replace one shared prepared frame per event with a deflate per client:
# 2-3.5x the server CPU per delivery and ~200 KiB instead of ~11 KiB per
# connection, to save ~150 bytes per event (docs/compression.md, measured by
# bench/compression.py). The echo endpoint mirrors the log stream, so the
# conformance suite covers the compressed path.
COMPRESSED = frozenset({LOGS, ECHO})


def prepare_frame(payload: bytes) -> PreparedMessage:
    """One server text frame, built once and written as is to every uncompressed subscriber.

    A connection that negotiated permessage-deflate (where the settings accept
    it) cannot share the bytes: Autobahn deflates the payload for it alone.
    """
    return PreparedMessage(payload, False, False, False)


def accept_deflate(offers: list[Any]) -> PerMessageDeflateOfferAccept | None:
    """Accept the client's first permessage-deflate offer, with the parameters it asks for."""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


def decline_compression(offers: list[Any]) -> None:
    """Decline every compression offer: frames go out as prepared."""
    return None


@dataclass(frozen=True)
class StreamSettings:
    """The one set of WebSocket protocol options every endpoint is built from.

    Autobahn's defaults are unsafe for us (any Origin, version 8, unlimited
    sizes, errors as TCP resets, an HTML status page): every one is set here,
    and nowhere else. Endpoints differ in two named ways only: whether they
    accept compression (``compressed``) and the echo endpoint's size limit.
    """

    max_message: int = MAX_CLIENT_MESSAGE
    open_handshake_timeout: float = 5.0
    close_handshake_timeout: float = 2.0
    send_buffer: int = SEND_BUFFER
    compressed: frozenset[str] = COMPRESSED
    server: str = SERVER_NAME

    def message_limit(self, endpoint: str) -> int:
        """The largest client frame and message ``endpoint`` accepts (1009 beyond).

        The one exception, for the echo endpoint only: the conformance suite's
        large-message cases. Every real stream keeps ``max_message``.
        """
        return ECHO_MAX_MESSAGE if endpoint == ECHO else self.max_message

    def apply(self, factory: WebSocketServerFactory, endpoint: str) -> None:
        """Set every protocol option of ``factory``, the factory of ``endpoint``."""
        limit = self.message_limit(endpoint)
        factory.setProtocolOptions(
            versions=[13],
            webStatus=False,
            utf8validateIncoming=True,
            requireMaskedClientFrames=True,
            maxFramePayloadSize=limit,
            maxMessagePayloadSize=limit,
            failByDrop=False,
            openHandshakeTimeout=self.open_handshake_timeout,
            closeHandshakeTimeout=self.close_handshake_timeout,
            autoPingInterval=0,
            tcpNoDelay=True,
            perMessageCompressionAccept=(
                accept_deflate if endpoint in self.compressed else decline_compression
            ),
        )
