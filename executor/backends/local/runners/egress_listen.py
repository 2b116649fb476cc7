"""The sandbox's end of the egress proxy: a listening socket on the sandbox's own loopback,
handed to the executor, which serves it.

Run before the runner, inside the sandbox's network namespace (which has a loopback and
nothing else): make the socket, send it over the descriptor the executor passed in
(SCM_RIGHTS), close both. From then on the executor accepts the connections itself, in its
own process, so no process of the sandbox relays anything and the code cannot stop or replace
the proxy (the port is taken before any code runs).

As a program: `python3 -I -S egress_listen.py FD PORT -- COMMAND...` (bubblewrap sandboxes),
then exec COMMAND. The zygote calls listen() in each child. Stdlib only.
"""

import os
import socket
import sys


def listen(fd: int, port: int) -> None:
    """Listen on 127.0.0.1:port and send the socket over fd; close both."""
    channel = socket.socket(fileno=fd)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", port))
            listener.listen(64)
            socket.send_fds(channel, [b"L"], [listener.fileno()])
    finally:
        channel.close()


def main() -> None:
    """FD PORT -- COMMAND...: listen, then exec COMMAND."""
    fd, port, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        raise SystemExit("usage: egress_listen.py FD PORT -- COMMAND...")
    listen(int(fd), int(port))
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
