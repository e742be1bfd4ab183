"""Reading text log lines back the way a log shipper would, honouring their quoting."""

from __future__ import annotations

import json
import re

#: `ts level logger: `, then the message and the fields.
_HEAD = re.compile(r"(\d{4}-\d\d-\d\dT[0-9:.]+\+00:00) (\w+) +(\S+): ")
_KEY = re.compile(r" (\w+)=")
_DECODER = json.JSONDecoder()


def parse_text_line(line: str) -> dict[str, str] | None:
    """The message and fields of a text log line, as text; None if `line` does not start one.

    A value in double quotes is a JSON string; any other runs up to the next space
    (the message: up to the first ` key=`). A line naming a field twice is refused.
    """
    head = _HEAD.match(line)
    if head is None:
        return None
    fields = {"ts": head[1], "level": head[2], "logger": head[3]}
    key = _KEY.search(line, head.end())
    fields["msg"], end = _value(line, head.end(), key.start() if key else len(line))
    while end < len(line):
        key = _KEY.match(line, end)
        if key is None or key[1] in fields:
            raise ValueError(f"no field, or a field again, at {end}: {line!r}")
        space = line.find(" ", key.end())
        fields[key[1]], end = _value(line, key.end(), len(line) if space < 0 else space)
    return fields


def _value(line: str, start: int, plain_end: int) -> tuple[str, int]:
    if line.startswith('"', start):
        value, end = _DECODER.raw_decode(line, start)
        return str(value), end
    return line[start:plain_end], plain_end
