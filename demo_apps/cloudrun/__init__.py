"""Local Cloud Run emulator: the Admin API v2 subset the google-cloud-run client uses, one process per
revision, a traffic-splitting router per service, Cloud Logging `entries:list`, Prometheus service
discovery, and injectable Admin API failures. Run it with `python -m demo_apps.cloudrun`."""

from __future__ import annotations

from demo_apps.cloudrun.app import create_app
from demo_apps.cloudrun.config import EmulatorConfig
from demo_apps.cloudrun.images import DEFAULT_IMAGES, command_for_image, image_key

__all__ = ["DEFAULT_IMAGES", "EmulatorConfig", "command_for_image", "create_app", "image_key"]
