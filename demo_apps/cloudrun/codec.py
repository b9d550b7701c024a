"""JSON in and out of the Admin API, checked against the real Cloud Run v2 message types.

Request bodies are parsed into the google-cloud-run protobuf types, so field names (camelCase or
snake_case), enum names or numbers and value types are accepted exactly as Cloud Run accepts them, and
an unknown field is an `InvalidArgument`. Everything the emulator answers goes through the same types
the other way: an answer can hold only real fields, which the client's operation poller insists on,
with enums as integers (`$alt=json;enum-encoding=int`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.cloud import run_v2
from google.protobuf import json_format
from google.protobuf.message import Message

from demo_apps.cloudrun.exceptions import Internal, InvalidArgument

SERVICE_TYPE_URL = "type.googleapis.com/google.cloud.run.v2.Service"
REVISION_TYPE_URL = "type.googleapis.com/google.cloud.run.v2.Revision"

_SERVICE_PB: type[Message] = run_v2.Service.pb()
_REVISION_PB: type[Message] = run_v2.Revision.pb()


def _parse(body: Mapping[str, Any], message_type: type[Message], what: str) -> dict[str, Any]:
    message = message_type()
    try:
        json_format.ParseDict(body, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        # The first line names the field; the rest lists every field of the message.
        first_line = str(exc).splitlines()[0]
        raise InvalidArgument(f"Invalid JSON payload received for {what}: {first_line}") from exc
    return _to_dict(message)


def _to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, use_integers_for_enums=True, preserving_proto_field_name=False)


def parse_service(body: Any) -> dict[str, Any]:
    """A request's Service, normalised to camelCase keys and integer enums."""
    if not isinstance(body, Mapping):
        raise InvalidArgument("Invalid JSON payload received: the body must be a Service object")
    return _parse(body, _SERVICE_PB, "Service")


def _render(resource: Mapping[str, Any], message_type: type[Message]) -> dict[str, Any]:
    message = message_type()
    try:
        json_format.ParseDict(resource, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise Internal(f"emulator built an invalid {message_type.DESCRIPTOR.name}: {exc}") from exc
    return _to_dict(message)


def render_service(resource: Mapping[str, Any]) -> dict[str, Any]:
    return _render(resource, _SERVICE_PB)


def render_revision(resource: Mapping[str, Any]) -> dict[str, Any]:
    return _render(resource, _REVISION_PB)


def as_any(resource: Mapping[str, Any], type_url: str) -> dict[str, Any]:
    """A rendered message as a `google.protobuf.Any` in JSON."""
    return {"@type": type_url, **resource}
