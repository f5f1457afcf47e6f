"""A stand-in OpenAI-compatible chat-completions server on 127.0.0.1 (a real HTTP server in
a thread), for the judge's and the storytellers' tests.

The ``serve`` fixture (conftest.py) starts one; ``reply(n, body)`` answers the n-th request (counting from 1)
with ``(status, content, delay_s)`` or ``(status, content, delay_s, headers)``: a 200's
content is wrapped in a chat completion, another status's in ``{"error": ...}``, and a
:class:`Raw` content is sent as it is (malformed JSON). The server records every body,
path and headers, the time of each request and the most requests it held at once.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer



class Raw(str):
    """A response body sent as it is, not as JSON."""


def completion(content: str) -> dict:
    return {"id": "x", "object": "chat.completion", "model": "stand-in",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}]}


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping must not block shutdown

    def __init__(self, reply):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.reply, self.lock = reply, threading.Lock()
        self.requests, self.headers, self.times = [], [], []
        self.active = self.max_active = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            server.requests.append(body)
            server.headers.append((self.path, dict(self.headers)))
            server.times.append(time.monotonic())
            n = len(server.requests)
            server.active += 1
            server.max_active = max(server.max_active, server.active)
        try:
            status, content, delay, *extra = server.reply(n, body)
            time.sleep(delay)
            if isinstance(content, Raw):
                payload = str(content)
            else:
                payload = json.dumps(completion(content) if status == 200 else {"error": content})
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload.encode())))
            for name, value in (extra[0] if extra else {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload.encode())
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests)
        finally:
            with server.lock:
                server.active -= 1

    def log_message(self, *args):
        pass


def message_text(body: dict) -> str:
    """The text part of a request's user message."""
    content = body["messages"][0]["content"]
    return content if isinstance(content, str) else content[0]["text"]


def image_urls(body: dict) -> list[str]:
    """The image data URLs of a request, in order."""
    content = body["messages"][0]["content"]
    return [] if isinstance(content, str) else [p["image_url"]["url"] for p in content[1:]]


def start(reply) -> ChatServer:
    """A :class:`ChatServer` answering with ``reply``, serving in a daemon thread."""
    server = ChatServer(reply)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                     daemon=True).start()
    return server
