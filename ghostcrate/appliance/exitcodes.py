"""Exit statuses of the `ghostcrate` command, for operators' scripts."""

OK = 0
#: `verify` found (and removed) cached files that failed verification.
FOUND_BAD = 1
#: The configuration is invalid; the message names the key and the file.
CONFIG = 2
