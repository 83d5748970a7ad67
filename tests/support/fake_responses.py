"""The fake provider's OpenAI Responses API: create (whole or streamed), retrieve, delete, input items.

Like OpenAI's, it keeps what it answered (unless `store` is false) so a later
call can name it: GET /v1/responses/{id}, DELETE, GET .../input_items, and
`previous_response_id`, whose input is read as the conversation so far. An
unknown id is a 404 in OpenAI's words. The answer's text follows the model's
behaviour (its reply, or an echo of the last user text).
"""

from __future__ import annotations

import asyncio
import time

import orjson


class ResponsesApi:
    def __init__(self) -> None:
        self.stored: dict[str, dict] = {}  # id -> {"response": ..., "input_items": [...]}

    def items_of(self, payload: dict) -> list[dict]:
        value = payload.get("input")
        if isinstance(value, str):
            return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
        return [item for item in value or [] if isinstance(item, dict)]

    def unknown(self, response_id: str, param: str | None = None) -> dict:
        return {"error": {"message": f"Response with id '{response_id}' not found.", "type": "invalid_request_error",
                          "param": param, "code": "previous_response_not_found" if param else None}}

    def create(self, payload: dict, record_id: int, text: str, usage: dict) -> tuple[dict, list[dict]]:
        """The response object (stored unless `store` is false) and the input items it answered."""
        response_id = f"resp_fake{record_id:08d}"
        output = [{"type": "message", "id": f"msg_fake{record_id:08d}", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]}]
        response = {
            "id": response_id, "object": "response", "created_at": int(time.time()), "status": "completed",
            "model": payload.get("model"), "output": output, "instructions": payload.get("instructions"),
            "previous_response_id": payload.get("previous_response_id"), "metadata": payload.get("metadata") or {},
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "text": {"format": {"type": "text"}},
            "error": None, "incomplete_details": None, "temperature": payload.get("temperature"),
            "top_p": payload.get("top_p"), "max_output_tokens": payload.get("max_output_tokens"),
            "store": payload.get("store", True), "truncation": "disabled", "user": payload.get("user"),
            "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"],
                      "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
                      "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
        }
        items = [{"id": f"msg_in{record_id:08d}_{i}", **item} for i, item in enumerate(self.items_of(payload))]
        if payload.get("store", True) is not False:
            self.stored[response_id] = {"response": response, "input_items": items}
        return response, items

    def events(self, response: dict, pieces: list[str]) -> list[dict]:
        """The stream of a response, as OpenAI sends it: created, the text's deltas, done events, completed."""
        message = response["output"][0]
        started = {**response, "status": "in_progress", "output": [], "usage": None}
        events = [{"type": "response.created", "response": started},
                  {"type": "response.in_progress", "response": started},
                  {"type": "response.output_item.added", "output_index": 0,
                   "item": {**message, "status": "in_progress", "content": []}},
                  {"type": "response.content_part.added", "item_id": message["id"], "output_index": 0,
                   "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}]
        events += [{"type": "response.output_text.delta", "item_id": message["id"], "output_index": 0,
                    "content_index": 0, "delta": piece} for piece in pieces if piece]
        text = message["content"][0]["text"]
        events += [{"type": "response.output_text.done", "item_id": message["id"], "output_index": 0,
                    "content_index": 0, "text": text},
                   {"type": "response.content_part.done", "item_id": message["id"], "output_index": 0,
                    "content_index": 0, "part": message["content"][0]},
                   {"type": "response.output_item.done", "output_index": 0, "item": message},
                   {"type": "response.completed", "response": response}]
        return [{**event, "sequence_number": number} for number, event in enumerate(events)]

    def conversation_text(self, payload: dict) -> str:
        """The last user text of the input (what an echoing model says back)."""
        for item in reversed(self.items_of(payload)):
            if item.get("role") == "user":
                content = item.get("content")
                if isinstance(content, str):
                    return content
                return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))
        return ""

    def lookup(self, path: str, method: str) -> tuple[int, dict]:
        """GET /v1/responses/{id}, DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items."""
        parts = path.split("/responses/", 1)[1].split("/")
        response_id = parts[0]
        stored = self.stored.get(response_id)
        if stored is None:
            return 404, self.unknown(response_id)
        if len(parts) == 2 and parts[1] == "input_items" and method == "GET":
            data = stored["input_items"]
            return 200, {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": False}
        if len(parts) == 1 and method == "GET":
            return 200, stored["response"]
        if len(parts) == 1 and method == "DELETE":
            del self.stored[response_id]
            return 200, {"id": response_id, "object": "response", "deleted": True}
        return 404, {"error": {"message": f"no route {method} {path}", "type": "invalid_request_error", "code": None}}


async def send_events(send, events: list[dict], interval_seconds: float, gone: asyncio.Future,
                      drop_after: int | None = None) -> bool:
    """Named SSE events (`event: <type>`), as the Responses and Messages APIs send them; False if the caller left.
    With `drop_after`, the connection breaks after that many events."""
    for index, event in enumerate(events):
        if index and interval_seconds:
            await asyncio.wait([gone], timeout=interval_seconds)
        if gone.done():
            return False
        if drop_after is not None and index >= drop_after:
            raise ConnectionAbortedError("fake provider drops the stream")
        data = b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
        await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return True
