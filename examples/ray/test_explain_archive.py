"""The Ray pipeline on a local Ray (2 CPUs) over the twelve fixture photos: every row equals the
plain single-process loop's, map for map, for the same seed."""
import os
import pathlib
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import ray

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import explain_archive  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
PHOTOS = os.environ.get("IBEX_PHOTOS", str(ROOT.parent / "shared" / "fixtures" / "images" / "photos" / "original"))
MODEL = str(ROOT / "models" / "efficientnet-lite0")
OPTIONS = {"seed": 7}


def test_ray_results_equal_the_plain_loop(tmp_path):
    t = time.perf_counter()
    plain = explain_archive.run_plain(PHOTOS, MODEL, "iba", OPTIONS)
    plain_s = time.perf_counter() - t
    assert len(plain) == 12
    explain_archive.init_ray(workers=2, log_to_driver=False)
    try:
        ray_s = explain_archive.run(PHOTOS, str(tmp_path / "out"), MODEL, "iba", OPTIONS, workers=2, batch_size=3)
    finally:
        ray.shutdown()
    table = pq.read_table(str(tmp_path / "out")).to_pylist()
    assert len(table) == 12
    by_path = {row["path"]: row for row in table}
    for want in plain:
        got = by_path[want["path"]]
        assert got["target"] == want["target"] and got["label"] == want["label"]
        assert (got["width"], got["height"], got["units"]) == (want["width"], want["height"], want["units"])
        assert np.array_equal(np.asarray(got["map"], dtype=np.float32), want["map"]), want["path"]
        assert got["map_sum"] == want["map_sum"]
    print(f"\n12 photos, IBA: plain loop {plain_s:.1f} s, Ray on 2 CPUs {ray_s:.1f} s (incl. worker start-up)")
