"""The curation working tables are a written interface (warehouse/curation/README.md): a build
creates no temporary table the README does not list, and each has the columns listed."""
from __future__ import annotations

import re
from pathlib import Path

from tests.fixtures.curation import make_annotated_warehouse
from warehouse.curation import dataset as build
from warehouse.curation.config import CurationConfig

README = Path(build.__file__).with_name("README.md")


def _documented() -> dict[str, str]:
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|", README.read_text(), flags=re.M)
    return {name: columns for name, columns in rows}


def test_every_working_table_of_a_build_is_documented_with_its_columns(workspace):
    make_annotated_warehouse(workspace, n_samples=8, n_annotators=3, seed=0)
    wh, config = build._prepare_hashes(workspace, CurationConfig(dedupe_hamming=-1))
    with wh.write() as con:
        build._curate(con, config, {})
        build._dataset_tables(con, config.score_stat)
        created = dict(con.execute(
            "SELECT c.table_name, list(c.column_name ORDER BY c.column_index) FROM duckdb_columns() c "
            "JOIN duckdb_tables() t USING (table_oid) WHERE t.temporary GROUP BY c.table_name").fetchall())
    documented = _documented()
    assert len(created) >= 15 and set(created) <= set(documented), set(created) - set(documented)
    for table, columns in created.items():
        text = documented[table]
        if text.startswith("the "):   # described by reference to another table's columns
            continue
        missing = [c for c in columns if not re.search(rf"\b{re.escape(c)}\b", text)
                   and not re.search(r"\{[^}]*\b" + re.escape(c.rsplit("_", 1)[-1]) + r"\b", text)]
        assert not missing, f"{table}: columns {missing} are not in the README"
