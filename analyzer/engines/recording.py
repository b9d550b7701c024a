"""Recording Gemini's raw answers and replaying them offline (`remediator eval --record/--replay`).

Both are clients the Gemini engine is given in place of the SDK's: `RecordingClient` passes every
request through to a real client and saves what came back; `ReplayClient` answers from those files,
with no network and no credentials, so a replay goes through the same validation, fallback and
policy as the recorded run and scores the same.

One JSON file per key (the scenario id), `<key>.json`:

    {"version": 1, "key": "...",
     "request": {"model", "timeout_seconds", "temperature", "response_mime_type", "response_schema",
                 "system_instruction_sha256", "prompt_sha256", "prompt_chars", "estimated_input_tokens",
                 "prompt"},
     "exchanges": [                     one per request, the retry included, in order
        {"response": {...}, "text": "...", "usage": {...}, "latency_ms": N}
      | {"error": {"kind": "api_error", "code": 503, "status": "...", "message": "..."}, "latency_ms": N}
      | {"error": {"kind": "timeout"}, "latency_ms": N}
      | {"error": {"kind": "transport", "type": "...", "message": "..."}, "latency_ms": N}]}

`response` is the SDK's GenerateContentResponse as JSON, the raw model text included.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any, Final

from google.genai import errors as genai_errors
from google.genai import types

from analyzer.engines.gemini import GenAIClient
from analyzer.engines.prompting import estimate_tokens
from analyzer.exceptions import AnalyzerError

RECORDING_VERSION: Final = 1
_KEY: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class RecordingError(AnalyzerError):
    """A recording is missing, unreadable, or does not match what the engine asks."""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _text_of(value: Any) -> str:
    """The plain text of a prompt part as the engine passes it (a string), or its JSON otherwise."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, sort_keys=True)


def recording_path(directory: Path, key: str) -> Path:
    if not _KEY.fullmatch(key):
        raise RecordingError(f"{key!r} cannot name a recording (letters, digits, '.', '_' and '-' only)")
    return directory / f"{key}.json"


def request_summary(
    *, model: str, contents: Any, config: types.GenerateContentConfig | None
) -> dict[str, Any]:
    prompt = _text_of(contents)
    system = _text_of(config.system_instruction if config is not None else None)
    schema = config.response_schema if config is not None else None
    http_options = config.http_options if config is not None else None
    timeout_ms = http_options.timeout if http_options is not None else None
    return {
        "model": model,
        "timeout_seconds": timeout_ms / 1000 if timeout_ms else None,
        "temperature": config.temperature if config is not None else None,
        "response_mime_type": config.response_mime_type if config is not None else None,
        "response_schema": getattr(schema, "__name__", None) if schema is not None else None,
        "system_instruction_sha256": _sha256(system),
        "prompt_sha256": _sha256(prompt),
        "prompt_chars": len(prompt),
        "estimated_input_tokens": estimate_tokens(system + prompt),
        "prompt": prompt,
    }


def _usage(response: types.GenerateContentResponse) -> dict[str, Any] | None:
    usage = response.usage_metadata
    return usage.model_dump(mode="json", exclude_none=True) if usage is not None else None


