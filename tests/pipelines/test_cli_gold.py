"""`sfr annotate gold`: an annotator lead fills in a template and stores gold answers."""
import json
import os
import subprocess
import sys


def sfr(*args, home):
    env = {**os.environ, "SFR_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_template_fill_store_and_clear_errors(curation_ws, annotated_warehouse, tmp_path):
    home = curation_ws.home
    sid = annotated_warehouse.sample_ids[0]
    p = sfr("annotate", "gold", "--template", sid, home=home)
    assert p.returncode == 0, p.stderr
    tpl = json.loads(p.stdout)
    rid = next(iter(tpl[sid]["regions"]))
    tpl[sid]["image"]["overall"] = 2
    tpl[sid]["regions"][rid]["preserve"] = 7
    f = tmp_path / "gold.json"
    f.write_text(json.dumps(tpl))
    bad = sfr("annotate", "gold", str(f), home=home)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert f"gold.json: gold answer {sid}/{rid}/preserve: rating must be an integer 1..5" in bad.stderr
    assert "nothing was stored" in bad.stderr
    tpl[sid]["regions"][rid]["preserve"] = 3
    f.write_text(json.dumps(tpl))
    ok = sfr("annotate", "gold", str(f), home=home)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"stored": 2, "samples": 1}
    missing = sfr("annotate", "gold", str(tmp_path / "none.json"), home=home)
    assert missing.returncode == 2 and "none.json: no such file" in missing.stderr
