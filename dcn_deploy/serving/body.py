"""Request bodies within ``max_request_bytes``: refused from ``Content-Length`` before a byte is read,
cut while reading a body without one (chunked), and bounded again after gzip/deflate decompression
(a small body that inflates past the limit, a zip bomb, is refused without inflating the rest)."""
from __future__ import annotations

import zlib
from typing import AsyncIterator

from dcn_deploy.serving.protocol import BadRequest

FLAG = "--max-request-bytes"


def _too_large(what: str, limit: int) -> BadRequest:
    return BadRequest(f"{what}, more than this server's limit of {limit} bytes ({FLAG})", status=413)


def check_content_length(declared: str | None, limit: int) -> None:
    """413 when the declared ``Content-Length`` exceeds ``limit`` (before reading the body)."""
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise BadRequest(f"Content-Length must be an integer, got '{declared}'") from None
    if length > limit:
        raise _too_large(f"the body is {length} bytes (Content-Length)", limit)


async def read_body(stream: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The body from ``stream`` (Starlette's ``request.stream()``), at most ``limit`` bytes."""
    check_content_length(declared, limit)
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise _too_large(f"the body runs past {limit} bytes", limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _inflate(body: bytes, wbits: int, encoding: str, limit: int) -> bytes:
    """Decompress at most ``limit + 1`` bytes at a time; gzip may hold several members in a row."""
    parts, total, data = [], 0, body
    while True:
        inflater = zlib.decompressobj(wbits)
        while not inflater.eof:
            part = inflater.decompress(data, limit - total + 1)
            total += len(part)
            if total > limit:
                raise _too_large(f"the {encoding} body inflates past {limit} bytes", limit)
            parts.append(part)
            data = inflater.unconsumed_tail
            if not part and not data:
                raise BadRequest(f"the body is not valid {encoding} data: it ends before the compressed stream does")
        data = inflater.unused_data
        if not data:
            return b"".join(parts)
        if encoding != "gzip":
            raise BadRequest(f"the body is not valid {encoding} data: {len(data)} bytes follow the compressed stream")


def decode_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` decompressed by its ``Content-Encoding`` (none, identity, gzip, deflate), at most ``limit``
    bytes; 415 for another encoding."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadRequest(f"Content-Encoding '{encoding}' is not supported (gzip, deflate or none)", status=415)
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    try:
        return _inflate(body, wbits, encoding, limit)
    except zlib.error as error:
        raise BadRequest(f"the body is not valid {encoding} data: {error}") from None
