"""A PostgreSQL cluster inside the workspace, for Label Studio (and anything else that wants one).

Layout under `<home>/postgres/` (the *cluster root*):

    credentials.json  0600, owned by the invoking user: role, password, port (never logged)
    data/             0700, the cluster (initdb), owned by the server's OS user
    run/              0700, its unix socket directory (clients here use TCP on 127.0.0.1)
    log/postgres.log  the server log (no statements: `log_min_error_statement = panic`)

PostgreSQL refuses to run as root. When the platform runs as root (CI, containers), the server
runs as a dedicated system user, `sfr-postgres`, created on first use; otherwise as the invoking
user. It listens on 127.0.0.1 only, and every connection (TCP or socket) needs the generated
password (scram-sha-256). The binaries are Debian's `postgresql` package
(`/usr/lib/postgresql/<major>/bin`, not on PATH), or `$SFR_PG_BINDIR`.

Label Studio's choice of database is recorded in `<labelstudio data dir>/database.json`
({"engine": "postgres", "cluster": <root>, "name": <database>}; no secret), so that every later
`up` (also the one `sfr annotate push` does) keeps using the same database.
"""
from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from annotation.processes import port_is_free

HOST = "127.0.0.1"
ROLE = "sfr"
OS_USER = "sfr-postgres"
LS_DATABASE = "labelstudio"
CHOICE_FILE = "database.json"
# A unix socket path is limited to 107 bytes; `<run>/.s.PGSQL.<port>` must fit.
MAX_SOCKET_DIR = 90


class PostgresError(RuntimeError):
    pass


def bindir() -> Path:
    """Folder with initdb, pg_ctl, pg_dump, pg_restore (the newest Debian major, or $SFR_PG_BINDIR)."""
    env = os.environ.get("SFR_PG_BINDIR")
    candidates = [Path(env)] if env else sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True)
    if not env and shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    raise PostgresError("PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH); "
                        "install Debian's postgresql package (scripts/install_test_deps.sh does, as root) "
                        "or set SFR_PG_BINDIR")


@dataclass(frozen=True)
class Cluster:
    root: Path

    @classmethod
    def for_home(cls, home: Path) -> "Cluster":
        return cls(Path(home) / "postgres")

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "log" / "postgres.log"

    @property
    def credentials_file(self) -> Path:
        return self.root / "credentials.json"

    def credentials(self) -> dict:
        try:
            return json.loads(self.credentials_file.read_text())
        except FileNotFoundError:
            raise PostgresError(f"no PostgreSQL cluster at {self.root}; create it with `sfr labelstudio db start`") from None
        except json.JSONDecodeError as e:
            raise PostgresError(f"{self.credentials_file} is not valid JSON ({e.msg}); the password cannot be "
                                f"recovered: move {self.root} away and start a new cluster") from None

    def conninfo(self, database: str) -> dict:
        """Keyword arguments for psycopg.connect (holds the password: never log it)."""
        c = self.credentials()
        return {"host": HOST, "port": int(c["port"]), "user": c["user"], "password": c["password"],
                "dbname": database}

    def __repr__(self) -> str:
        return f"Cluster(root={str(self.root)!r})"


# -- the OS user ---------------------------------------------------------------------------------
def _os_user() -> pwd.struct_passwd:
    """Who runs the server: the invoking user, or `sfr-postgres` (created here) when that is root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    r = subprocess.run([useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", OS_USER], capture_output=True, text=True)
    try:  # a concurrent process may have created it first (useradd exits 9)
        return pwd.getpwnam(OS_USER)
    except KeyError:
        raise PostgresError(f"cannot create the system user {OS_USER} that PostgreSQL runs as (PostgreSQL refuses "
                            f"to run as root): {r.stderr.strip() or r.returncode}") from None


def _check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """The server's user must be able to enter every folder above its data folder."""
    groups = {user.pw_gid} | set(os.getgrouplist(user.pw_name, user.pw_gid))
    for d in [path, *path.parents]:
        st = d.stat()
        if st.st_uid == user.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise PostgresError(f"PostgreSQL runs as user {user.pw_name}, which cannot enter {d} (mode "
                                f"{stat.S_IMODE(st.st_mode):o}); allow it to pass through (`chmod o+x {d}`: "
                                "search only, no listing) or put the workspace elsewhere")


