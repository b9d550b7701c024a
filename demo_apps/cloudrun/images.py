"""Which command runs a container image.

The emulator runs no containers: an image name maps to a local command. The key is the image's last
path component without tag or digest, so `demo-app-a`, `local/demo-app-a:latest` and
`us-docker.pkg.dev/p/r/demo-app-a@sha256:...` all run the same command. Extend the table through
`EmulatorConfig.images` (or `--image NAME=COMMAND` on the command line).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

DEFAULT_IMAGES: Mapping[str, tuple[str, ...]] = {
    "demo-app-a": (sys.executable, "-m", "demo_apps.shop"),
}


def image_key(image: str) -> str:
    """`registry/path/name:tag@sha256:...` -> `name`."""
    name = image.strip().rsplit("/", 1)[-1]
    name = name.split("@", 1)[0]
    return name.split(":", 1)[0]


def command_for_image(image: str, table: Mapping[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    return table.get(image_key(image))
