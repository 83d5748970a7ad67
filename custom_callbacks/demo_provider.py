"""The `demo` models' provider: answers inside LiteLLM, offline, and sensibly for each kind of request.

Named in litellm_config.yaml's `custom_provider_map` (provider `gateway-demo`). Not a model: a stand-in so
that `make run` shows what the gateway does with no provider key. It answers chat with a short text that
says what it was asked; with `tools`, a call of the first tool; with a JSON `response_format`, a JSON
object; streams in a few chunks; embeds each input as its own deterministic unit vector; draws a small
SVG for an image. Usage is counted
with LiteLLM's own tokenizer, so the cost LiteLLM reports is usage times the demo prices of
litellm_config.yaml (made up, documented as such).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import uuid
from collections.abc import AsyncIterator, Iterator

import litellm
from litellm.llms.custom_llm import CustomLLM
from litellm.types.utils import EmbeddingResponse, GenericStreamingChunk, ImageObject, ImageResponse, ModelResponse, Usage

DIMENSIONS = 8


def _last_user_text(messages: list) -> str:
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _answer(messages: list, optional_params: dict) -> tuple[str | None, list | None]:
    """(text, tool calls) for a chat request."""
    tools = optional_params.get("tools") or []
    if tools and optional_params.get("tool_choice") != "none":
        function = (tools[0] or {}).get("function") or {}
        call = {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                "function": {"name": function.get("name", "tool"), "arguments": "{}"}}
        return None, [call]
    asked = _last_user_text(messages)
    excerpt = " ".join(asked.split()[:12]) + (" ..." if len(asked.split()) > 12 else "")
    text = f"Hello from the gateway's demo model. You said: {excerpt}" if excerpt else "Hello from the gateway's demo model."
    response_format = optional_params.get("response_format") or {}
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        return json.dumps({"answer": text, "model": "demo"}), None
    return text, None


def _usage(model: str, messages: list, text: str | None, tool_calls: list | None) -> Usage:
    prompt = litellm.token_counter(model="gpt-4o", messages=messages)
    produced = text if text is not None else json.dumps(tool_calls)
    completion = litellm.token_counter(model="gpt-4o", text=produced, count_response_tokens=True)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    raw = [byte - 127.5 for byte in digest[:DIMENSIONS]]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 6) for v in raw]


class DemoProvider(CustomLLM):
    def completion(self, model, messages, api_base, custom_prompt_dict, model_response: ModelResponse, print_verbose,
                   encoding, api_key, logging_obj, optional_params, *args, **kwargs) -> ModelResponse:
        text, tool_calls = _answer(messages, optional_params)
        message = {"role": "assistant", "content": text}
        if tool_calls:
            message["tool_calls"] = tool_calls
        model_response.choices[0].message = litellm.Message(**message)
        model_response.choices[0].finish_reason = "tool_calls" if tool_calls else "stop"
        model_response.model = model
        model_response.usage = _usage(model, messages, text, tool_calls)
        return model_response

    async def acompletion(self, model, messages, api_base, custom_prompt_dict, model_response, print_verbose,
                          encoding, api_key, logging_obj, optional_params, *args, **kwargs) -> ModelResponse:
        return self.completion(model, messages, api_base, custom_prompt_dict, model_response, print_verbose,
                               encoding, api_key, logging_obj, optional_params)

    def streaming(self, model, messages, api_base, custom_prompt_dict, model_response, print_verbose, encoding,
                  api_key, logging_obj, optional_params, *args, **kwargs) -> Iterator[GenericStreamingChunk]:
        text, tool_calls = _answer(messages, optional_params)
        usage = _usage(model, messages, text, tool_calls)
        if tool_calls:
            call = tool_calls[0]
            yield GenericStreamingChunk(text="", tool_use={"id": call["id"], "type": "function", "index": 0,
                                                           "function": call["function"]},
                                        is_finished=True, finish_reason="tool_calls", index=0,
                                        usage={"prompt_tokens": usage.prompt_tokens,
                                               "completion_tokens": usage.completion_tokens,
                                               "total_tokens": usage.total_tokens})
            return
        words = text.split(" ")
        pieces = [" ".join(words[i:i + 4]) + (" " if i + 4 < len(words) else "") for i in range(0, len(words), 4)]
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            yield GenericStreamingChunk(
                text=piece, tool_use=None, is_finished=last, finish_reason="stop" if last else "", index=0,
                usage={"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                       "total_tokens": usage.total_tokens} if last else None)

    async def astreaming(self, *args, **kwargs) -> AsyncIterator[GenericStreamingChunk]:
        for chunk in self.streaming(*args, **kwargs):
            yield chunk

    def embedding(self, model, input, model_response: EmbeddingResponse, print_verbose, logging_obj, optional_params,
                  *args, **kwargs) -> EmbeddingResponse:
        texts = [input] if isinstance(input, str) else list(input)
        model_response.data = [{"object": "embedding", "index": index, "embedding": _vector(str(text))}
                               for index, text in enumerate(texts)]
        model_response.model = model
        tokens = sum(litellm.token_counter(model="gpt-4o", text=str(text)) for text in texts)
        model_response.usage = Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens)
        return model_response

    async def aembedding(self, *args, **kwargs) -> EmbeddingResponse:
        return self.embedding(*args, **kwargs)

    def image_generation(self, model, prompt, api_key, api_base, model_response: ImageResponse, optional_params,
                         logging_obj, *args, **kwargs) -> ImageResponse:
        """A tiny SVG, as a data URL, with the prompt as the model "revised" it (LiteLLM drops `n` for a custom
        provider: one image per call)."""
        count = int(optional_params.get("n") or 1)
        svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" '
               f'fill="#{hashlib.sha256(prompt.encode()).hexdigest()[:6]}"/></svg>')
        url = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
        model_response.data = [ImageObject(url=url, revised_prompt=f"A demo picture of: {prompt}") for _ in range(count)]
        return model_response

    async def aimage_generation(self, model, prompt, model_response, api_key, api_base, optional_params, logging_obj,
                                *args, **kwargs) -> ImageResponse:
        return self.image_generation(model, prompt, api_key, api_base, model_response, optional_params, logging_obj)


handler = DemoProvider()
