"""Exit statuses of the `ghostcrate` command, for operators' scripts."""

OK = 0
#: `verify` found (and removed) cached files that failed verification.
FOUND_BAD = 1
#: `audit --verify` found a record removed, edited or added by hand.
BROKEN = 1
#: `warm` could not fetch some of what it was asked for.
FAILED = 1
#: The configuration is invalid; the message names the key and the file.
CONFIG = 2
#: The command's arguments or input files are unusable; the message says which.
USAGE = 2
