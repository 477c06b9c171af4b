"""Explain a whole archive of images (or DICOM files) on Ray.

A Ray Data pipeline: list the files, ``map_batches`` with a class-based callable that loads one
ibex model per worker process and explains each batch, write maps and scores to Parquet.

    python examples/ray/explain_archive.py IMAGES_DIR OUT_DIR [--method iba] [--seed 0]
    python examples/ray/explain_archive.py IMAGES_DIR OUT_DIR --address ray://head:10001

Each Parquet row: ``path``, ``method``, ``target`` / ``label`` / ``probability`` (classifiers),
``map_name``, ``units``, ``width``, ``height``, ``map`` (the main map, row-major float32),
``map_sum``, ``map_max`` and ``elapsed_ms``. The same seed gives the same maps as a plain loop.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import time
from typing import Dict, List

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".dcm"}


def list_images(folder: str) -> List[str]:
    """Every image or DICOM file under ``folder``, sorted."""
    root = pathlib.Path(folder)
    files = sorted(str(p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images (or .dcm files) under {folder}")
    return files


def explain_one(explainer, path: str, method: str) -> Dict[str, object]:
    """One row of the output for one file."""
    with explainer.explain(path) as r:
        m = r.maps[0]
        meta = r.json
    target = meta.get("target") or {}
    return {
        "path": path,
        "method": method,
        "target": int(target.get("index", -1)),
        "label": str(target.get("label", "")),
        "probability": float(target.get("probability", float("nan"))),
        "map_name": m.name,
        "units": m.units,
        "width": int(m.width),
        "height": int(m.height),
        "map": m.data.ravel().astype(np.float32),
        "map_sum": float(m.data.sum(dtype=np.float64)),
        "map_max": float(m.data.max()),
        "elapsed_ms": float(meta.get("elapsed_ms", 0.0)),
    }


class Explain:
    """The ``map_batches`` callable: one model per worker process, loaded once."""

    def __init__(self, model_dir: str, method: str, options: dict):
        import ibex  # imported in the worker

        self.method = method
        self.model = ibex.Model(model_dir)
        self.explainer = ibex.Explainer(self.model, method, **options)

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, list]:
        rows = [explain_one(self.explainer, str(p), self.method) for p in batch["path"]]
        return {k: [row[k] for row in rows] for k in rows[0]}


def run(images: str, out: str, model_dir: str, method: str = "iba", options: dict | None = None,
        workers: int = 2, batch_size: int = 4, address: str | None = None) -> float:
    """Explains every file under ``images`` on Ray and writes Parquet into ``out``; returns the
    wall time in seconds (from the first task to the last file written)."""
    import ray

    options = dict(options or {})
    if not ray.is_initialized():
        init_ray(address, workers)
    files = list_images(images)
    start = time.perf_counter()
    ds = ray.data.from_items([{"path": f} for f in files])
    ds = ds.map_batches(Explain, fn_constructor_kwargs={"model_dir": model_dir, "method": method, "options": options},
                        batch_size=batch_size, concurrency=workers, num_cpus=1)
    ds.write_parquet(out)
    return time.perf_counter() - start


def init_ray(address: str | None = None, workers: int = 2, **kwargs) -> None:
    """Starts a local Ray with ``workers`` CPUs, or joins the cluster at ``address``. Workers get
    this folder as their working directory (so they import this module) and the same
    ``IBEX_LIBRARY`` / ``PYTHONPATH`` as this process; on a cluster, install the ibex package
    and libibex on every node (or point ``IBEX_LIBRARY`` at a shared copy)."""
    import ray

    # Absolute paths: the workers run in the uploaded working directory.
    env = {}
    if "IBEX_LIBRARY" in os.environ:
        env["IBEX_LIBRARY"] = os.path.abspath(os.environ["IBEX_LIBRARY"])
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in os.environ["PYTHONPATH"].split(os.pathsep) if p)
    runtime_env = {"working_dir": str(pathlib.Path(__file__).resolve().parent), "env_vars": env}
    ray.init(address=address, runtime_env=runtime_env, include_dashboard=False,
             **({} if address else {"num_cpus": workers}), **kwargs)


def run_plain(images: str, model_dir: str, method: str = "iba", options: dict | None = None) -> List[Dict[str, object]]:
    """The same work in one process, in a plain loop (the reference for the Ray results)."""
    import ibex

    with ibex.Model(model_dir) as model, ibex.Explainer(model, method, **(options or {})) as ex:
        return [explain_one(ex, f, method) for f in list_images(images)]


def main() -> None:
    here = pathlib.Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", help="folder of images or DICOM files (searched recursively)")
    p.add_argument("out", help="output folder for the Parquet files")
    p.add_argument("--model", default=str(here / "models" / "efficientnet-lite0"))
    p.add_argument("--method", default="iba")
    p.add_argument("--seed", type=int, default=0, help="noise seed (the same seed gives the same maps)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (one model each)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--address", default=None, help="a Ray cluster (e.g. ray://head:10001); default: local")
    a = p.parse_args()
    options = {"seed": a.seed} if a.method in ("iba", "m2ib", "dual-ib") else {}
    secs = run(a.images, a.out, a.model, a.method, options, a.workers, a.batch_size, a.address)
    print(f"explained {len(list_images(a.images))} files in {secs:.1f} s -> {a.out}")


if __name__ == "__main__":
    main()
