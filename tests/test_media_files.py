"""The file side of media downloads: what a cancelled download leaves on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from meigen_async import GalleryImage, GallerySession

_PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + (8).to_bytes(4, "big") * 2


async def test_a_download_cancelled_mid_body_leaves_no_temporary_and_no_final_file(
    tmp_path: Path,
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    requests: list[str] = []

    async def stalls(request: web.Request) -> web.StreamResponse:
        requests.append(request.path)
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = 4 << 20
        await resp.prepare(request)
        # Past one batch (1 MiB): a worker thread has opened and written the temporary file.
        await resp.write(_PNG + b"\0" * (1 << 20) + b"\0" * 70000)
        started.set()
        await release.wait()
        return resp

    app = web.Application()
    app.router.add_get("/m.png", stalls)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        image = GalleryImage(id="1", media_urls=(f"http://127.0.0.1:{port}/m.png",))
        async with GallerySession(f"http://127.0.0.1:{port}", media_hosts=["127.0.0.1"]) as session:
            task = asyncio.ensure_future(session.download_media(image, tmp_path))
            await started.wait()
            await asyncio.sleep(0.05)  # let the first bytes reach the file
            task.cancel()
            await asyncio.wait([task])
            assert task.cancelled()
        assert requests == ["/m.png"]
        assert sorted(p.name for p in (tmp_path / "1").iterdir()) == []
    finally:
        release.set()
        await runner.cleanup()