def _as_server_user(cmd: list[str], cluster: Cluster, timeout: float,
                    check_msg: str | None = None) -> subprocess.CompletedProcess:
    user = _os_user()
    kw = {}
    if os.geteuid() != user.pw_uid:
        kw = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "PGTZ": "UTC"}
    r = subprocess.run(cmd, cwd=str(cluster.root), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout, umask=0o077, **kw)
    if check_msg and r.returncode != 0:
        raise PostgresError(f"{check_msg}: {r.stdout.strip()[-2000:]}")
    return r


# -- lifecycle -----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _write_private_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def init(cluster: Cluster, port: int | None = None, durable: bool = True) -> None:
    """Create the cluster (idempotent): OS user, folders, credentials, initdb, configuration.

    `durable=False` (throwaway test clusters only) turns off fsync: a crash of the machine may
    then corrupt the cluster, in exchange Label Studio's migrations commit without waiting for the disk."""
    if cluster.credentials_file.exists():
        return
    user = _os_user()
    if len(str(cluster.run_dir)) > MAX_SOCKET_DIR:
        raise PostgresError(f"{cluster.run_dir} is too long for a unix socket path ({len(str(cluster.run_dir))} > "
                            f"{MAX_SOCKET_DIR} characters); use a shorter workspace path")
    cluster.root.mkdir(parents=True, exist_ok=True)
    os.chmod(cluster.root, 0o711)  # the server's user passes through; only the invoker lists it
    _check_reachable(cluster.root, user)
    if cluster.data.exists():
        raise PostgresError(f"{cluster.data} exists but {cluster.credentials_file} does not: the password is lost; "
                            f"move {cluster.root} away and start again")
    for d in (cluster.data, cluster.run_dir, cluster.log.parent, cluster.root / "init"):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chown(d, user.pw_uid, user.pw_gid)
        os.chmod(d, 0o700)
    creds = {"user": ROLE, "password": secrets.token_urlsafe(24), "port": port or _free_port(), "host": HOST}
    pwfile = cluster.root / "init" / "pw"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(creds["password"] + "\n")
    os.chown(pwfile, user.pw_uid, user.pw_gid)
    try:
        _as_server_user([str(bindir() / "initdb"), "-D", str(cluster.data), "-U", ROLE, f"--pwfile={pwfile}",
                         "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"], cluster, timeout=300,
                        check_msg=f"initdb of {cluster.data} failed")
    finally:
        shutil.rmtree(cluster.root / "init", ignore_errors=True)
    conf = (f"\n# sfr: loopback only, socket inside the workspace, no SQL text in the log\n"
            f"listen_addresses = '{HOST}'\nport = {int(creds['port'])}\n"
            f"unix_socket_directories = '{cluster.run_dir}'\npassword_encryption = 'scram-sha-256'\n"
            f"log_min_error_statement = panic\nmax_connections = 100\n")
    if not durable:
        conf += "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
    with open(cluster.data / "postgresql.conf", "a") as f:
        f.write(conf)
    # written last: its presence marks a usable cluster
    _write_private_json(cluster.credentials_file, creds)


def status(cluster: Cluster) -> dict:
    """State of the cluster, without the password."""
    out = {"root": str(cluster.root), "initialised": cluster.credentials_file.exists(), "running": False,
           "host": HOST, "port": None, "pid": None}
    if not out["initialised"]:
        return out
    out["port"] = int(cluster.credentials()["port"])
    r = _as_server_user([str(bindir() / "pg_ctl"), "status", "-D", str(cluster.data)], cluster, 30)
    if r.returncode == 0:
        out["running"] = True
        pid = r.stdout.split("PID:", 1)[-1].split(")", 1)[0].strip()
        out["pid"] = int(pid) if pid.isdigit() else None
    return out


