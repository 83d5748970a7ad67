"""A fake OpenAI-compatible model provider on loopback, for tests and benchmarks.

The only stand-in in the test suite: this machine cannot reach real providers.
Behaviour is chosen per model name (set at start with --behaviours or at run
time with POST /_fake/behaviours), for example::

    {"paced": {"chunks": 5, "chunk_interval_ms": 50},
     "boom": {"status": 500},
     "slow": {"latency_ms": 200},
     "stuck": {"hang": true},
     "drop": {"disconnect_after_chunks": 2}}

Every request is recorded (body, headers, the monotonic time each chunk was
sent, and whether the caller went away early): GET /_fake/log, DELETE /_fake/log.
Times are time.monotonic(), which on Linux is comparable across processes.

Run: python -m tests.support.fake_provider --port 9100 [--behaviours '{"m": {...}}']
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import time
from dataclasses import dataclass, field

import orjson
import uvicorn

from tests.support.fake_responses import ResponsesApi, send_events

DEFAULT_REPLY = "The quick brown fox jumps over the lazy dog."
SPEECH_HEADER = b"ID3\x04\x00fake-audio:"  # what the fake's "audio" starts with, then the input it was to say


@dataclass
class Behaviour:
    latency_ms: float = 0  # before a non-stream answer, or before the first chunk
    chunk_interval_ms: float = 0  # between stream chunks
    chunks: int = 5  # content chunks in a stream
    chunk_chars: int | None = None  # instead: stream the text in pieces of this many characters
    split_at: str | None = None  # instead: stream the (echoed) text in the pieces this marker separates
    reply: str = DEFAULT_REPLY
    echo: bool = False  # answer with the last user message instead of `reply`
    status: int = 200  # an error status answered with an OpenAI error envelope
    fail_first: int = 0  # with a `status`: only the first N calls with the same last user message fail, then 200
    stall_every: int = 0  # every Nth call of this model (1: each) waits stall_ms before it answers or streams
    stall_ms: float = 0
    retry_after: int | None = None
    hang: bool = False  # never answer (until the caller gives up)
    disconnect_after_chunks: int | None = None  # drop the connection mid-stream
    prompt_tokens: int = 11
    completion_tokens: int = 7
    headers: dict = field(default_factory=dict)  # more answer headers (as LiteLLM adds: x-litellm-cache-key ...)
    fixed: bool = False  # the same id and creation time in every answer: equal requests, byte-equal answers

    @classmethod
    def from_dict(cls, data: dict) -> Behaviour:
        known = cls.__dataclass_fields__
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"unknown behaviour fields: {sorted(unknown)}")
        return cls(**data)


@dataclass
class Record:
    id: int
    path: str
    model: str | None
    body: dict
    headers: dict
    received_at: float
    chunk_times: list[float] = field(default_factory=list)
    finished_at: float | None = None
    caller_disconnected: bool = False
    outcome: str = "pending"  # answered | error | hung | dropped | caller_disconnected


class FakeProvider:
    """The ASGI app. Holds the behaviours and the request log."""

    def __init__(self, behaviours: dict[str, dict] | None = None) -> None:
        self.behaviours: dict[str, Behaviour] = {}
        self.log: list[Record] = []
        self._ids = itertools.count(1)
        self._failed: dict[tuple, int] = {}  # (model, last user message) -> calls failed so far (fail_first)
        self._calls: dict[str, int] = {}  # model -> calls so far (stall_every)
        self.responses = ResponsesApi()
        self.set_behaviours(behaviours or {})

    def set_behaviours(self, behaviours: dict[str, dict]) -> None:
        self.behaviours.update({name: Behaviour.from_dict(b) for name, b in behaviours.items()})

    def behaviour_for(self, model: str | None) -> Behaviour:
        return self.behaviours.get(model or "", Behaviour())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        path, method = scope["path"], scope["method"]
        body = await _read_body(receive)
        if path.startswith("/_fake/"):
            await self._control(path, method, body, send)
            return
        if path == "/v1/models" and method == "GET":  # as LiteLLM lists its model groups (the in-process tier)
            await _send_json(send, 200, {"object": "list", "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "openai"} for name in sorted(self.behaviours)]})
            return
        try:
            payload = orjson.loads(body) if body and not path.endswith("/transcriptions") else {}
        except orjson.JSONDecodeError:
            await _send_json(send, 400, _error("invalid JSON", "invalid_request_error"))
            return
        record = Record(
            id=next(self._ids),
            path=path,
            model=payload.get("model"),
            body=payload,
            headers={k.decode(): v.decode() for k, v in scope["headers"]},
            received_at=time.monotonic(),
        )
        self.log.append(record)
        if path.endswith("/responses/input_tokens"):  # OpenAI's count of a prompt's tokens
            record.outcome = "answered"
            count = self.behaviour_for(record.model).prompt_tokens
            await _send_json(send, 200, {"object": "response.input_tokens", "input_tokens": count})
        elif "/responses/" in path:  # a stored response: retrieve, delete, input items
            status, answer = self.responses.lookup(path, method)
            record.outcome = "answered" if status == 200 else "error"
            await _send_json(send, status, answer)
        elif path.endswith("/responses"):
            await self._responses(payload, record, receive, send)
        elif path.endswith("/rerank"):
            await self._rerank(payload, record, send)
        elif path.endswith("/audio/transcriptions"):
            await self._transcription(body, record, send)
        elif path.endswith("/chat/completions"):
            await self._chat(payload, record, receive, send)
        elif path.endswith("/completions"):  # legacy text completions
            await self._chat(payload, record, receive, send, text_completion=True)
        elif path.endswith("/embeddings"):
            await self._embeddings(payload, record, send)
        elif path.endswith("/moderations"):
            await self._moderations(payload, record, send)
        elif path.endswith("/images/generations"):
            await self._images(payload, record, send)
        elif path.endswith("/audio/speech"):
            await self._speech(payload, record, send)
        else:
            record.outcome = "error"
            await _send_json(send, 404, _error(f"no route {path}", "invalid_request_error"))

    async def _control(self, path: str, method: str, body: bytes, send) -> None:
        if path == "/_fake/log" and method == "GET":
            await _send_json(send, 200, [r.__dict__ for r in self.log])
        elif path == "/_fake/log" and method == "DELETE":
            self.log.clear()
            await _send_json(send, 200, {"cleared": True})
        elif path == "/_fake/behaviours" and method == "POST":
            try:
                self.set_behaviours(orjson.loads(body))
            except (ValueError, TypeError) as exc:
                await _send_json(send, 400, {"error": str(exc)})
                return
            await _send_json(send, 200, {"models": sorted(self.behaviours)})
        else:
            await _send_json(send, 404, {"error": "unknown control route"})

    async def _chat(self, payload: dict, record: Record, receive, send, text_completion: bool = False) -> None:
        behaviour = self.behaviour_for(record.model)
        if await self._before_answer(behaviour, record, receive, send):
            return
        if text_completion:
            prompt = payload.get("prompt")
            asked = prompt if isinstance(prompt, str) else " ".join(p for p in prompt or [] if isinstance(p, str))
            text = asked if behaviour.echo else behaviour.reply
        else:
            text = _last_user_text(payload) if behaviour.echo else behaviour.reply
        usage = _usage(behaviour)
        if payload.get("stream"):
            include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
            await self._stream(behaviour, record, text, usage if include_usage else None, receive, send, text_completion)
            return
        answer = _completion(record, text.replace(behaviour.split_at or "\x00", ""), usage, behaviour.fixed)
        answer["choices"] = [{**answer["choices"][0], "index": i} for i in range(_choices(record))]
        if text_completion:
            answer = {**answer, "object": "text_completion",
                      "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}]}
        await _send_json(send, 200, answer, _headers(behaviour))
        record.outcome, record.finished_at = "answered", time.monotonic()

    async def _before_answer(self, behaviour: Behaviour, record: Record, receive, send) -> bool:
        """Latency, hangs and error statuses. True when the request is dealt with."""
        if behaviour.hang:
            record.outcome = "hung"
            await _wait_for_disconnect(receive)
            record.caller_disconnected, record.finished_at = True, time.monotonic()
            return True
        if behaviour.latency_ms:
            await asyncio.sleep(behaviour.latency_ms / 1000)
        streamed = isinstance(record.body, dict) and bool(record.body.get("stream"))
        if not streamed and (stall := self._stall(behaviour, record)):  # a stream stalls after its headers
            watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
            await _sleep_unless(watcher, stall)
            if watcher.done():
                record.outcome, record.caller_disconnected = "caller_disconnected", True
                record.finished_at = time.monotonic()
                return True
            watcher.cancel()
        if behaviour.status != 200 and behaviour.fail_first:  # a failure sequence: fail N times, then answer
            key = (record.model, _last_user_text(record.body) if isinstance(record.body, dict) else "")
            self._failed[key] = self._failed.get(key, 0) + 1
            if self._failed[key] > behaviour.fail_first:
                return False
        if behaviour.status != 200:
            headers = [(b"retry-after", str(behaviour.retry_after).encode())] if behaviour.retry_after else []
            kind = "rate_limit_error" if behaviour.status == 429 else "server_error"
            await _send_json(send, behaviour.status, _error(f"fake provider status {behaviour.status}", kind), headers)
            record.outcome, record.finished_at = "error", time.monotonic()
            return True
        return False

    def _stall(self, behaviour: Behaviour, record: Record) -> float:
        """Seconds this call stalls before its first token: every `stall_every`th call of the model, else 0."""
        if not behaviour.stall_every:
            return 0.0
        self._calls[record.model] = calls = self._calls.get(record.model, 0) + 1
        return behaviour.stall_ms / 1000 if calls % behaviour.stall_every == 0 else 0.0

    async def _stream(self, behaviour, record, text, usage, receive, send, text_completion: bool = False) -> None:
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), *_headers(behaviour)],
        })
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        if stall := self._stall(behaviour, record):  # headers sent, the first token late (a slow provider's TTFT)
            await _sleep_unless(watcher, stall)
        try:
            if behaviour.split_at is not None:
                pieces = text.split(behaviour.split_at)
            elif behaviour.chunk_chars:
                pieces = [text[i:i + behaviour.chunk_chars] for i in range(0, len(text), behaviour.chunk_chars)]
            else:
                pieces = _split(text, behaviour.chunks)
            choices = 1 if text_completion else _choices(record)
            for index, piece in enumerate(pieces):
                if index and behaviour.chunk_interval_ms:
                    await _sleep_unless(watcher, behaviour.chunk_interval_ms / 1000)
                if watcher.done():
                    record.caller_disconnected, record.outcome = True, "caller_disconnected"
                    return
                if behaviour.disconnect_after_chunks is not None and index >= behaviour.disconnect_after_chunks:
                    record.outcome = "dropped"
                    raise ConnectionAbortedError("fake provider drops the stream")
                delta = {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
                for choice in range(choices):  # each choice's piece in its own chunk, as OpenAI interleaves them
                    await _send_event(send, _text_chunk(record, piece, None) if text_completion
                                      else _chunk(record, delta, None, behaviour.fixed, choice))
                record.chunk_times.append(time.monotonic())
            for choice in range(choices):
                await _send_event(send, _text_chunk(record, "", "stop") if text_completion
                                  else _chunk(record, {}, "stop", behaviour.fixed, choice))
            if usage:
                await _send_event(send, {**_chunk(record, {}, None, behaviour.fixed), "choices": [], "usage": usage})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
            record.outcome = "answered"
        finally:
            record.finished_at = time.monotonic()
            watcher.cancel()

    async def _embeddings(self, payload: dict, record: Record, send) -> None:
        behaviour = self.behaviour_for(record.model)
        if await self._before_answer(behaviour, record, _never_disconnects, send):
            return
        inputs = payload.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        dims = int(payload.get("dimensions") or 8)
        data = [{"object": "embedding", "index": i, "embedding": _vector(str(x), dims)} for i, x in enumerate(inputs)]
        usage = {"prompt_tokens": behaviour.prompt_tokens, "total_tokens": behaviour.prompt_tokens}
        await _send_json(send, 200, {"object": "list", "data": data, "model": record.model, "usage": usage},
                         _headers(behaviour))
        record.outcome, record.finished_at = "answered", time.monotonic()


    async def _moderations(self, payload: dict, record: Record, send) -> None:
        """Flags an input that says "attack"; scores from the text's hash otherwise."""
        behaviour = self.behaviour_for(record.model)
        if await self._before_answer(behaviour, record, _never_disconnects, send):
            return
        inputs = payload.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        texts = [x if isinstance(x, str) else (x or {}).get("text", "") for x in inputs]
        results = [moderation_result(text) for text in texts]
        await _send_json(send, 200, {"id": f"modr-fake-{record.id}", "model": record.model, "results": results},
                         _headers(behaviour))
        record.outcome, record.finished_at = "answered", time.monotonic()

    async def _speech(self, payload: dict, record: Record, send) -> None:
        """Audio: a fake header, then what was to be said, in two parts (so that it is seen to flow)."""
        behaviour = self.behaviour_for(record.model)
        if await self._before_answer(behaviour, record, _never_disconnects, send):
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"audio/mpeg"), *_headers(behaviour)]})
        await send({"type": "http.response.body", "body": SPEECH_HEADER, "more_body": True})
        await send({"type": "http.response.body", "body": str(payload.get("input")).encode(), "more_body": False})
        record.outcome, record.finished_at = "answered", time.monotonic()

    async def _images(self, payload: dict, record: Record, send) -> None:
        behaviour = self.behaviour_for(record.model)
        if await self._before_answer(behaviour, record, _never_disconnects, send):
            return
        count = int(payload.get("n") or 1)
        data = [{"url": image_url(record.id, i), "revised_prompt": payload.get("prompt")} for i in range(count)]
        await _send_json(send, 200, {"created": int(time.time()), "data": data}, _headers(behaviour))
        record.outcome, record.finished_at = "answered", time.monotonic()


    async def _responses(self, payload: dict, record: Record, receive, send) -> None:
        """POST /v1/responses: the text as chat would answer it, in the Responses shape, stored for later calls."""
        behaviour = self.behaviour_for(record.model)
        previous = payload.get("previous_response_id")
        if previous and previous not in self.responses.stored:
            record.outcome = "error"
            await _send_json(send, 404, self.responses.unknown(previous, "previous_response_id"))
            return
        if await self._before_answer(behaviour, record, receive, send):
            return
        text = self.responses.conversation_text(payload) if behaviour.echo else behaviour.reply
        response, _ = self.responses.create(payload, record.id, text, _usage(behaviour))
        if not payload.get("stream"):
            await _send_json(send, 200, response, _headers(behaviour))
            record.outcome, record.finished_at = "answered", time.monotonic()
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), *_headers(behaviour)]})
        pieces = ([text[i:i + behaviour.chunk_chars] for i in range(0, len(text), behaviour.chunk_chars)]
                  if behaviour.chunk_chars else _split(text, behaviour.chunks))
        gone = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            finished = await send_events(send, self.responses.events(response, pieces),
                                         behaviour.chunk_interval_ms / 1000, gone,
                                         behaviour.disconnect_after_chunks and behaviour.disconnect_after_chunks + 4)
            record.outcome = "answered" if finished else "caller_disconnected"
            record.caller_disconnected = not finished
        finally:
            record.finished_at = time.monotonic()
            gone.cancel()

    async def _rerank(self, payload: dict, record: Record, send) -> None:
        """Cohere's rerank: documents that share more words with the query rank higher."""
        behaviour = self.behaviour_for(record.model)
        if await self._before_answer(behaviour, record, _never_disconnects, send):
            return
        query = set(str(payload.get("query", "")).lower().split())
        documents = [d if isinstance(d, str) else (d or {}).get("text", "") for d in payload.get("documents") or []]
        scores = [len(query & set(d.lower().split())) / (len(query) or 1) for d in documents]
        ranked = sorted(range(len(documents)), key=lambda i: -scores[i])[: payload.get("top_n") or len(documents)]
        results = [{"index": i, "relevance_score": scores[i],
                    **({"document": {"text": documents[i]}} if payload.get("return_documents") else {})}
                   for i in ranked]
        answer = {"id": f"rerank-fake-{record.id}", "results": results,
                  "meta": {"billed_units": {"search_units": 1},
                           "tokens": {"input_tokens": behaviour.prompt_tokens, "output_tokens": 0}}}
        await _send_json(send, 200, answer, _headers(behaviour))
        record.outcome, record.finished_at = "answered", time.monotonic()

    async def _transcription(self, body: bytes, record: Record, send) -> None:
        """A multipart upload; the "audio" is text (tests send UTF-8 bytes), which is what it transcribes to."""
        form = _multipart(body, record.headers.get("content-type", ""))
        record.model, record.body = form.get("model"), {k: v for k, v in form.items() if k != "file"}
        record.body["file_bytes"] = len(form.get("file") or b"")
        behaviour = self.behaviour_for(record.model)
        if await self._before_answer(behaviour, record, _never_disconnects, send):
            return
        text = (form.get("file") or b"").decode("utf-8", "replace") if behaviour.echo else behaviour.reply
        answer = {"text": text, "usage": {"type": "tokens", "input_tokens": behaviour.prompt_tokens,
                                          "input_token_details": {"audio_tokens": behaviour.prompt_tokens,
                                                                  "text_tokens": 0},
                                          "output_tokens": behaviour.completion_tokens,
                                          "total_tokens": behaviour.prompt_tokens + behaviour.completion_tokens}}
        await _send_json(send, 200, answer, _headers(behaviour))
        record.outcome, record.finished_at = "answered", time.monotonic()


