"""A SQLite Spot holding one entry of each content type the dashboard renders.

Shared by the HTTP-level dashboard tests and the browser tests.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import beautyspot_async as bs

#: What the hostile entries try to run; a page that runs it sets window.__pwned.
SCRIPT = "<script>window.__pwned=1</script>"
ONERROR = '<img src=x onerror="window.__pwned=2">'

#: How many plain entries fill the index beyond the content entries.
FILLER = 120

MARKDOWN = "# Report title\n\nSome *emphasis* and a list:\n\n- one\n- two\n\n" + SCRIPT + ONERROR
SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20" onload="window.__pwned=3">'
    f"{SCRIPT}"
    '<rect width="40" height="20" fill="#3a7"/><circle cx="10" cy="10" r="5" fill="red"/>'
    '<image href="http://example.invalid/x.png"/></svg>'
)
CSV = "name,score\nalice,3\nbob,5\n" + SCRIPT + ",1\n"
JSON_VALUE = {"model": "m1", "scores": [1, 2, 3], "nested": {"html": SCRIPT}}
PLAIN = "line one\n" + SCRIPT + "\n" + ONERROR + "\nline four"
MERMAID = "graph TD; A-->B"


def tiny_png(width: int = 3, height: int = 2) -> bytes:
    """A valid RGB PNG of ``width`` x ``height`` pixels, built by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class ContentSpot:
    db: Path
    blobs: Path
    keys: dict[str, str]  # label -> cache key


def build_content(tmp_path: Path, *, filler: int = FILLER) -> ContentSpot:
    """Write the content entries, ``filler`` plain ones and one failure, then close."""
    db, blobs = tmp_path / "content.db", tmp_path / "content_blobs"
    keys: dict[str, str] = {}

    async def main() -> None:
        spot = bs.Spot("content", db=db, storage=blobs)

        def marked(label: str, content_type: str | None, value: Any, **options: Any) -> Any:
            async def fn(topic: str) -> Any:
                return value

            fn.__name__ = fn.__qualname__ = label
            return spot.mark(name=label, content_type=content_type, **options)(fn)

        entries = {
            "markdown": marked("markdown", "text/markdown", MARKDOWN),
            "png": marked("png", "image/png", tiny_png()),
            "svg": marked("svg", "image/svg+xml", SVG),
            "json": marked("json", "application/json", JSON_VALUE),
            "csv": marked("csv", "text/csv", CSV),
            "plain": marked("plain", "text/plain", PLAIN),
            "mermaid": marked("mermaid", "text/vnd.mermaid", MERMAID),
            "hostile": marked("hostile", None, {"title": SCRIPT, "img": ONERROR}),
            "expiring": marked("expiring", "text/plain", "soon gone", ttl=0.001),
        }

        @spot.mark(name="filler", version="v2")
        async def fill(n: int) -> int:
            return n * n

        async def broken(n: int) -> int:
            raise ValueError(f"bad input {n}")

        async with spot:
            for i in range(filler):
                await fill(i)
            for label, fn in entries.items():
                await fn(f"topic-{label}")
                keys[label] = fn.key(f"topic-{label}")
            report = await spot.map(spot.mark(name="broken")(broken), [13], retries=0)
            assert report.failed == 1

    asyncio.run(main())
    return ContentSpot(db=db, blobs=blobs, keys=keys)
