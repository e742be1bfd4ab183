"""The listening sockets of an appliance's workers: one port, shared by them alone.

With `workers = N` the supervisor binds N sockets to the address with
SO_REUSEPORT before it starts any worker, and hands one to each (a restarted
worker gets its predecessor's, so connections queued there wait for it). The
kernel spreads new connections over them; a classic BPF program on the group
chooses among the first N sockets only, so a socket that some other process
adds to the group later (it needs SO_REUSEPORT and the same user) is bound but
never given a connection. A second GhostCrate does not get that far: its
start-up check binds without SO_REUSEPORT and is refused (`preflight.py`).
"""

from __future__ import annotations

import ctypes
import socket
import struct

#: setsockopt option (linux/socket.h, Linux 4.5+).
SO_ATTACH_REUSEPORT_CBPF = 51
#: Connections the kernel queues on each socket before they are accepted (aiohttp's).
BACKLOG = 128

# Classic BPF: A = a random number (the ancillary load SKF_AD_OFF + SKF_AD_RANDOM);
# A %= N; return A, the index of the socket in the group, in the order they joined.
_LOAD_RANDOM = (0x20, 0, 0, (-0x1000 + 56) & 0xFFFFFFFF)  # BPF_LD | BPF_W | BPF_ABS
_MODULO = 0x94  # BPF_ALU | BPF_MOD | BPF_K
_RETURN_A = (0x16, 0, 0, 0)  # BPF_RET | BPF_A


def worker_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on host:port that only they share. Raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        _only_the_first(sockets[0], count)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _only_the_first(sock: socket.socket, count: int) -> None:
    """Let the kernel choose among the first `count` sockets of the group only."""
    program = b"".join(
        struct.pack("HBBI", *instruction)
        for instruction in (_LOAD_RANDOM, (_MODULO, 0, 0, count), _RETURN_A)
    )
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HP", 3, ctypes.addressof(buffer))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
