"""The container's health check: exit 0 when this container's GhostCrate answers /healthz.

It asks the address the server listens on (`[server] listen`, from the same file and
`GHOSTCRATE_*` variables the server reads), on 127.0.0.1 when that is every address.
"""

from __future__ import annotations

import os
import sys
import urllib.request

from ghostcrate.config import load_settings

TIMEOUT = 3.0


def main() -> int:
    server = load_settings(environ=os.environ).settings.server
    host = server.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{server.port}/healthz"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    try:
        with direct.open(url, timeout=TIMEOUT) as answer:
            healthy = answer.status == 200
    except OSError as error:
        print(f"healthcheck: {url}: {error}", file=sys.stderr)
        return 1
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
