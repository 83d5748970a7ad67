"""Multipart uploads (audio transcriptions): read once, bounded, checked; and sent on to LiteLLM.

The body is read with the same bound as any other (413 beyond it) and parsed by
Starlette's multipart parser with one file and a few fields at most. The fields
become a plain request body, checked against the route's allow-list like JSON
ones, so every step reads them as it reads any request (the prompt is text PII
scans); the file travels beside it, untouched, and is never in the audit record.
Form values are strings: numbers are read as numbers (a bad one is a 400 naming
it), and `key[]` repeats become a list, as the OpenAI SDKs send them.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import orjson
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from wrapper.errors import bad_request
from wrapper.routes.shapes import Number, Object, invalid_type, missing, unsupported

MAX_FIELDS = 32
MAX_FIELD_BYTES = 256 * 1024  # a prompt; the file alone may be larger
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]")


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


async def read_form(headers: Headers, raw: bytes, fields: Object, extra_fields: frozenset[str]) -> tuple[dict, Upload]:
    if not headers.get("content-type", "").startswith("multipart/form-data"):
        raise bad_request("Send this route's request as multipart/form-data (the file and its fields).")

    async def body():
        yield raw

    try:
        form = await MultiPartParser(headers, body(), max_files=1, max_fields=MAX_FIELDS,
                                     max_part_size=MAX_FIELD_BYTES).parse()
    except MultiPartException as exc:
        raise bad_request(f"The multipart body could not be read ({exc.message}).") from None
    request: dict = {}
    upload = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != "file":
                raise unsupported(key)
            upload = Upload(_safe_filename(value.filename), value.content_type or "application/octet-stream",
                            await value.read())
        elif key.endswith("[]"):
            request.setdefault(key[:-2], []).append(value)
        elif key in request:
            raise bad_request(f"The field '{key[:64]}' is given more than once.")
        else:
            request[key] = _typed(value, fields.fields.get(key), key)
    if upload is None:
        raise missing("file")
    fields.check(request, "", extra_fields)
    return request, upload


def multipart_body(fields: dict, upload: Upload) -> tuple[bytes, str]:
    """The request for LiteLLM, and its content type: each field (objects as JSON), then the file."""
    boundary = uuid.uuid4().hex
    parts = []
    for key, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            name = f"{key}[]" if isinstance(value, list) else key
            text = item if isinstance(item, str) else orjson.dumps(item).decode()
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                         + text.encode() + b"\r\n")
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{upload.filename}"\r\n'
                 f"Content-Type: {upload.content_type}\r\n\r\n".encode() + upload.data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _typed(value: str, shape, key: str):
    """A form value as the shape wants it: a number from its text."""
    if isinstance(shape, Number):
        try:
            number = float(value) if not shape.integer else int(value)
        except ValueError:
            raise invalid_type(key, shape.expected, value) from None
        return number
    return value


def _safe_filename(name: str | None) -> str:
    """The client's file name, as a plain name (it is written into a header to LiteLLM): bounded, no quotes."""
    cleaned = _FILENAME_UNSAFE.sub("_", (name or "audio").rsplit("/", 1)[-1])[:128]
    return cleaned or "audio"
