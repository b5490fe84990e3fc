"""Python plan targets for integration tests that need no model replicas."""

from __future__ import annotations

from typing import Any

import numpy as np


async def echo(inputs: dict[str, np.ndarray], ctx: Any) -> dict[str, np.ndarray]:
    """Return the inputs unchanged."""
    return dict(inputs)