class RecordingClient:
    """Passes requests to `client` and saves each exchange under the current key."""

    def __init__(self, client: GenAIClient, directory: Path) -> None:
        self.client = client
        self.directory = directory
        self._key: str | None = None
        self._record: dict[str, Any] | None = None

    @property
    def models(self) -> RecordingClient:
        return self

    def use(self, key: str) -> None:
        """Record what follows under `key` (a scenario id)."""
        recording_path(self.directory, key)
        self._key, self._record = key, None

    async def generate_content(
        self, *, model: str, contents: Any, config: types.GenerateContentConfig | None = None
    ) -> types.GenerateContentResponse:
        if self._key is None:
            raise RecordingError("no recording key: call use(key) before the engine asks")
        record = self._record
        if record is None:
            record = self._record = {
                "version": RECORDING_VERSION,
                "key": self._key,
                "request": request_summary(model=model, contents=contents, config=config),
                "exchanges": [],
            }
        started = time.perf_counter()
        try:
            response = await self.client.models.generate_content(
                model=model, contents=contents, config=config
            )
        except (TimeoutError, asyncio.CancelledError):
            # A cancellation here is the engine's per-call timeout expiring around this call.
            self._save(record, {"error": {"kind": "timeout"}}, started)
            raise
        except genai_errors.APIError as exc:
            error = {"kind": "api_error", "code": exc.code, "status": exc.status, "message": exc.message}
            self._save(record, {"error": error}, started)
            raise
        except Exception as exc:
            self._save(
                record,
                {"error": {"kind": "transport", "type": type(exc).__name__, "message": str(exc)}},
                started,
            )
            raise
        self._save(
            record,
            {
                "response": response.model_dump(
                    mode="json", exclude_none=True, exclude={"sdk_http_response", "parsed"}
                ),
                "text": response.text,
                "usage": _usage(response),
            },
            started,
        )
        return response

    def _save(self, record: dict[str, Any], exchange: dict[str, Any], started: float) -> None:
        exchange["latency_ms"] = round((time.perf_counter() - started) * 1000)
        record["exchanges"].append(exchange)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = recording_path(self.directory, record["key"])
        partial = path.with_suffix(".json.tmp")
        partial.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        partial.replace(path)


class ReplayClient:
    """Answers from recordings: the same responses and errors, in the recorded order, offline."""

    def __init__(self, directory: Path) -> None:
        if not directory.is_dir():
            raise RecordingError(f"recording directory {directory} does not exist")
        self.directory = directory
        self._key: str | None = None
        self._exchanges: list[dict[str, Any]] = []
        self._prompt_sha256: str | None = None
        # Keys whose recorded prompt differs from what the engine renders now.
        self.stale: list[str] = []

    @property
    def models(self) -> ReplayClient:
        return self

    def recorded_run(self) -> tuple[str | None, float | None]:
        """The model and per-call timeout the recordings were made with, so that a replay prices and
        words its results (`timeout: no answer within 10s`) as the recorded run did."""
        for path in sorted(self.directory.glob("*.json")):
            try:
                request = json.loads(path.read_text(encoding="utf-8")).get("request") or {}
            except (OSError, ValueError, AttributeError) as exc:
                raise RecordingError(f"{path} cannot be read: {exc}") from None
            timeout = request.get("timeout_seconds")
            return request.get("model"), float(timeout) if timeout else None
        return None, None

    def use(self, key: str) -> None:
        path = recording_path(self.directory, key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RecordingError(f"no recording for {key} in {self.directory}") from None
        except (OSError, ValueError) as exc:
            raise RecordingError(f"{path} cannot be read: {exc}") from None
        if not isinstance(record, dict) or record.get("version") != RECORDING_VERSION:
            raise RecordingError(f"{path} is not a version {RECORDING_VERSION} recording")
        self._key, self._exchanges = key, list(record.get("exchanges") or [])
        self._prompt_sha256 = (record.get("request") or {}).get("prompt_sha256")

    async def generate_content(
        self, *, model: str, contents: Any, config: types.GenerateContentConfig | None = None
    ) -> types.GenerateContentResponse:
        if self._key is None:
            raise RecordingError("no recording selected: call use(key) before the engine asks")
        if not self._exchanges:
            raise RecordingError(f"the recording of {self._key} has no more exchanges than were replayed")
        if self._prompt_sha256 != _sha256(_text_of(contents)) and self._key not in self.stale:
            self.stale.append(self._key)
        exchange = self._exchanges.pop(0)
        error = exchange.get("error")
        if error is None:
            return types.GenerateContentResponse.model_validate(exchange.get("response") or {})
        kind = error.get("kind")
        if kind == "timeout":
            raise TimeoutError("recorded timeout")
        if kind == "api_error":
            code = int(error.get("code") or 500)
            body = {"error": {"code": code, "status": error.get("status"), "message": error.get("message")}}
            raise (genai_errors.ServerError if code >= 500 else genai_errors.ClientError)(code, body)
        raise ConnectionError(f"recorded {error.get('type', 'transport error')}: {error.get('message', '')}")
