"""The live editor's routes served by aiohttp as ComfyUI serves them (bodies up to 100 MB accepted by the server, no
authentication): a request is capped before anything is built from it and its work runs off the event loop, so no
request can stall ComfyUI; a malformed request is answered 400 with what is wrong, a damaged pack 500 with how to
restore it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
import time
import types

import pytest

web = pytest.importorskip("aiohttp.web")
from aiohttp import ClientSession  # noqa: E402
from genaffect.models.expression import expression_library  # noqa: E402
from genaffect.models.files import packaged_data  # noqa: E402
from genaffect.nodes import web_routes  # noqa: E402

COMFYUI_MAX_UPLOAD = 100 * 1024 * 1024  # ComfyUI's --max-upload-size default: what its server accepts


@contextlib.asynccontextmanager
async def served():
    """The routes registered the way ComfyUI lets a pack (PromptServer.instance.routes) on an aiohttp app with
    ComfyUI's body limit, plus a /probe route that answers at once; yields (base URL, client session)."""
    table = web.RouteTableDef()
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(routes=table))
    saved = sys.modules.get("server")
    sys.modules["server"] = server
    try:
        web_routes.register_routes()
    finally:
        sys.modules.pop("server") if saved is None else sys.modules.__setitem__("server", saved)
    app = web.Application(client_max_size=COMFYUI_MAX_UPLOAD)
    app.add_routes(table)
    async def probe(request):
        return web.json_response({"ok": True})

    app.router.add_get("/probe", probe)
    runner = web.AppRunner(app, shutdown_timeout=0.5)  # the test does not wait out a refused upload's lingering
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with ClientSession() as session:
            yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", session
    finally:
        await runner.cleanup()


async def _request(session, url, method="GET", body=None):
    async with session.request(method, url, data=body, headers={"Content-Type": "application/json"}) as response:
        return response.status, await response.json()


def ask(method, path, body=None):
    async def one():
        async with served() as (base, session):
            return await _request(session, base + web_routes.PREFIX + path, method, body)
    return asyncio.run(one())


def preview(payload, raw=False):
    return ask("POST", "/preview", payload if raw else json.dumps(payload).encode())


def test_a_body_over_the_cap_is_refused_before_it_is_read_whether_its_length_is_announced_or_not(monkeypatch):
    read_when_refused = []
    real = web_routes._read_capped

    async def spy(request, limit):
        body = await real(request, limit)
        read_when_refused.append(request.content.total_bytes)  # what the server had taken in when it decided
        return body

    monkeypatch.setattr(web_routes, "_read_capped", spy)

    async def two_megabytes():  # streamed in 128 KB chunks with no Content-Length: the server must stop reading
        for _ in range(16):
            yield b" " * (128 * 1024)

    status, answer = ask("POST", "/preview", two_megabytes())
    assert status == 413 and "larger than 64 KB" in answer["error"]
    assert read_when_refused[-1] < 512 * 1024  # a fraction of the 2 MB sent
    announced = json.dumps({"node": "GenAffectExpressionPreset", "inputs": {"expressions": "happy, " * 300_000}})
    assert preview(announced.encode(), raw=True)[0] == 413  # 2 MB with its Content-Length: refused unread
    assert read_when_refused[-1] < 512 * 1024


def test_the_longest_list_under_the_cap_builds_at_most_the_preview_count(monkeypatch):
    built = []
    real = expression_library.presets
    monkeypatch.setattr(expression_library, "presets", lambda names, intensity=1.0: built.append(len(names))
                        or real(names, intensity))
    names = ", ".join(["happy", "sad"] * 4000)  # 8000 names, ~40 KB
    status, answer = preview({"node": "GenAffectExpressionPreset", "inputs": {"expressions": names}})
    assert status == 200 and answer["count"] == 8000 and len(answer["labels"]) == web_routes.MAX_PREVIEW
    assert built and max(built) <= web_routes.MAX_PREVIEW


def test_a_slow_answer_does_not_hold_up_other_requests(monkeypatch):
    """The work runs in a thread: while one preview takes a second, the server answers everyone else."""
    def slow_preview(payload):
        time.sleep(1.0)
        return {"labels": [], "blendshapes": [], "count": 0}

    monkeypatch.setattr(web_routes, "preview", slow_preview)
    finished = []

    async def scenario():
        async with served() as (base, session):
            async def timed(url, method="GET", body=None):
                await _request(session, url, method, body)
                finished.append(url.rsplit("/", 1)[-1])

            slow = asyncio.ensure_future(timed(base + web_routes.PREFIX + "/preview", "POST", b'{"node": "x"}'))
            await asyncio.sleep(0.2)  # the preview is being worked on
            await timed(base + "/probe")
            await slow

    asyncio.run(scenario())
    assert finished == ["probe", "preview"]  # the probe came back while the preview was still at work


@pytest.mark.parametrize("body, expected", [
    (b"{not json", "not JSON"), (b"\xff\xfe\xfa{}", "not JSON"), (b"", "not JSON"), (b"[" * 20000 + b"]" * 20000, "not JSON"),
    (b"[1, 2]", "JSON object"), (b"null", "JSON object"), (b'"text"', "JSON object"),
    (b'{"inputs": {}}', "no live preview for node None"), (b'{"node": "KSampler"}', "'KSampler'"),
    (b'{"node": "GenAffectExpressionEditor", "inputs": [1]}', "inputs must be an object"),
    (b'{"node": "GenAffectExpressionEditor", "inputs": {"intensity": NaN}}', "^intensity is nan"),
    (b'{"node": "GenAffectExpressionEditor", "inputs": {"intensity": "abc"}}', "^intensity is 'abc'"),
    (b'{"node": "GenAffectExpressionEditor", "inputs": {"smile_left": 1e308}}', "^smile_left is 1e\\+308"),
    (b'{"node": "GenAffectExpressionPreset", "inputs": {"expressions": 5}}', "expressions must be text"),
    (b'{"node": "GenAffectExpressionPreset", "inputs": {"expressions": "hapy"}}', "'hapy' is not in the expression"),
    (b'{"node": "GenAffectExpressionPreset", "inputs": {"expressions": "' + b"sad," * 10001 + b'"}}', "at most 10000"),
])
def test_a_malformed_request_is_answered_400_with_what_is_wrong(body, expected):
    status, answer = preview(body, raw=True)
    assert status == 400 and __import__("re").search(expected, answer["error"]), answer


def test_a_damaged_targets_file_answers_500_with_how_to_restore_it(tmp_path, monkeypatch):
    shutil.copytree(packaged_data.DATA_DIR, tmp_path / "data")
    (tmp_path / "data" / "estimator_targets.json").write_text('{"format": "genaffect.estimator_targets", "targ')
    monkeypatch.setattr(packaged_data, "DATA_DIR", str(tmp_path / "data"))
    expression_library.estimator_space.cache_clear()
    try:
        status, answer = ask("GET", "/data")
        assert status == 500 and "estimator_targets.json cannot be read" in answer["error"]
        assert "Reinstall or update the pack" in answer["error"]
        status, answer = preview({"node": "GenAffectExpressionPreset", "inputs": {"expressions": "happy"}})
        assert status == 500 and "estimator_targets.json" in answer["error"]
    finally:
        monkeypatch.undo()
        expression_library.estimator_space.cache_clear()
