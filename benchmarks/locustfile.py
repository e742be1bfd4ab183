"""Locust scenario: cargo clients resolving and fetching dependency trees through a mirror.

Each simulated user behaves like `cargo generate-lockfile` + `cargo fetch` on a fresh
machine: it reads `config.json`, walks the dependency tree of a few root crates through
the sparse index (remembering ETags and revalidating with If-None-Match on later
rounds, as cargo does), then downloads the newest non-yanked version of every crate it
found. Most users reuse a shared set of roots (warm crates); some pick a root of their
own (cold crates).

    locust -f benchmarks/locustfile.py --headless -u 50 -r 10 -t 60s \\
        --host http://127.0.0.1:8080 --only-summary

`GHOSTCRATE_LOCUST_ROOTS` (comma-separated) sets the root crates; the default is a
handful of popular crates.io crates.

Publishing users (`PublisherUser`, one for every nine cargo users) run beside them when
`GHOSTCRATE_BENCH_TOKEN` holds a token of the private registry; without one only cargo
users run. Each publishes `.crate` files of `GHOSTCRATE_LOCUST_CRATE_BYTES` (20000)
incompressible bytes, as `cargo publish` sends them: a crate of its own, then new
versions of it. Make a token on the appliance's machine, with its configuration:

    ghostcrate user add bench --config /etc/ghostcrate/ghostcrate.toml
    export GHOSTCRATE_BENCH_TOKEN=$(ghostcrate token create --user bench \
        --config /etc/ghostcrate/ghostcrate.toml)

(`[auth] publish` must let that user publish: the default, `token`, lets any token.)
"""

from __future__ import annotations

import json
import os
import random
import sys
import uuid
from pathlib import Path
from typing import Any

from locust import HttpUser, between, task

from ghostcrate.cargo.names import CrateName, index_path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # tests.support is not an installed package
    sys.path.insert(0, str(REPO))

from tests.support.crates import CrateSpec, build_crate  # noqa: E402
from tests.support.publish import metadata_bytes, publish_body  # noqa: E402

DEFAULT_ROOTS = "serde,syn,tokio,regex,clap,rand,anyhow,log"
ROOTS = [r.strip() for r in os.environ.get("GHOSTCRATE_LOCUST_ROOTS", DEFAULT_ROOTS).split(",")]
MAX_CRATES_PER_TREE = 60
TOKEN = os.environ.get("GHOSTCRATE_BENCH_TOKEN", "")
CRATE_BYTES = int(os.environ.get("GHOSTCRATE_LOCUST_CRATE_BYTES", "20000"))


class CargoUser(HttpUser):
    weight = 9
    wait_time = between(0.5, 2)

    def on_start(self) -> None:
        self.etags: dict[str, str] = {}
        self.bodies: dict[str, bytes] = {}
        self.dl = ""

    @task(4)
    def warm_tree(self) -> None:
        """A build of a common project: index files mostly revalidated, crates cached."""
        self.resolve_and_fetch(random.sample(ROOTS, k=min(2, len(ROOTS))))

    @task(1)
    def cold_tree(self) -> None:
        """A project with a root nobody asked for yet (as cold as the mirror allows)."""
        self.resolve_and_fetch([random.choice(ROOTS)], fresh=True)

    def resolve_and_fetch(self, roots: list[str], fresh: bool = False) -> None:
        config = self.client.get("/index/config.json", name="/index/config.json")
        if config.status_code != 200:
            return
        self.dl = json.loads(config.content)["dl"].rstrip("/")
        if fresh:
            self.etags.clear()  # a new CARGO_HOME
        chosen: dict[str, dict[str, Any]] = {}
        pending = list(roots)
        while pending and len(chosen) < MAX_CRATES_PER_TREE:
            name = pending.pop()
            if name.lower() in chosen:
                continue
            entry = self.newest(name)
            if entry is None:
                continue
            chosen[name.lower()] = entry
            pending += [
                str(dep.get("package") or dep["name"])
                for dep in entry.get("deps", [])
                if dep.get("kind") != "dev" and not dep.get("optional")
            ]
        for entry in chosen.values():
            self.client.get(
                f"{self.dl}/{entry['name']}/{entry['vers']}/download",
                name="/api/v1/crates/[name]/[version]/download",
            )

    def newest(self, name: str) -> dict[str, Any] | None:
        path = f"/index/{index_path(CrateName(name))}"
        headers = {"If-None-Match": self.etags[path]} if path in self.etags else {}
        with self.client.get(
            path, headers=headers, name="/index/[path]", catch_response=True
        ) as response:
            if response.status_code == 304:
                response.success()
                body = self.bodies.get(path)
            elif response.status_code == 200:
                self.etags[path] = response.headers.get("ETag", "")
                body = response.content
                self.bodies[path] = body
            else:
                response.failure(f"index {path}: {response.status_code}")
                return None
        if body is None:
            return None
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        live = [line for line in lines if not line.get("yanked")]
        return live[-1] if live else None


class PublisherUser(HttpUser):
    """`cargo publish` of new versions of a crate of its own (needs GHOSTCRATE_BENCH_TOKEN)."""

    abstract = not TOKEN  # locust runs no user of an abstract class
    weight = 1
    wait_time = between(1, 3)

    def on_start(self) -> None:
        self.crate = f"locust-{uuid.uuid4().hex[:12]}"
        self.published = 0

    @task
    def publish(self) -> None:
        spec = CrateSpec(self.crate, f"0.1.{self.published}", extra_bytes=CRATE_BYTES)
        body = publish_body(metadata_bytes(spec), build_crate(spec))
        with self.client.put(
            "/api/v1/crates/new",
            data=body,
            headers={"Authorization": TOKEN, "Content-Type": "application/octet-stream"},
            name="/api/v1/crates/new",
            catch_response=True,
        ) as response:
            if response.status_code == 200:
                self.published += 1
                response.success()
            else:
                response.failure(f"publish {spec.name}@{spec.version}: {response.status_code}")