def start(cluster: Cluster, timeout_s: float = 120.0, durable: bool = True) -> dict:
    """Initialise if needed (see `init`) and start unless it runs; wait until it accepts connections."""
    init(cluster, durable=durable)
    st = status(cluster)
    if st["running"]:
        return {**st, "started": False}
    if not port_is_free(st["port"]):
        raise PostgresError(f"port {st['port']} on {HOST} (recorded in {cluster.credentials_file}) is in use by "
                            "another program; stop it, or move this cluster to another port in that file "
                            "and in data/postgresql.conf")
    r = _as_server_user([str(bindir() / "pg_ctl"), "start", "-D", str(cluster.data), "-l", str(cluster.log),
                         "-w", "-t", str(int(timeout_s))], cluster, timeout_s + 30)
    if r.returncode != 0:
        raise PostgresError(f"PostgreSQL in {cluster.data} did not start: {r.stdout.strip()[-500:]}; "
                            f"last log lines:\n{log_tail(cluster)}")
    return {**status(cluster), "started": True}


def stop(cluster: Cluster, timeout_s: float = 60.0) -> dict:
    """Stop it (fast shutdown: open transactions roll back). Idempotent."""
    st = status(cluster)
    if st["running"]:
        _as_server_user([str(bindir() / "pg_ctl"), "stop", "-D", str(cluster.data), "-m", "fast", "-w",
                         "-t", str(int(timeout_s))], cluster, timeout_s + 30,
                        check_msg=f"PostgreSQL in {cluster.data} did not stop")
    return {**status(cluster), "stopped": st["running"]}


def log_tail(cluster: Cluster, n: int = 20) -> str:
    try:
        text = "\n".join(cluster.log.read_text(errors="replace").splitlines()[-n:])
    except (FileNotFoundError, PermissionError):
        return "(no log)"
    pw = cluster.credentials().get("password") if cluster.credentials_file.exists() else None
    return text.replace(pw, "***") if pw else text


