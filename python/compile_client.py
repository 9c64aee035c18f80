"""Ninja compile edge through the compile server (python/compile_server.py):
the same arguments as python/compile_kernel.py, the same outputs, without
loading Triton in every edge. Starts the server when none is up for this
checkout and source state; runs compile_kernel.py itself when the server cannot
be reached or AOTRITON_COMPILE_SERVER=0. Imports only the standard library.

    python -S python/compile_client.py --kernel ... (compile_kernel.py's arguments)
"""
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def source_state() -> str:
    """What a server has loaded: the interpreter, the checkout and every Python
    file of python/ and tritonsrc/ (name, size, mtime). A change starts a new server."""
    h = hashlib.sha256(f"{sys.executable}\0{REPO}\0".encode())
    for top in ("python", "tritonsrc"):
        for root, dirs, files in os.walk(os.path.join(REPO, top)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    st = os.stat(os.path.join(root, name))
                    h.update(f"{root}/{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:20]


def socket_path() -> str:
    # AF_UNIX names are limited to ~107 bytes: the temp dir, not the build dir.
    return os.path.join(tempfile.gettempdir(), f"aotriton-cc-{os.getuid()}-{source_state()}.sock")


def connect(path: str):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return s
    except OSError:
        s.close()
        return None


def start_server(path: str):
    python = sys.executable
    subprocess.Popen([python, os.path.join(HERE, "compile_server.py"), path], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_remote(argv) -> int | None:
    """The edge's exit status, or None when no server took the request."""
    path = socket_path()
    conn = connect(path)
    if conn is None:
        start_server(path)
        deadline = time.time() + float(os.environ.get("AOTRITON_COMPILE_SERVER_START_S", 30))
        while conn is None and time.time() < deadline:
            time.sleep(0.05)
            conn = connect(path)
        if conn is None:
            return None
    with conn:
        body = json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
        try:
            socket.send_fds(conn, [len(body).to_bytes(8, "little")], [0, 1, 2])
            conn.sendall(body)
            if conn.recv(1) != b"A":
                return None  # the server went away before taking it (idle exit)
        except OSError:
            return None
        status = b""
        while len(status) < 4:
            chunk = conn.recv(4 - len(status))
            if not chunk:
                print("aotriton compile: the compile process died (no status)", file=sys.stderr)
                return 1
            status += chunk
        return int.from_bytes(status, "little", signed=True)


def main():
    argv = sys.argv[1:]
    if os.environ.get("AOTRITON_COMPILE_SERVER", "1") != "0":
        code = run_remote(argv)
        if code is not None:
            sys.exit(code)
    # No server: compile here, as the edge did before (without -S: Triton lives in site-packages).
    script = os.path.join(HERE, "compile_kernel.py")
    os.execv(sys.executable, [sys.executable, script] + argv)


if __name__ == "__main__":
    main()
