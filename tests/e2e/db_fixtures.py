"""Real database servers for the end-to-end tests: PostgreSQL 15, MariaDB 10.11
and Redis 7 from Debian's packages, on loopback, on free (never the default)
ports, with throw-away data directories. Each is started once per test module
and stopped (and its directory removed) afterwards, also when a test fails."""
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import free_port, wait_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PSQL = PG_BIN / "psql"
MARIADB = "/usr/bin/mariadb"
REDIS_CLI = "/usr/bin/redis-cli"


def _run(argv, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)
    if r.returncode:
        raise RuntimeError(f"{argv[0]} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r.stdout


def _kill_group(proc, sig=signal.SIGTERM, timeout=15):
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Postgres:
    """PostgreSQL 15 as the `postgres` system user (it refuses to run as root),
    trust authentication on 127.0.0.1, database `shop`."""

    user = "postgres"
    db = "shop"

    def __init__(self):
        self.port = free_port()
        # Under /tmp itself: pytest's directories are private to root.
        self.dir = Path(tempfile.mkdtemp(prefix="rastro-pg-"))
        pw = pwd.getpwnam("postgres")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.started = False

    def _as_postgres(self, *argv):
        return _run(["runuser", "-u", "postgres", "--", *map(str, argv)])

    def start(self):
        self._as_postgres(PG_BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                          "--no-sync", "-E", "UTF8")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c ssl=off -c full_page_writes=off")
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-o", opts, "-l", self.log, "-w",
                          "-t", "60", "start")
        self.started = True
        wait_port(self.port)
        self.psql("CREATE DATABASE shop", db="postgres")
        self.psql("""
            CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, price numeric);
            INSERT INTO products VALUES (1, 'book', 12.5), (2, 'pen', 1.2), (3, 'laptop', 999);
            CREATE TABLE orders (id serial PRIMARY KEY, product_id int, qty int);
            CREATE TABLE big AS SELECT g AS id, md5(g::text) AS payload
                FROM generate_series(1, 100000) g;
        """)
        return self

    def psql(self, sql, db=None):
        """Runs SQL with psql (not traced: the tests start rastro afterwards)."""
        return _run([str(PSQL), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
                     str(self.port), "-U", self.user, "-d", db or self.db, "-c", sql])

    def stop(self):
        if self.started:
            try:
                self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w",
                                  "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


class MariaDB:
    """MariaDB 10.11 (mariadbd as root, which it allows with --user=root),
    user app/secret over TCP, database `shop`."""

    user = "app"
    password = "secret"
    db = "shop"

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="rastro-maria-"))
        self.data = self.dir / "data"
        self.socket = self.dir / "mysqld.sock"
        self.proc = None

    def start(self):
        _run(["mariadb-install-db", "--no-defaults", f"--datadir={self.data}", "--user=root",
              "--auth-root-authentication-method=socket", "--skip-test-db"])
        log = open(self.dir / "server.log", "w")
        self.proc = subprocess.Popen(
            ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={self.data}", "--user=root",
             f"--port={self.port}", "--bind-address=127.0.0.1", f"--socket={self.socket}",
             f"--pid-file={self.dir / 'mysqld.pid'}", "--skip-log-bin", "--innodb-flush-log-at-trx-commit=0",
             "--skip-name-resolve", "--max-allowed-packet=64M"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_port(self.port, timeout=60)
        except TimeoutError:
            self.stop()
            raise
        self.sql_socket(f"""
            CREATE DATABASE shop;
            CREATE USER 'app'@'%' IDENTIFIED BY 'secret';
            GRANT ALL ON *.* TO 'app'@'%';
            USE shop;
            CREATE TABLE products (id int PRIMARY KEY, name varchar(64) NOT NULL,
                                   price decimal(10,2));
            INSERT INTO products VALUES (1, 'book', 12.5), (2, 'pen', 1.2), (3, 'laptop', 999);
            CREATE TABLE orders (id int AUTO_INCREMENT PRIMARY KEY, product_id int, qty int);
            CREATE TABLE big (id int PRIMARY KEY, payload char(32));
            INSERT INTO big SELECT seq, md5(seq) FROM seq_1_to_100000;
        """)
        return self

    def sql_socket(self, sql):
        """Runs SQL as root over the Unix socket (not traced, not TCP)."""
        return _run([MARIADB, "--no-defaults", f"--socket={self.socket}", "-uroot", "-e", sql])

    def stop(self):
        if self.proc:
            _kill_group(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    """Redis 7, no persistence."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="rastro-redis-"))
        self.proc = None

    def start(self):
        log = open(self.dir / "server.log", "w")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def cli(self, *args):
        return _run([REDIS_CLI, "-p", str(self.port), *args])

    def stop(self):
        if self.proc:
            _kill_group(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def _server(cls):
    def fixture(request):
        s = cls()
        request.addfinalizer(s.stop)
        return s.start()
    return fixture


postgres = pytest.fixture(scope="module")(_server(Postgres))
mariadb = pytest.fixture(scope="module")(_server(MariaDB))
redis_server = pytest.fixture(scope="module")(_server(Redis))