def moderation_result(text: str) -> dict:
    """The fake's verdict on one moderation input: flagged for violence when it says "attack"."""
    return {"flagged": "attack" in text, "categories": {"violence": "attack" in text},
            "category_scores": {"violence": 0.99 if "attack" in text else _vector(text, 1)[0] / 10}}


def image_url(request_number: int, index: int) -> str:
    """Where the fake says the `index`th image of its `request_number`th request is (its log's `id`)."""
    return f"https://images.fake.test/{request_number}-{index}.png"


def _usage(behaviour: Behaviour) -> dict:
    return {"prompt_tokens": behaviour.prompt_tokens, "completion_tokens": behaviour.completion_tokens,
            "total_tokens": behaviour.prompt_tokens + behaviour.completion_tokens}


def _multipart(body: bytes, content_type: str) -> dict:
    """The fields of a multipart/form-data body: text fields as str, the file as bytes."""
    from python_multipart.multipart import MultipartParser, parse_options_header  # installed with FastAPI's forms

    _, options = parse_options_header(content_type)
    fields: dict = {}
    current: dict = {}

    def on_part_begin():
        current.clear()
        current["data"] = b""

    def on_header_field(data, start, end):
        current["header"] = data[start:end].decode().lower()

    def on_header_value(data, start, end):
        if current.get("header") == "content-disposition":
            current["disposition"] = data[start:end].decode()

    def on_part_data(data, start, end):
        current["data"] += data[start:end]

    def on_part_end():
        _, disposition = parse_options_header(current.get("disposition", ""))
        name = disposition.get(b"name", b"").decode()
        fields[name] = current["data"] if b"filename" in disposition else current["data"].decode()

    parser = MultipartParser(options[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_part_data": on_part_data, "on_part_end": on_part_end})
    parser.write(body)
    parser.finalize()
    return fields


def _completion(record: Record, text: str, usage: dict, fixed: bool = False) -> dict:
    return {
        "id": "chatcmpl-fake-fixed" if fixed else f"chatcmpl-fake-{record.id}",
        "object": "chat.completion",
        "created": 1700000000 if fixed else int(time.time()),
        "model": record.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": usage,
    }


def _chunk(record: Record, delta: dict, finish_reason: str | None, fixed: bool = False, index: int = 0) -> dict:
    return {
        "id": "chatcmpl-fake-fixed" if fixed else f"chatcmpl-fake-{record.id}",
        "object": "chat.completion.chunk",
        "created": 1700000000 if fixed else int(time.time()),
        "model": record.model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}],
    }


