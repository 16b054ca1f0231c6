"""An index run that fills the disk stops with one line naming the file and the fix, never a
"Bus error"; once space is freed the same command finishes, redoing nothing committed."""

from __future__ import annotations

import json

from conftest import SAMPLES, save_random_scorer
from tmpfs import run_on_tmpfs


def test_index_run_on_a_full_disk_then_resumes(tmp_path):
    scorer = save_random_scorer(tmp_path, rerank_k=5)
    cache = tmp_path / "cache"
    r = run_on_tmpfs(
        tmp_path,
        f"""
        import json
        env = {{**os.environ, "HF_HUB_OFFLINE": "1", "VTSEARCH_COMMIT_IMAGES": "4",
                "VTSEARCH_CACHE": {str(cache)!r}}}
        cmd = [sys.executable, "-m", "vtsearch.cli", "--db", str(root / "coll"),
               "--reranker", {scorer!r}]
        index = [*cmd, "index", {str(SAMPLES)!r}, "--workers", "0"]
        fill(root / "filler")
        # Room for the catalog and a few groups of rows and tokens, not for all 19 photos.
        os.truncate(root / "filler", os.path.getsize(root / "filler") - 480_000)
        first = subprocess.run(index, capture_output=True, text=True, env=env)
        os.unlink(root / "filler")
        second = subprocess.run(index, capture_output=True, text=True, env=env)
        check = subprocess.run([*cmd, "check"], capture_output=True, text=True, env=env)
        status = subprocess.run([*cmd, "status", "--json"], capture_output=True, text=True,
                                env=env)
        print(json.dumps({{"first": [first.returncode, first.stdout, first.stderr],
                          "second": [second.returncode, second.stdout, second.stderr],
                          "check": [check.returncode, check.stdout + check.stderr],
                          "status": status.stdout}}))
        """,
        size="2m",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    code, _, err = out["first"]
    assert code == 6, err
    assert err.startswith("Error: disk full: ") and "free some space" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    code, stdout, err = out["second"]
    assert code == 0, err
    assert ", 0 failed" in stdout
    embedded = int(stdout.split(" embedded")[0].split()[-1])
    unchanged = int(stdout.split(" unchanged")[0].split()[-1])
    assert embedded + unchanged == 19 and unchanged > 0, out["first"]  # committed kept
    assert out["check"][0] == 0, out["check"][1]
    assert json.loads(out["status"])["counts"]["indexed"] == 19
