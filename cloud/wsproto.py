"""uvicorn's WebSocket protocol (websockets, sans-I/O) with permessage-deflate at zlib level 1.

Each live frame is compressed once per client. A 1000-reading ``readings`` frame is ~330 KB of
JSON; at uvicorn's settings (level 6) it took 1.9 ms to deflate on the benchmark machine, at
level 1 0.7 ms, for 17 KB on the wire instead of 13 KB. At 10,000 readings/s that is 12 ms of
CPU a second per watching client saved, and 1.2 ms less latency per batch. Window and memory
settings stay uvicorn's. ``benchlink-cloud serve`` runs uvicorn with ``ws=`` this class."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

#: For ``uvicorn.run(ws=...)`` (an import string, so that every worker process finds it).
IMPORT_PATH = "cloud.wsproto:WebSocketProtocol"


def deflate() -> ServerPerMessageDeflateFactory:
    return ServerPerMessageDeflateFactory(
        server_max_window_bits=12,
        client_max_window_bits=12,
        compress_settings={"memLevel": 5, "level": 1},
    )


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.ws_per_message_deflate:
            # uvicorn offers no setting for the level; the negotiation reads this list.
            self.conn.available_extensions = [deflate()]
