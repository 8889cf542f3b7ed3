"""The cloud's WebSocket protocol: uvicorn's, with permessage-deflate at zlib level 1 (a live
frame is compressed once per client; level 6 cost 2.7x the CPU for 23% fewer bytes)."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)

from cloud import wsproto
from common.reading import ENCODER
from tests.live.helpers import ingest, next_message
from tests.support.cloud import Bench, CloudServer


async def _app(scope: Any, receive: Any, send: Any) -> None:  # never called
    raise AssertionError


def test_the_protocol_offers_deflate_at_level_one() -> None:
    config = Config(app=_app, ws=wsproto.IMPORT_PATH)
    config.load()
    assert config.ws_protocol_class is wsproto.WebSocketProtocol
    proto = wsproto.WebSocketProtocol(config, ServerState(), {}, _loop=asyncio.new_event_loop())
    (factory,) = proto.conn.available_extensions
    assert factory.compress_settings == {"memLevel": 5, "level": 1}
    # Without deflate in the config, none is offered.
    plain = Config(app=_app, ws=wsproto.IMPORT_PATH, ws_per_message_deflate=False)
    plain.load()
    proto = wsproto.WebSocketProtocol(plain, ServerState(), {}, _loop=asyncio.new_event_loop())
    assert proto.conn.available_extensions == []


async def test_the_server_compresses_frames_at_level_one(server: CloudServer, bench: Bench) -> None:
    # The stream of a real `benchlink-cloud serve`: a client that offers deflate gets it, and
    # a frame's compressed size is what level 1 gives (level 6 would give fewer bytes).
    url = server.url.replace("http://", "ws://") + (
        f"/api/v1/telemetry/stream?sensor_id={bench.sensor_id}&batch=true"
    )
    sizes: list[int] = []
    # No context takeover: each message is compressed on its own, so its size can be checked.
    offer = ClientPerMessageDeflateFactory(server_no_context_takeover=True)
    async with connect(
        url, additional_headers=bench.headers, max_size=None, compression=None, extensions=[offer]
    ) as ws:
        (ext,) = ws.protocol.extensions
        assert isinstance(ext, PerMessageDeflate)
        decode = ext.decode

        def spy(frame: Any, *, max_size: int | None = None) -> Any:
            sizes.append(len(frame.data))
            return decode(frame, max_size=max_size)

        ext.decode = spy  # type: ignore[method-assign]
        assert (await next_message(ws))["type"] == "subscribed"
        await ingest(server.url, bench, [float(i % 97) for i in range(1000)])
        frame = await next_message(ws)
    assert frame["type"] == "readings" and len(frame["items"]) == 1000
    text = '{"type":"readings","items":[' + ",".join(_dumps(i) for i in frame["items"]) + "]}"
    level = {lv: _deflated(text.encode(), lv) for lv in (1, 6)}
    assert level[1] != level[6]
    assert level[1] in sizes and level[6] not in sizes, (sizes, level)


def _dumps(item: dict[str, Any]) -> str:
    """A reading's text as the server encodes it (the reading contract's encoder)."""
    return ENCODER.encode(item).decode()


def _deflated(data: bytes, level: int) -> int:
    co = zlib.compressobj(level, zlib.DEFLATED, -12, 5)
    out = co.compress(data) + co.flush(zlib.Z_SYNC_FLUSH)
    return len(out) - 4  # permessage-deflate drops the empty block's 00 00 ff ff
