"""Runs a command beside a Redis server of its own: with_redis.py COMMAND...

Starts redis-server on a free port (no persistence), replaces "{port}" in the
command's arguments with it, runs the command twice (the second job finds
the first one's keys in the server), stops the server, and exits with the
command's last status. Prints "skipped: ..." and exits 0 where
redis-server is missing.
"""

import shutil
import socket
import subprocess
import sys
import time


def main(argv):
    server = shutil.which("redis-server")
    if not server:
        print("skipped: no redis-server (scripts/setup.sh installs it)")
        return 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        args = [a.replace("{port}", str(port)) for a in argv[1:]]
        status = 0
        for _ in range(2):
            status = subprocess.run(args).returncode
            if status != 0:
                break
        return status
    finally:
        redis.terminate()
        redis.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
