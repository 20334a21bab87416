"""Listen to a ComfyUI host's websocket (/ws?clientId=...) in a background thread (aiohttp, a host dependency).

    with WsListener(host.url, host.client_id) as ws:
        host.run(prompt)
    ws.events("lean.llm.stream")    # list of data dicts, in arrival order
"""
import asyncio
import json
import threading
import time


class WsListener:
    def __init__(self, url, client_id):
        self.url = url.replace("http://", "ws://") + f"/ws?clientId={client_id}"
        self.messages = []
        self._stop = None
        self._ready = threading.Event()
        self._thread = None
        self._error = None

    async def _main(self):
        import aiohttp
        self._stop = asyncio.Event()
        try:
            async with aiohttp.ClientSession() as s, s.ws_connect(self.url) as ws:
                self._ready.set()
                while not self._stop.is_set():
                    try:
                        msg = await asyncio.wait_for(ws.receive(), 0.2)
                    except asyncio.TimeoutError:
                        continue
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        d = json.loads(msg.data)
                        self.messages.append((time.monotonic(), d.get("type"), d.get("data")))
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
        except Exception as e:  # surfaced by __enter__/events
            self._error = e
            self._ready.set()

    def __enter__(self):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(20) or self._error:
            raise RuntimeError(f"websocket {self.url} did not connect: {self._error}")
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        time.sleep(0.3)  # let the last messages arrive
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        return False

    def events(self, kind):
        return [d for _, t, d in self.messages if t == kind]

    def wait_for(self, pred, timeout=60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            for _, t, d in list(self.messages):
                if pred(t, d):
                    return d
            time.sleep(0.02)
        raise TimeoutError("websocket message not seen")
