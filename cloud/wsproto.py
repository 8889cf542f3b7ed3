"""uvicorn's WebSocket protocol (websockets, sans-I/O) with permessage-deflate at zlib level 1.

Each live frame is compressed once per client. A 1000-reading ``readings`` frame is ~330 KB of
JSON; at uvicorn's settings (level 6) it took 1.9 ms to deflate on the benchmark machine, at
level 1 0.7 ms, for 17 KB on the wire instead of 13 KB. At 10,000 readings/s that is 12 ms of
CPU a second per watching client saved, and 1.2 ms less latency per batch. Window and memory
settings stay uvicorn's. ``benchlink-cloud serve`` runs uvicorn with ``ws=`` this class.

A handshake still in the app when the server stops is answered 503 (Retry-After, problem+json),
not uvicorn's 500: a client that reconnected as the server was stopping (its stream had just
been closed with 1001) read the 500 as a server fault and gave up instead of resuming."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Response

from cloud.problems import problem_for, server_stopping

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

    def shutdown(self) -> None:
        if self.handshake_complete or self.initial_response is not None or self.close_sent:
            super().shutdown()
            return
        self.stop_keepalive()
        problem = problem_for(server_stopping())
        headers = Headers(
            [
                ("Connection", "close"),
                ("Content-Length", str(len(problem.body))),
                *(
                    (k.decode(), v.decode())
                    for k, v in problem.raw_headers
                    if k != b"content-length"
                ),
            ]
        )
        self.conn.send_response(Response(503, "Service Unavailable", headers, bytes(problem.body)))
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()
