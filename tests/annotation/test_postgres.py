"""Label Studio on PostgreSQL: the workspace's cluster (private, loopback only, password-protected),
push and sync on both backends (a parametrized fixture), and backup + restore with data equal."""
from __future__ import annotations

import json
import os
import pwd
import stat
from pathlib import Path

import psycopg
import pytest

from annotation import postgres, server
from annotation.client import LSHttp
from annotation.push import push_batch
from annotation.sync import sync_project
from pipelines.cli import main as sfr
from tests.annotation.test_sync import _ratings
from tests.fixtures.labelstudio import seed_warehouse
from warehouse.db import Warehouse


def test_cluster_is_private_loopback_only_and_needs_the_password(pg_cluster):
    c = pg_cluster.cluster
    data = os.stat(c.data)
    assert stat.S_IMODE(data.st_mode) == 0o700
    want_owner = postgres.OS_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    assert pwd.getpwuid(data.st_uid).pw_name == want_owner
    assert stat.S_IMODE(os.stat(c.credentials_file).st_mode) == 0o600
    info = c.conninfo("postgres")
    with psycopg.connect(**info) as con:
        assert con.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        assert con.execute("SHOW unix_socket_directories").fetchone()[0] == str(c.run_dir)
        assert con.execute("SELECT current_setting('password_encryption')").fetchone()[0] == "scram-sha-256"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**{**info, "password": "wrong"}).close()
    st = postgres.status(c)
    assert st["running"] and st["port"] == info["port"] and "password" not in json.dumps(st)
    # the password never reaches the server log
    assert info["password"] not in c.log.read_text()


def test_cli_db_status_names_the_cluster_never_the_password(pg_cluster, capsys):
    assert sfr(["--home", str(pg_cluster.home), "labelstudio", "db", "status"]) == 0
    out = capsys.readouterr().out
    st = json.loads(out)
    assert st["running"] and st["root"] == str(pg_cluster.cluster.root) and st["host"] == "127.0.0.1"
    assert pg_cluster.cluster.credentials()["password"] not in out


def test_database_choice_is_kept_and_switching_is_refused(tmp_path):
    ls_dir = tmp_path / "labelstudio"
    ls_dir.mkdir()
    assert postgres.database_env(ls_dir, None) == {}  # a new data dir: SQLite
    (ls_dir / "label_studio.sqlite3").write_bytes(b"")
    with pytest.raises(postgres.PostgresError, match="already keeps its data in SQLite"):
        postgres.database_env(ls_dir, "postgres")
    other = tmp_path / "other"
    postgres.record_choice(other, postgres.Cluster(tmp_path / "pg"), "lsdb")
    with pytest.raises(postgres.PostgresError, match="keeps its data in PostgreSQL .*'lsdb'"):
        postgres.database_env(other, "sqlite")
    with pytest.raises(postgres.PostgresError, match="unknown Label Studio database 'mysql'"):
        postgres.database_env(other, "mysql")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def ls_any(request):
    """The same tests on Label Studio with SQLite and with PostgreSQL."""
    return request.getfixturevalue("labelstudio" if request.param == "sqlite" else "labelstudio_pg")


