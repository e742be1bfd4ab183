"""`ghostcrate keys rotate`: a new session signing key, beside a running server.

The old key still verifies the session tokens it signed until they expire
(`[auth] session_minutes`, and a minute's leeway); a later rotation or start
removes it. Every worker signs with the new key within a second.
"""

from __future__ import annotations

import argparse
import sys

from ghostcrate.appliance import exitcodes
from ghostcrate.config import Settings
from ghostcrate.private.registry import Registry


async def run_keys(settings: Settings, args: argparse.Namespace) -> int:
    async with Registry.open(settings) as registry:
        kid = await registry.rotate_keys()
    print(kid)
    print(
        f"session tokens are now signed with key {kid}; older keys verify until "
        "their tokens expire",
        file=sys.stderr,
    )
    return exitcodes.OK
