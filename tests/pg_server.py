"""A throwaway PostgreSQL server for the tests: a fresh cluster in a temp folder, on 127.0.0.1, gone afterwards.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster belongs to an unprivileged user (`postgres`
where the Debian package made one, else `nobody`) and every server command runs through `runuser`. The server uses
password authentication (scram-sha-256), so the URLs the tests hand to the bot carry a password, as real ones do.
Durability is off (fsync, synchronous_commit): the tests kill clients, never the server.

One server per test session; each test gets its own database, copied from a template migrated once to the newest
schema (`CREATE DATABASE … TEMPLATE`, a few tens of milliseconds).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "mechuri"
TEMPLATE = "mechuri_head"
REQUIRE_ENV = "MECHURI_REQUIRE_POSTGRES"


class PostgresUnavailable(Exception):
    """No server binaries or no drivers here; the message says what to install."""


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl are: MECHURI_PG_BINDIR, else PATH, else Debian's /usr/lib/postgresql/N/bin."""
    if configured := os.environ.get("MECHURI_PG_BINDIR"):
        return Path(configured)
    if found := shutil.which("pg_ctl"):
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_user() -> str | None:
    """None when we are not root (the cluster is simply ours); else the unprivileged account to run it as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and no unprivileged user (postgres or nobody) to run PostgreSQL as")


class PostgresServer:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.run_as = _server_user()
        # As root, TMPDIR may sit where the server's user cannot reach (under /root): /tmp is open to everyone.
        self.root = Path(tempfile.mkdtemp(prefix="mechuri-pg-", dir="/tmp" if self.run_as else None))
        self.data = self.root / "data"
        self.port = _free_port()
        self.password = secrets.token_urlsafe(12)
        self._counter = 0

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        return done

    def start(self) -> PostgresServer:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            for path in (self.root, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                  "--encoding=UTF8", "--locale=C", "--no-sync")
        pwfile.unlink()
        settings = {
            "listen_addresses": "'127.0.0.1'", "port": str(self.port), "unix_socket_directories": f"'{self.root}'",
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "300",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        for attempt in range(3):
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                          "start")
                break
            except PostgresUnavailable:
                if attempt == 2:
                    raise
                self.port = _free_port()  # another process took the port in between: pick a new one
                with (self.data / "postgresql.conf").open("a") as conf:
                    conf.write(f"port = {self.port}\n")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        except (PostgresUnavailable, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    # --- databases ---------------------------------------------------------------------------------------------

    def url(self, database: str, driver: str = "asyncpg") -> str:
        return f"postgresql+{driver}://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=self.password,
                               dbname=database, autocommit=True)

    def create_database(self, template: str | None = None) -> str:
        self._counter += 1
        name = f"t{os.getpid()}_{self._counter}"
        with self.connect() as admin:
            admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return name

    def drop_database(self, name: str) -> None:
        with self.connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def make_template(self) -> None:
        """The template every test database is copied from: migrated once to the newest schema."""
        from bot.store.database import run_upgrade

        with self.connect() as admin:
            admin.execute(f'CREATE DATABASE "{TEMPLATE}"')
        run_upgrade(self.url(TEMPLATE))


def start_server() -> PostgresServer:
    """Start a server, or raise PostgresUnavailable saying what is missing."""
    missing = [name for name in ("psycopg", "asyncpg") if not _importable(name)]
    if missing:
        raise PostgresUnavailable(f"the PostgreSQL drivers are not installed ({', '.join(missing)}): "
                                  "pip install 'psycopg[binary]' asyncpg")
    bindir = find_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql, "
                                  "or point MECHURI_PG_BINDIR at their folder")
    server = PostgresServer(bindir)
    try:
        server.start()
        server.make_template()
    except BaseException:
        server.stop()
        raise
    return server


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None

