"""`python -m demo_apps.shop`: serve one revision of the shop, configured by Cloud Run's environment.

Exit status: 0 after SIGTERM/SIGINT (in-flight requests get `shutdown_timeout_s` to finish), 1 when
DEMO_FAIL_STARTUP asks for a failed start, 2 for a bad environment variable or exporter set-up.
"""

from __future__ import annotations

import logging
import os
import sys

from aiohttp import web

from demo_apps.shop.app import create_app
from demo_apps.shop.config import DEFAULT_SERVICE, ShopConfig
from demo_apps.shop.exceptions import ShopError
from demo_apps.shop.logs import StructuredLogger, StructuredLogHandler


def main() -> int:
    try:
        config = ShopConfig.from_env(os.environ)
    except ShopError as error:
        # The config failed, but the identity is plain text: name it so the line is still findable.
        service = os.environ.get("K_SERVICE", "").strip() or DEFAULT_SERVICE
        revision = os.environ.get("K_REVISION", "").strip() or f"{service}-local"
        StructuredLogger(service=service, revision=revision).error(f"invalid configuration: {error.message}")
        return 2

    logger = StructuredLogger(service=config.service, revision=config.revision, project=config.gcp_project)
    if config.fail_startup:
        logger.error(
            "startup failed: DEMO_FAIL_STARTUP=1 - the container exited before listening on "
            f"PORT={config.port}; the revision will not become ready"
        )
        return 1

    # aiohttp's and asyncio's own records (unhandled errors, warnings) go out as JSON lines too.
    logging.basicConfig(level=logging.WARNING, handlers=[StructuredLogHandler(logger)], force=True)

    def announce_serving(*_text: object, **_options: object) -> None:
        logger.info(f"shop serving on http://{config.host}:{config.port}", port=config.port)

    try:
        web.run_app(
            create_app(config, logger=logger),
            host=config.host,
            port=config.port,
            shutdown_timeout=config.shutdown_timeout_s,
            access_log=None,
            print=announce_serving,
        )
    except ShopError as error:
        logger.error(f"startup failed: {error.message}")
        return 2
    except OSError as error:
        logger.error(f"startup failed: cannot listen on {config.host}:{config.port}: {error}")
        return 1
    logger.info("shop stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
