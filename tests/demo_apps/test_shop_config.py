from __future__ import annotations

import dataclasses

import pytest

from demo_apps.shop import ConfigError, ShopConfig


def test_defaults_follow_the_interface_table() -> None:
    config = ShopConfig.from_env({})
    assert (config.host, config.port) == ("127.0.0.1", 8080)
    assert (config.service, config.revision, config.configuration) == (
        "demo-app-a",
        "demo-app-a-local",
        "demo-app-a",
    )
    assert (config.concurrency, config.min_instances, config.max_instances) == (80, 0, 100)
    assert config.service_time_ms == 20
    assert (config.error_rate, config.latency_ms, config.latency_rate) == (0, 0, 100)
    assert config.fail_startup is False
    assert config.gcp_monitoring is False
    assert config.random_seed is None


def test_every_variable_is_read() -> None:
    config = ShopConfig.from_env(
        {
            "PORT": "9001",
            "HOST": "127.0.0.2",
            "K_SERVICE": "checkout",
            "K_REVISION": "checkout-00002-xyz",
            "K_CONFIGURATION": "checkout-config",
            "DEMO_CONCURRENCY": "8",
            "DEMO_MIN_INSTANCES": "2",
            "DEMO_MAX_INSTANCES": "5",
            "DEMO_SERVICE_TIME_MS": "35.5",
            "DEMO_COLD_START_MS": "250",
            "DEMO_MAX_QUEUE_WAIT_MS": "900",
            "DEMO_MAX_QUEUED_REQUESTS": "40",
            "DEMO_SCALE_DOWN_DELAY_S": "3",
            "DEMO_ERROR_RATE": "12.5",
            "DEMO_LATENCY_MS": "1500",
            "DEMO_LATENCY_RATE": "40",
            "DEMO_FAIL_STARTUP": "1",
            "DEMO_RANDOM_SEED": "42",
            "DEMO_GCP_MONITORING": "true",
            "GOOGLE_CLOUD_PROJECT": "demo-project",
        }
    )
    assert (config.port, config.host) == (9001, "127.0.0.2")
    assert (config.service, config.revision, config.configuration) == (
        "checkout",
        "checkout-00002-xyz",
        "checkout-config",
    )
    assert (config.concurrency, config.min_instances, config.max_instances) == (8, 2, 5)
    assert (config.service_time_ms, config.cold_start_ms) == (35.5, 250)
    assert (config.max_queue_wait_ms, config.max_queued_requests, config.scale_down_delay_s) == (900, 40, 3)
    assert (config.error_rate, config.latency_ms, config.latency_rate) == (12.5, 1500, 40)
    assert config.fail_startup is True
    assert config.random_seed == 42
    assert (config.gcp_monitoring, config.gcp_project) == (True, "demo-project")


def test_revision_defaults_to_the_service_name() -> None:
    config = ShopConfig.from_env({"K_SERVICE": "orders"})
    assert (config.revision, config.configuration) == ("orders-local", "orders")


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "0"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"DEMO_CONCURRENCY": "0"}, "DEMO_CONCURRENCY"),
        ({"DEMO_CONCURRENCY": "2.5"}, "DEMO_CONCURRENCY"),
        ({"DEMO_MAX_INSTANCES": "0"}, "DEMO_MAX_INSTANCES"),
        ({"DEMO_MIN_INSTANCES": "-1"}, "DEMO_MIN_INSTANCES"),
        ({"DEMO_MIN_INSTANCES": "5", "DEMO_MAX_INSTANCES": "2"}, "DEMO_MIN_INSTANCES"),
        ({"DEMO_SERVICE_TIME_MS": "fast"}, "DEMO_SERVICE_TIME_MS"),
        ({"DEMO_ERROR_RATE": "101"}, "DEMO_ERROR_RATE"),
        ({"DEMO_ERROR_RATE": "nan"}, "DEMO_ERROR_RATE"),
        ({"DEMO_LATENCY_MS": "-5"}, "DEMO_LATENCY_MS"),
        ({"DEMO_LATENCY_MS": "inf"}, "DEMO_LATENCY_MS"),
        ({"DEMO_LATENCY_RATE": "150"}, "DEMO_LATENCY_RATE"),
        ({"DEMO_FAIL_STARTUP": "maybe"}, "DEMO_FAIL_STARTUP"),
        ({"DEMO_GCP_MONITORING": "2"}, "DEMO_GCP_MONITORING"),
        ({"DEMO_RANDOM_SEED": "seven"}, "DEMO_RANDOM_SEED"),
        ({"DEMO_MAX_QUEUE_WAIT_MS": "0"}, "DEMO_MAX_QUEUE_WAIT_MS"),
        ({"DEMO_MAX_QUEUED_REQUESTS": "0"}, "DEMO_MAX_QUEUED_REQUESTS"),
        ({"DEMO_COLD_START_MS": "-1"}, "DEMO_COLD_START_MS"),
    ],
)
def test_a_bad_value_names_its_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ShopConfig.from_env(environ)
    assert raised.value.variable == variable
    assert variable in str(raised.value)


@pytest.mark.parametrize("word", ["0", "false", "no", "off", ""])
def test_false_flags(word: str) -> None:
    assert ShopConfig.from_env({"DEMO_FAIL_STARTUP": word}).fail_startup is False


def test_queue_wait_limit_defaults_to_ride_out_a_cold_start() -> None:
    assert ShopConfig(service_time_ms=20, cold_start_ms=500).queue_wait_limit_ms == 700
    assert ShopConfig(service_time_ms=0, cold_start_ms=0).queue_wait_limit_ms == 100
    assert ShopConfig(max_queue_wait_ms=250).queue_wait_limit_ms == 250


def test_config_is_frozen_and_keyword_only() -> None:
    config = ShopConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        ShopConfig("127.0.0.1")  # type: ignore[call-arg]