@pytest.mark.slow
@pytest.mark.labelstudio
def test_push_annotate_update_delete_then_sync(ls_any, tmp_path):
    key = "pg-sync"
    ws = ls_any.workspace
    seeded = seed_warehouse(ws, tmp_path, names=("astronaut",), rollouts=3)
    pushed = push_batch(ws, key, batch_id=seeded["batch_id"], conn=ls_any.conn)
    assert pushed.imported == 3 and pushed.errors == {}
    wh = Warehouse.open(ws)
    tasks = dict(wh.query("SELECT sample_id, ls_task_id FROM tasks WHERE project_key = ?", [key]))
    ls = ls_any.client()
    t0, t1, t2 = (tasks[s] for s in seeded["sample_ids"])
    pred = ls.predictions.list(task=t0)[0].result
    a0 = ls.annotations.create(id=t0, result=pred + _ratings({"p0": (4, 5, "correct_edit")}))
    a1 = ls.annotations.create(id=t1, result=pred + _ratings({"p0": (2, 2, "fine")}))
    s = sync_project(ws, key, conn=ls_any.conn)
    assert (s.created, s.updated, s.deleted) == (2, 0, 0)
    ls.annotations.update(id=a1.id, result=pred + _ratings({"p0": (3, 3, "fine")}, overall=(2, 2, 2)))
    ls.annotations.delete(id=a0.id)
    ls.annotations.create(id=t2, result=pred + _ratings({"p0": (5, 5, "correct_edit")}))
    s = sync_project(ws, key, conn=ls_any.conn)
    assert (s.created, s.updated, s.deleted) == (1, 1, 1)
    # the warehouse holds exactly Label Studio's live annotations, result for result
    with LSHttp(ls_any.conn) as http:
        live = {a["id"]: a["result"] for page in http.iter_tasks(pushed.ls_project_id, all_fields=True)
                for t in page for a in t["annotations"]}
    rows = wh.query("SELECT a.ls_annotation_id, v.result FROM annotations a JOIN annotation_versions v USING "
                    "(project_key, ls_annotation_id, version) WHERE a.project_key = ? AND NOT a.is_deleted", [key])
    assert {k: json.loads(r) for k, r in rows} == live and len(live) == 2


def _table_digests(info: dict) -> dict[str, tuple[int, str]]:
    """{table: (rows, md5 of all rows in a fixed order)} for every table in the public schema."""
    with psycopg.connect(**info) as con:
        tables = [r[0] for r in con.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
        return {t: con.execute(f'SELECT count(*), md5(coalesce(string_agg(x::text, \'|\' ORDER BY x::text), \'\')) '
                               f'FROM "{t}" x').fetchone() for t in tables}


@pytest.mark.slow
@pytest.mark.labelstudio
def test_backup_then_restore_into_a_fresh_database_is_equal(labelstudio_pg, tmp_path, capsys):
    ls = labelstudio_pg.client()
    p = ls.projects.create(title="backup", label_config='<View><Text name="t" value="$text"/>'
                           '<Choices name="c" toName="t"><Choice value="a"/><Choice value="b"/></Choices></View>')
    ids = ls.projects.import_tasks(id=p.id, request=[{"text": f"t{i}"} for i in range(5)],
                                   return_task_ids=True).task_ids
    ls.annotations.create(id=ids[0], result=[{"from_name": "c", "to_name": "t", "type": "choices",
                                              "value": {"choices": ["b"]}}])
    home = str(labelstudio_pg.workspace.home)
    dump = tmp_path / "ls.dump"
    # the running server's own database is never restored over
    assert sfr(["--home", home, "labelstudio", "restore", str(dump), "--replace"]) == 2
    assert "`sfr labelstudio down` first" in capsys.readouterr().err
    server.stop(labelstudio_pg.paths)  # nothing writes while the two databases are compared
    try:
        assert sfr(["--home", home, "labelstudio", "backup", str(dump)]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["bytes"] == dump.stat().st_size > 0 and stat.S_IMODE(dump.stat().st_mode) == 0o600
        choice = postgres.read_choice(labelstudio_pg.workspace.labelstudio)
        fresh = f"{choice['name']}_restored"
        assert sfr(["--home", home, "labelstudio", "restore", str(dump), "--into", fresh]) == 0
        cluster = postgres.Cluster(Path(choice["cluster"]))
        before = _table_digests(cluster.conninfo(choice["name"]))
        after = _table_digests(cluster.conninfo(fresh))
        assert after == before
        assert before["task"][0] >= 5 and before["task_completion"][0] >= 1 and before["authtoken_token"][0] >= 1
        assert sfr(["--home", home, "labelstudio", "restore", str(dump), "--into", fresh]) == 2
        assert "already exists; pass --replace" in capsys.readouterr().err
        postgres.drop_database(cluster, fresh)
    finally:
        labelstudio_pg.restart()
