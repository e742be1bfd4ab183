"""A small S3-compatible server for trying the appliance out: moto, with its buckets made.

It serves on 0.0.0.0:`S3_PORT` (5000) and creates every bucket named in `S3_BUCKETS`
(comma-separated) before it reports itself ready on standard output. Objects live in
memory and are lost when it stops: for production use a real S3 or MinIO endpoint.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import urllib.request

from moto.server import ThreadedMotoServer


def main() -> int:
    port = int(os.environ.get("S3_PORT", "5000"))
    buckets = [b.strip() for b in os.environ.get("S3_BUCKETS", "").split(",") if b.strip()]
    server = ThreadedMotoServer(ip_address="0.0.0.0", port=port)
    server.start()
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for bucket in buckets:
        # moto does not check signatures: a plain PUT creates the bucket.
        request = urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT")
        with direct.open(request, timeout=10):
            pass
    print(f"s3server: serving on port {port}, buckets: {', '.join(buckets) or 'none'}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
