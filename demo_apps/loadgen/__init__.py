"""A steady open-loop load generator for the demo services, with a small control API.

Run it with `python -m demo_apps.loadgen`, or in-process as `LoadGenerator(target=..., rate=...)`.
"""

from __future__ import annotations

from demo_apps.loadgen.control import create_control_app
from demo_apps.loadgen.generator import (
    Arrivals,
    InvalidLoadSetting,
    LoadGenerator,
    RequestPlan,
    parse_plan,
    shop_plans,
)
from demo_apps.loadgen.stats import LoadStats, ResponseTally, percentile

__all__ = [
    "Arrivals",
    "InvalidLoadSetting",
    "LoadGenerator",
    "LoadStats",
    "RequestPlan",
    "ResponseTally",
    "create_control_app",
    "parse_plan",
    "percentile",
    "shop_plans",
]