def _choices(record: Record) -> int:
    """The request's `n` (chat): how many choices to answer with."""
    n = record.body.get("n") if isinstance(record.body, dict) else None
    return n if isinstance(n, int) and 1 <= n <= 8 else 1


def _text_chunk(record: Record, text: str, finish_reason: str | None) -> dict:
    return {"id": f"cmpl-fake-{record.id}", "object": "text_completion", "created": int(time.time()),
            "model": record.model, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]}


def _headers(behaviour: Behaviour) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), str(value).encode()) for name, value in behaviour.headers.items()]


def _error(message: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind, "code": None}}


def _split(text: str, parts: int) -> list[str]:
    parts = max(1, parts)
    size = -(-len(text) // parts) or 1
    pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
    return pieces + [""] * (parts - len(pieces))


def _last_user_text(payload: dict) -> str:
    for message in reversed(payload.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content)
    return ""


def _vector(text: str, dims: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(digest[i % len(digest)] / 255, 6) for i in range(dims)]


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _wait_for_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _never_disconnects() -> dict:
    await asyncio.Future()
    return {}


async def _sleep_unless(watcher: asyncio.Future, seconds: float) -> None:
    await asyncio.wait([watcher], timeout=seconds)


async def _send_json(send, status: int, body, extra_headers=()) -> None:
    payload = orjson.dumps(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + list(extra_headers)})
    await send({"type": "http.response.body", "body": payload})


async def _send_event(send, event: dict) -> None:
    await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(event) + b"\n\n", "more_body": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--behaviours", default="{}", help="JSON object: model name -> behaviour")
    args = parser.parse_args()
    app = FakeProvider(orjson.loads(args.behaviours))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", loop="uvloop", http="httptools")


if __name__ == "__main__":
    main()
