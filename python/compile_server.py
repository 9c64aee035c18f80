"""Compile server: keeps Triton and the rules loaded across a build's compile edges.

A compile edge run as its own process (python/compile_kernel.py) spends ~0.55 s of
CPU before compiling anything: importing Triton and the rules (~0.23 s) and
Triton's triton_key(), a hash of the whole Triton install (~0.32 s), on a 2-core
machine about a fifth of a release build (docs/build-time.md). This server pays
that once: it imports everything, then forks one child per request, and the
child runs compile_kernel.main(argv) with the client's environment, working
directory and stdin/stdout/stderr (passed over the socket), so a compile edge
behaves as if run directly and writes the same cubin.

Started on demand by python/compile_client.py (the ninja edge), one per checkout
and source state (the socket name hashes the sources it loaded), it exits after
IDLE_S seconds without a request.

    python python/compile_server.py SOCKET_PATH
"""
from __future__ import annotations

import array
import fcntl
import json
import os
import signal
import socket
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IDLE_S = float(os.environ.get("AOTRITON_COMPILE_SERVER_IDLE_S", 30))
MAX_REQUEST = 1 << 20


def preload():
    """What every compile needs, loaded before the first fork."""
    sys.path.insert(0, str(REPO))
    os.chdir(REPO)
    from python import compile_kernel
    compile_kernel.use_repo_relative_sources()
    from python import rules  # noqa: F401 - the kernels' rules
    import triton  # noqa: F401
    from triton.backends.compiler import GPUTarget  # noqa: F401
    from triton.runtime import cache
    cache.triton_key()  # the install hash (lru-cached) each process would compute again
    return compile_kernel


def recv_request(conn):
    """(request dict, [fds]) from one client message: a length-prefixed JSON body with
    the client's stdin/stdout/stderr attached."""
    fds = array.array("i")
    head, ancdata, _, _ = conn.recvmsg(8, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    size = int.from_bytes(head, "little")
    if not 0 < size <= MAX_REQUEST:
        raise ValueError(f"bad request size {size}")
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ValueError("client went away")
        body += chunk
    return json.loads(body), list(fds)


def run_child(conn, compile_kernel):
    """In the forked child: become the client's compile process, run the edge,
    send back its exit status."""
    code = 1
    try:
        request, fds = recv_request(conn)
        conn.sendall(b"A")  # taken: from here a missing status means this compile failed
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        try:
            compile_kernel.main(request["argv"])
            code = 0
        except SystemExit as e:  # sys.exit(message) reports a compile error, as the script would
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
                code = 1
            else:
                code = e.code or 0
        except BaseException:
            traceback.print_exc()
            code = 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            conn.sendall(int(code).to_bytes(4, "little", signed=True))
        finally:
            os._exit(0)


def serve(sock_path: str):
    lock = open(sock_path + ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another server for these sources is up
    compile_kernel = preload()
    if os.path.exists(sock_path):
        os.unlink(sock_path)  # a dead server's: we hold the lock
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(64)
    server.settimeout(IDLE_S)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    try:
        while True:
            try:
                conn, _ = server.accept()
            except socket.timeout:
                break
            conn.settimeout(None)
            if os.fork() == 0:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the compile waits for ptxas
                server.close()
                lock.close()  # the lock lives as long as any holder of its file: only the server
                run_child(conn, compile_kernel)
            conn.close()
    finally:
        os.unlink(sock_path)
        lock.close()


if __name__ == "__main__":
    serve(sys.argv[1])
