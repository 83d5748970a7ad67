"""What clients may send on each route, and one adapter per API shape for the steps that read it.

A step of the pipeline (PII now; guardrails, cache and limits next) reads and
rewrites the texts of a request and of its answer through the route's adapter,
so it is written once for every API shape: the texts a user wrote
(`user_texts`), the texts a model wrote in a whole answer (`answer_texts`) and
in each streamed chunk (`stream_texts`), and what a count of the prompt's tokens
reads (`prompt`).

Each route also names the fields a client may send (`fields`, an allow-list
checked before any step reads the body). That is how the gateway owns every
field LiteLLM acts on: fallbacks, retries, timeouts, deployment and provider
choice, credentials, cache controls and mocks are not in any API a client
speaks, so a client can never send them; the gateway sets them itself from its
config. A tenant or endpoint may let named provider-specific fields through
(gateway.yaml `fields.allow`), never one of LITELLM_OWNED below.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import orjson

from wrapper.errors import GatewayError
from wrapper.routes.shapes import Object

Slot = tuple[object, object]  # (container, key): container[key] is a text a step may read and replace


@dataclass(frozen=True)
class StreamText:
    """A piece of text in one streamed chunk, and which text it continues."""

    key: tuple  # the text it belongs to: a choice's content, a tool call's arguments
    container: dict
    field: str
    kind: str  # "content" (what the model says), "arguments" (what it passes to a tool); "whole": the text
    # again, complete (a Responses `*.done` event), restored as one, not counted again; "end": no text, the text
    # of `key` ends with this event (Anthropic's content_block_stop)
    final: bool  # the text ends with this chunk: nothing of it may be held back


class Unreadable(Exception):
    """Input a text step cannot read (token ids): the step decides what that means for its policy."""

    def __init__(self, param: str) -> None:
        super().__init__(param)
        self.param = param


class Route(Protocol):
    name: str  # for logs and metrics
    path: str  # LiteLLM's path for it
    fields: Object  # the allow-list
    binary_answer: bool  # the answer is not JSON (audio): passed through as it arrives, read by no step
    metadata_field: str  # where the gateway's sealed metadata travels to LiteLLM
    stream_usage_option: bool  # the gateway asks for a stream's usage with `stream_options.include_usage`
    ends_with_done: bool  # its streams end with `data: [DONE]`; else with an event of their own (`finished`)
    passed_headers: tuple[str, ...]  # request headers of its API that LiteLLM should see (anthropic-version)
    multipart: bool  # its request is a multipart upload: a file beside the fields

    def check(self, body: dict) -> None: ...  # what the allow-list cannot say (one of two fields required ...)

    def user_texts(self, body: dict, extra_fields: frozenset[str], system: bool = True) -> Iterator[Slot]: ...

    def answer_texts(self, answer: dict) -> Iterator[Slot]: ...

    def stream_texts(self, chunk: dict) -> Iterator[StreamText]: ...

    def closing_chunks(self, held: dict[tuple, str]) -> list[dict]: ...  # events carrying texts still held

    def started(self, chunk: dict) -> bool: ...  # the event carries the first content (time to first token)

    def finished(self, chunk: dict) -> bool: ...  # the event ends the answer (its protocol's own end)

    def usage(self, answer: dict) -> dict | None: ...  # an answer's or event's usage, in chat's terms

    def served_model(self, chunk: dict) -> object: ...

    def stream_error(self, chunk: dict) -> dict | None: ...  # the error a streamed event reports, if it is one

    def error_event(self, error: GatewayError) -> bytes: ...  # how a broken stream says so, in its protocol

    def sse(self, chunk: dict) -> bytes: ...  # an event of this route's stream

    def prompt(self, body: dict) -> dict: ...


def texts_as_prompt(route: Route, body: dict) -> dict:
    """A prompt to count, for a route whose texts are not messages LiteLLM's counter reads: its user texts, joined."""
    return {"prompt": "\n".join(container[key] for container, key in route.user_texts(body, frozenset()))}


class OpenAIShaped:
    """What the OpenAI-shaped routes share: `data:`-only streams ended by [DONE], usage and model at the top."""

    binary_answer = False
    metadata_field = "metadata"
    stream_usage_option = True  # a stream reports its usage when `stream_options.include_usage` asks
    ends_with_done = True  # a stream ends with `data: [DONE]`
    passed_headers: tuple[str, ...] = ()  # request headers of the API passed on to LiteLLM
    multipart = False  # the request is a multipart upload (wrapper.upload), not JSON

    def check(self, body: dict) -> None:
        pass

    def finished(self, chunk: dict) -> bool:
        return False  # `data: [DONE]` ends these streams

    def usage(self, answer: dict) -> dict | None:
        usage = answer.get("usage")
        return usage if isinstance(usage, dict) else None

    def served_model(self, chunk: dict) -> object:
        return chunk.get("model")

    def stream_error(self, chunk: dict) -> dict | None:
        error = chunk.get("error")  # OpenAI's, LiteLLM's and Anthropic's error events all carry an `error` object
        return error if isinstance(error, dict) and error else None

    def error_event(self, error: GatewayError) -> bytes:
        return error.sse_event()

    def sse(self, chunk: dict) -> bytes:
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


class Unstreamed(OpenAIShaped):
    """What a route whose answer is never streamed text has in common (embeddings, moderations, images, speech)."""

    def answer_texts(self, answer: dict) -> Iterator[Slot]:
        return iter(())

    def stream_texts(self, chunk: dict) -> Iterator[StreamText]:
        return iter(())

    def closing_chunks(self, held: dict[tuple, str]) -> list[dict]:
        return []

    def started(self, chunk: dict) -> bool:
        return False


# Fields LiteLLM acts on (a few of its several hundred; custom_callbacks.guard holds LiteLLM's own list and refuses
# any of them that the wrapper did not seal). No tenant may let one of these through as a provider-specific field.
LITELLM_OWNED = frozenset({
    "api_base", "base_url", "api_key", "api_version", "api_type", "organization", "custom_llm_provider",
    "deployment_id", "specific_deployment", "model_list", "user_config", "fallbacks", "context_window_fallbacks",
    "content_policy_fallbacks", "disable_fallbacks", "max_fallbacks", "num_retries", "max_retries", "retry_policy",
    "model_group_retry_policy", "timeout", "request_timeout", "stream_timeout", "mock_response", "mock_timeout",
    "mock_testing_fallbacks", "mock_testing_context_fallbacks", "mock_testing_rate_limit_error", "cache", "caching",
    "no-cache", "ttl", "s-maxage", "namespace", "cache_key", "guardrails", "tags", "litellm_metadata",
    "success_callback", "failure_callback", "callbacks", "input_cost_per_token", "output_cost_per_token",
    "extra_headers", "extra_body", "extra_query", "headers", "proxy_server_request", "secret_fields", "litellm_call_id",
    "litellm_logging_obj", "fastest_response", "router_settings_override", "model_info",
})
