"""SIGHUP: read the configuration again and apply it without dropping a connection.

Every serving process does it itself: it starts the application anew with the
new settings on the same listening sockets (duplicated), and only then lets
the old one go, which stops accepting, lets its requests and transfers finish
(`shutdown_timeout`), and closes its idle connections. Until the new one runs,
the old one serves; if the new settings cannot be read or started, the old
ones stay, and the log says why. A supervisor checks the file first and
forwards SIGHUP to its workers only if it can be used.

`listen`, `workers` and `data_dir` change only at a restart: a reload keeps
their running values and logs that they wait for one.
"""

from __future__ import annotations

import logging

from ghostcrate.config import ConfigError, ConfigSource, Settings, changed_keys

log = logging.getLogger("ghostcrate")

#: Settings that a running server cannot change: the sockets, the processes, the data.
RESTART_ONLY = ("data_dir", "server.listen", "server.workers")


def reread(current: Settings, source: ConfigSource) -> Settings | None:
    """The settings to run with now, or None to keep `current` (unusable or unchanged)."""
    problems: list[str] = []
    try:
        loaded = source.load().settings
    except ConfigError as error:
        problems = error.problems
    if problems:
        log.error(
            "configuration reload refused; the running configuration stays",
            extra={"problems": problems},
        )
        return None
    changed = changed_keys(current, loaded)
    waiting = [key for key in changed if key in RESTART_ONLY]
    if waiting:
        log.warning(
            "these settings change only at a restart; they keep their running values",
            extra={"keys": waiting},
        )
    effective = loaded.model_copy(
        update={
            "data_dir": current.data_dir,
            "server": loaded.server.model_copy(
                update={"listen": current.server.listen, "workers": current.server.workers}
            ),
        }
    )
    applied = changed_keys(current, effective)
    if not applied:
        log.info("configuration reloaded: nothing to change")
        return None
    log.info("configuration reloaded", extra={"changed": applied})
    return effective
