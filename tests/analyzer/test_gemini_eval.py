"""Gemini's settings, the server's wiring, and `remediator eval --engine gemini|hybrid` with
--record (against the fake endpoint) and --replay (offline, same report)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import analyzer
from analyzer import DEFAULT_MODEL, GeminiExplainer, HybridEngine, keys, load_scenarios
from incidents import AlertInfo
from remediator.cli import main
from remediator.server import build_server_app, engine_factory
from remediator.settings import Settings, SettingsError
from tests.analyzer.test_evaluation import KNOWN_HARMFUL
from tests.support.contexts import bad_deploy_context
from tests.support.fake_gemini import (
    TEST_API_KEY,
    FakeGemini,
    Reply,
    SeenRequest,
    fake_gemini_in_thread,
    serve_fake_gemini,
)
from tests.support.scenarios import copy_library

SCENARIO_DIR = Path(analyzer.__file__).parent / "scenarios"
GEMINI_ENV = (
    "GOOGLE_API_KEY",
    "GOOGLE_API_KEY_FILE",
    "GEMINI_API_KEY",
    "GEMINI_API_KEY_FILE",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
    "GEMINI_BASE_URL",
    "GEMINI_MODEL",
    "GEMINI_TIMEOUT_SECONDS",
    "REMEDIATOR_ENGINE",
)


@pytest.fixture(autouse=True)
def no_gemini_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in GEMINI_ENV:
        monkeypatch.delenv(name, raising=False)


# settings


def test_without_credentials_gemini_is_off_and_the_rules_engine_decides() -> None:
    settings = Settings.from_env({})
    assert (settings.engine, settings.gemini) == ("rules", None)
    # The Cloud Run project alone does not switch Gemini on: it names the project Cloud Run runs in.
    assert Settings.from_env({"GOOGLE_CLOUD_PROJECT": "acme"}).gemini is None


def test_an_api_key_makes_hybrid_the_default_engine() -> None:
    settings = Settings.from_env({"GEMINI_API_KEY": "k-gemini"})
    assert settings.engine == "hybrid"
    gemini = settings.gemini
    assert gemini is not None
    assert (gemini.vertexai, gemini.model, gemini.timeout, gemini.base_url) == (
        False,
        DEFAULT_MODEL,
        10.0,
        None,
    )
    assert gemini.api_key is not None
    assert gemini.api_key.reveal() == "k-gemini"
    both = Settings.from_env({"GEMINI_API_KEY": "k-gemini", "GOOGLE_API_KEY": "k-google"}).gemini
    assert both is not None
    assert both.api_key is not None
    assert both.api_key.reveal() == "k-google"
    assert "k-gemini" not in repr(settings)


def test_vertex_ai_mode_comes_from_the_sdks_variables() -> None:
    settings = Settings.from_env(
        {
            "GOOGLE_GENAI_USE_VERTEXAI": "True",
            "GOOGLE_CLOUD_PROJECT": "acme-prod",
            "GOOGLE_CLOUD_LOCATION": "europe-west1",
            "GEMINI_MODEL": "gemini-2.5-flash-lite",
            "GEMINI_TIMEOUT_SECONDS": "4.5",
            "GEMINI_BASE_URL": "https://proxy.internal",
            "GEMINI_THINKING_BUDGET": "0",
        }
    )
    gemini = settings.gemini
    assert gemini is not None
    assert (gemini.vertexai, gemini.project, gemini.location) == (True, "acme-prod", "europe-west1")
    assert (gemini.model, gemini.timeout, gemini.base_url, gemini.thinking_budget) == (
        "gemini-2.5-flash-lite",
        4.5,
        "https://proxy.internal",
        0,
    )
    assert (
        gemini.describe()
        == "gemini-2.5-flash-lite on Vertex AI project acme-prod in europe-west1 via https://proxy.internal"
    )
    default_location = Settings.from_env(
        {"GOOGLE_GENAI_USE_VERTEXAI": "1", "GOOGLE_CLOUD_PROJECT": "p"}
    ).gemini
    assert default_location is not None
    assert default_location.location == "global"


def test_an_explicit_engine_is_kept_and_a_model_engine_needs_credentials() -> None:
    assert Settings.from_env({"GOOGLE_API_KEY": "k", "REMEDIATOR_ENGINE": "rules"}).engine == "rules"
    assert Settings.from_env({"GOOGLE_API_KEY": "k", "REMEDIATOR_ENGINE": "gemini"}).engine == "gemini"
    with pytest.raises(SettingsError, match=r"GOOGLE_API_KEY.*GOOGLE_GENAI_USE_VERTEXAI"):
        Settings.from_env({"REMEDIATOR_ENGINE": "gemini"})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GEMINI_TIMEOUT_SECONDS": "soon"}, "GEMINI_TIMEOUT_SECONDS must be a number"),
        ({"GEMINI_TIMEOUT_SECONDS": "0.01"}, "GEMINI_TIMEOUT_SECONDS must be between"),
        ({"GEMINI_BASE_URL": "ftp://x"}, "GEMINI_BASE_URL must be an http"),
        ({"GEMINI_INPUT_USD_PER_MTOK": "0.3"}, "set both GEMINI_INPUT_USD_PER_MTOK"),
        ({"GEMINI_THINKING_BUDGET": "-5"}, "GEMINI_THINKING_BUDGET must be between"),
    ],
)
def test_bad_gemini_settings_are_refused(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env({"GOOGLE_API_KEY": "k", **environ})


def test_configured_prices_replace_the_list_price() -> None:
    gemini = Settings.from_env(
        {"GOOGLE_API_KEY": "k", "GEMINI_INPUT_USD_PER_MTOK": "1.5", "GEMINI_OUTPUT_USD_PER_MTOK": "6"}
    ).gemini
    assert gemini is not None
    price = gemini.token_price()
    assert price is not None
    assert (price.input_usd_per_mtok, price.output_usd_per_mtok, price.as_of) == (1.5, 6.0, "configured")


# the server's wiring


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with serve_fake_gemini() as server:
        yield server


async def test_the_server_builds_the_hybrid_engine_and_the_explainer_from_the_environment(
    fake: FakeGemini,
) -> None:
    settings = Settings.from_env({"GOOGLE_API_KEY": TEST_API_KEY, "GEMINI_BASE_URL": fake.url})
    app = build_server_app(settings, with_actuator=False)
    assert isinstance(app[keys.EXPLAINER], GeminiExplainer)
    fake.answer(Reply.decision("ROLLBACK", target_revision="demo-app-a-00001-ok"))
    alert = AlertInfo(
        name="HighErrorRate",
        status="firing",
        starts_at=datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
        fingerprint="f",
        labels={"service": "demo-app-a"},
    )
    context = bad_deploy_context(alert, now=datetime(2026, 11, 28, 12, 0, 40, tzinfo=UTC))
    async for engine in engine_factory(settings)(settings.analyzer):
        assert isinstance(engine, HybridEngine)
        result = await engine.decide(context)
    assert result.decision.engine == "hybrid"
    [request] = fake.requests
    assert request.path == "/v1/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == TEST_API_KEY


def test_the_rules_engine_has_no_explainer_without_gemini() -> None:
    app = build_server_app(Settings.from_env({}), with_actuator=False)
    assert not isinstance(app[keys.EXPLAINER], GeminiExplainer)


# remediator eval


def test_eval_with_gemini_and_no_credentials_exits_2_naming_the_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["eval", str(SCENARIO_DIR), "--engine", "gemini"]) == 2
    error = capsys.readouterr().err
    assert "GOOGLE_API_KEY" in error
    assert "GEMINI_API_KEY" in error
    assert "GOOGLE_GENAI_USE_VERTEXAI=true with GOOGLE_CLOUD_PROJECT" in error


def test_record_and_replay_need_a_model_engine(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["eval", str(SCENARIO_DIR), "--replay", str(tmp_path)]) == 1
    assert "--record and --replay apply to --engine gemini or hybrid" in capsys.readouterr().err
    args = [
        "eval",
        str(SCENARIO_DIR),
        "--engine",
        "gemini",
        "--record",
        str(tmp_path),
        "--replay",
        str(tmp_path),
    ]
    assert main(args) == 1
    assert "exclude each other" in capsys.readouterr().err


class LibraryResponder:
    """Answers like a careful model from the rendered prompt, with some failures on the way."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, request: SeenRequest) -> Reply:
        with self.lock:
            self.count += 1
            count = self.count
        if count == 4:
            return Reply.hang(5)  # past GEMINI_TIMEOUT_SECONDS: recorded as a timeout
        if count in (2, 30):
            return Reply.error(503)  # the retry that follows gets an answer
        if count % 13 == 6:
            return Reply.text("Roll back, probably.")
        prompt = request.prompt
        candidates = re.search(r"newest first\): (.+)", prompt)
        names = candidates.group(1).split(", ") if candidates else []
        if "none: ROLLBACK is not allowed" not in prompt and names:
            return Reply.decision("ROLLBACK", target_revision=names[0], confidence=0.85)
        return Reply.decision("INVESTIGATE", confidence=0.7)