# -- databases -----------------------------------------------------------------------------------
def _connect(cluster: Cluster, database: str = "postgres"):
    import psycopg

    try:
        return psycopg.connect(**cluster.conninfo(database), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as e:
        # psycopg's message names host, port and user, never the password
        raise PostgresError(f"cannot connect to PostgreSQL database {database!r} of {cluster.root}: "
                            f"{str(e).strip()}; is it running (`sfr labelstudio db start`)?") from None


def database_exists(cluster: Cluster, name: str) -> bool:
    with _connect(cluster) as con:
        return con.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def create_database(cluster: Cluster, name: str, template: str | None = None, exist_ok: bool = True) -> bool:
    """Create `name` (optionally as a copy of `template`, which must have no connections). True if created."""
    from psycopg import sql

    if database_exists(cluster, name):
        if exist_ok:
            return False
        raise PostgresError(f"database {name!r} already exists in {cluster.root}")
    q = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        q = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
    with _connect(cluster) as con:
        con.execute(q)
    return True


def drop_database(cluster: Cluster, name: str) -> None:
    from psycopg import errors, sql

    with _connect(cluster) as con:
        try:
            con.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        except errors.ObjectInUse:
            raise PostgresError(f"database {name!r} is in use (is Label Studio still running? "
                                "`sfr labelstudio down` first)") from None


def _client_env(cluster: Cluster) -> dict[str, str]:
    return {**os.environ, "PGPASSWORD": cluster.credentials()["password"], "PGCONNECT_TIMEOUT": "10"}


def _client_args(cluster: Cluster) -> list[str]:
    c = cluster.credentials()
    return ["-h", HOST, "-p", str(c["port"]), "-U", c["user"]]


def backup(cluster: Cluster, database: str, out: Path) -> dict:
    """pg_dump of `database` in the custom format to `out` (0600: it holds Label Studio's tokens)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    r = subprocess.run([str(bindir() / "pg_dump"), *_client_args(cluster), "-Fc", "-f", str(tmp), database],
                       env=_client_env(cluster), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise PostgresError(f"pg_dump of database {database!r} failed: {r.stderr.strip()[-1000:]}")
    os.replace(tmp, out)
    return {"database": database, "file": str(out), "bytes": out.stat().st_size}


def restore(cluster: Cluster, dump: Path, database: str, replace: bool = False) -> dict:
    """Restore a `backup` into `database`, which must not exist (or `replace`: dropped first).
    On failure the half-restored database is dropped; an existing one is only dropped with `replace`."""
    dump = Path(dump)
    if not dump.is_file():
        raise PostgresError(f"{dump}: no such backup file")
    if database_exists(cluster, database):
        if not replace:
            raise PostgresError(f"database {database!r} already exists; pass --replace to drop it and restore "
                                "the backup in its place (stop Label Studio first)")
        drop_database(cluster, database)
    create_database(cluster, database, exist_ok=False)
    r = subprocess.run([str(bindir() / "pg_restore"), *_client_args(cluster), "--no-owner", "--exit-on-error",
                        "-d", database, str(dump)], env=_client_env(cluster), capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        drop_database(cluster, database)
        raise PostgresError(f"pg_restore of {dump} into {database!r} failed (nothing kept): {r.stderr.strip()[-1000:]}")
    return {"database": database, "file": str(dump)}


# -- Label Studio ---------------------------------------------------------------------------------
def read_choice(ls_data_dir: Path) -> dict | None:
    try:
        return json.loads((Path(ls_data_dir) / CHOICE_FILE).read_text())
    except FileNotFoundError:
        return None


def record_choice(ls_data_dir: Path, cluster: Cluster, database: str) -> None:
    Path(ls_data_dir).mkdir(parents=True, exist_ok=True)
    _write_private_json(Path(ls_data_dir) / CHOICE_FILE,
                        {"engine": "postgres", "cluster": str(cluster.root), "name": database})


def label_studio_env(cluster: Cluster, database: str) -> dict[str, str]:
    """Environment that points Label Studio's Django at `database` (holds the password)."""
    c = cluster.conninfo(database)
    return {"DJANGO_DB": "default", "POSTGRE_NAME": database, "POSTGRE_USER": c["user"],
            "POSTGRE_PASSWORD": c["password"], "POSTGRE_HOST": HOST, "POSTGRE_PORT": str(c["port"])}


def database_env(ls_data_dir: Path, db: str | None) -> dict[str, str]:
    """The database part of Label Studio's environment, for `db` = "sqlite", "postgres", or None (what
    this data dir was first started with; SQLite when never started). For PostgreSQL the workspace's
    cluster (`<home>/postgres`, next to the data dir) is initialised and started, and the database created."""
    ls_data_dir = Path(ls_data_dir)
    choice = read_choice(ls_data_dir)
    recorded = choice["engine"] if choice else None
    db = db or recorded or "sqlite"
    if db not in ("sqlite", "postgres"):
        raise PostgresError(f"unknown Label Studio database {db!r}; use sqlite or postgres")
    if db == "sqlite":
        if recorded == "postgres":
            raise PostgresError(f"Label Studio in {ls_data_dir} keeps its data in PostgreSQL (database "
                                f"{choice['name']!r}); start it with --db postgres (or without --db)")
        return {}
    if choice is None:
        if (ls_data_dir / "label_studio.sqlite3").exists():
            raise PostgresError(f"Label Studio in {ls_data_dir} already keeps its data in SQLite; on PostgreSQL it "
                                "would start empty. Keep SQLite (no --db), or move that data dir away first")
        record_choice(ls_data_dir, Cluster.for_home(ls_data_dir.parent), LS_DATABASE)
        choice = read_choice(ls_data_dir)
    cluster = Cluster(Path(choice["cluster"]))
    start(cluster)
    create_database(cluster, choice["name"])
    return label_studio_env(cluster, choice["name"])