def test_record_against_the_endpoint_then_replay_offline_gives_the_same_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    recordings = tmp_path / "recordings"
    # The responder backs every rollback the rules engine proposes, so the rules engine's known harmful
    # decisions (tests/analyzer/test_evaluation.py) would be harmful here too: they are left out.
    library = copy_library(tmp_path / "library", leave_out=KNOWN_HARMFUL)
    total = len(list(library.rglob("*.json")))
    with fake_gemini_in_thread() as fake:
        fake.responder = LibraryResponder()
        monkeypatch.setenv("GOOGLE_API_KEY", TEST_API_KEY)
        monkeypatch.setenv("GEMINI_BASE_URL", fake.url)
        monkeypatch.setenv("GEMINI_TIMEOUT_SECONDS", "0.5")
        code = main(["eval", str(library), "--engine", "hybrid", "--record", str(recordings), "--json"])
        recorded_requests = len(fake.requests)
    recorded = capsys.readouterr()
    assert code == 0, recorded.err
    report = json.loads(recorded.out)
    assert report["total"] == total
    assert report["harmful"] == 0
    reasons = {
        r["details"]["fallback_reason"].split(":")[0]
        for r in report["results"]
        if r["details"]["fallback_reason"]
    }
    assert reasons == {"timeout", "invalid_output"}
    assert any(r["details"]["engine"] == "hybrid" for r in report["results"])

    files = sorted(recordings.glob("*.json"))
    assert [f.stem for f in files] == sorted(r["id"] for r in report["results"])
    exchanges = [json.loads(f.read_text())["exchanges"] for f in files]
    assert sum(len(e) for e in exchanges) == recorded_requests
    kinds = {x.get("error", {}).get("kind", "response") for e in exchanges for x in e}
    assert kinds == {"response", "timeout", "api_error"}
    # A scenario the model answered in full (which ones get the garbled or failed replies depends on
    # the order the library is evaluated in, so the sample is chosen from the report, not by name).
    sampled = next(r["id"] for r in report["results"] if r["details"]["engine"] == "hybrid")
    sample = json.loads((recordings / f"{sampled}.json").read_text())
    assert sample["key"] == sampled
    assert sample["request"]["model"] == DEFAULT_MODEL
    assert sample["request"]["timeout_seconds"] == 0.5
    assert sample["request"]["response_mime_type"] == "application/json"
    assert sample["request"]["response_schema"] == "ModelDecision"
    assert "<incident_data>" in sample["request"]["prompt"]
    answered = sample["exchanges"][-1]
    assert json.loads(answered["text"])["action"] in ("ROLLBACK", "INVESTIGATE")
    assert answered["usage"]["prompt_token_count"] == 1800

    # Offline: no credentials, no endpoint (the fake is gone).
    for name in ("GOOGLE_API_KEY", "GEMINI_BASE_URL", "GEMINI_TIMEOUT_SECONDS"):
        monkeypatch.delenv(name)
    code = main(["eval", str(library), "--engine", "hybrid", "--replay", str(recordings), "--json"])
    replayed = capsys.readouterr()
    assert code == 0, replayed.err
    assert json.loads(replayed.out) == report
    assert "changed since" not in replayed.err


def test_replay_without_a_recording_for_a_scenario_fails_clearly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    first = load_scenarios(SCENARIO_DIR)[0].id
    assert main(["eval", str(SCENARIO_DIR), "--engine", "gemini", "--replay", str(tmp_path)]) == 1
    assert f"no recording for {first}" in capsys.readouterr().err
