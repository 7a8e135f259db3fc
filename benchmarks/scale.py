"""Cost as the data grows: ingest, store size, loader speed and memory, training memory, per store size.

    python benchmarks/scale.py --workdir=/tmp/ecgjax_scale --sizes=10000,100000
    python benchmarks/scale.py --workdir=/tmp/ecgjax_scale_small --sizes=1000,4000 --train_steps=3  # a check

For each size N (records): ingests a synthetic store of N/4 patients x 4 records of 10 s at 250 Hz
(reused when already there), then measures, each in a fresh process so one size's memory does not
carry into the next:
  - ingest: records/s (with --workers processes), store size on disk, bytes per record;
  - store: seconds and resident memory to open it (metadata table, index, lead masks);
  - loader: seconds and memory to build the pretraining dataset (its flat record arrays), 10 s
    segments/s (--batch, views segment + patient_segment, in-process), and the memory of a process
    that only loads (read-ahead buffers included);
  - training: the memory of `experiments/pretrain.py` (configs/hybrid.py:runlocal, --train_steps
    steps) on the store.
Memory is given as the process's own (RssAnon) and, in brackets, its peak RSS, which also counts
the pages of the memory-mapped store it has read (page cache, shared, reclaimable). What should
stay flat as N grows (the loader holds memory maps and flat index arrays, no Python object per
record): loader segments/s and the loader's own memory; the store's metadata table (pandas, read
by the training process for splits and labels, not by loader workers) is the part that grows.
The loader is timed twice: with the store's pages dropped from the page cache first (root only,
else n/a), where random 60 kB reads from disk set the pace, and after reading the store once so its
pages are cached (where RAM holds it), which is the loader's own cost. Prints one table row per
size (benchmarks/RESULTS.md, '## Scale'). Run alone, on an idle machine.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from absl import app, flags

from ecgjax.machine import describe as describe_machine

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/ecgjax_scale", "Scratch directory for the stores and runs.")
_SIZES = flags.DEFINE_list("sizes", ["10000", "100000"], "Store sizes in records (multiples of 4).")
_WORKERS = flags.DEFINE_integer("workers", 2, "Ingest worker processes.")
_SHARD_SIZE = flags.DEFINE_integer("shard_size", 250, "Synthetic patients per ingest shard (4 records each).")
_BATCHES = flags.DEFINE_integer("batches", 100, "Timed loader batches (after 3 warm-up batches).")
_BATCH = flags.DEFINE_integer("batch", 256, "Loader batch size (at most the patients of the smallest store).")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 20, "Pretraining steps for the training memory figure.")

REPO = pathlib.Path(__file__).resolve().parents[1]

# Runs in a fresh process: open the store, build the loader, time batches; prints one JSON line.
_LOADER = """
import json, resource, sys, time
from ecgjax.data.pipeline import make_pretrain_dataset
from ecgjax.data.store import ECGStore

def rss_mb():  # resident now, MiB
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

base = rss_mb()
t0 = time.perf_counter()
store = ECGStore(sys.argv[1])
opened = time.perf_counter()
store_mb = rss_mb() - base  # the metadata table, index and lead masks
batch = int(sys.argv[3])
ds = make_pretrain_dataset(store, views=("segment", "patient_segment"), batch_size=batch, segment_s=10.0,
                           seed=0, split=None, num_workers=0)
built = time.perf_counter()
index_mb = rss_mb() - base - store_mb  # the loader's own tables (flat record arrays)
it = iter(ds)
for _ in range(3):
    next(it)
t1 = time.perf_counter()
for _ in range(int(sys.argv[2])):
    next(it)
rate = batch * int(sys.argv[2]) / (time.perf_counter() - t1)
anon = int(open("/proc/self/status").read().split("RssAnon:")[1].split()[0]) / 1024
print(json.dumps({"open_s": opened - t0, "store_mb": store_mb, "build_s": built - opened, "index_mb": index_mb,
                  "segments_per_s": rate,
                  "loader_anon_mb": anon, "loader_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def directory_bytes(path: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def ingest_store(path: pathlib.Path, records: int) -> dict:
    """The synthetic store of `records` records at `path` (ingested once); its ingest summary."""
    from ecgjax.data.ingest import ingest

    if (path / "summary.json").is_file():
        return json.loads((path / "summary.json").read_text())
    shutil.rmtree(path, ignore_errors=True)
    return ingest("synthetic", f"patients={records // 4},records=4,seed=0", path, workers=_WORKERS.value,
                  shard_size=_SHARD_SIZE.value, progress=False)


def run_child(command: list[str]) -> str:
    """The stdout of `command` (JAX on CPU); a RuntimeError with its stderr when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    if result.returncode:
        raise RuntimeError(f"{' '.join(command[:2])} ... {command[-2:]} failed ({result.returncode}):\n"
                           f"{result.stderr[-3000:]}")
    return result.stdout


def peak_memory_mb(command: list[str]) -> dict:
    """Peak memory (MiB) of `command`, watched by a small wrapper: 'rss' (os.wait4's ru_maxrss, which
    counts the store's memory-mapped pages it touched) and 'anon' (the largest RssAnon sampled every
    50 ms: the process's own memory, what grows with per-record Python objects)."""
    wrapper = ("import json, os, subprocess, sys, time\n"
               "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
               "os.set_blocking(p.stderr.fileno(), False)\n"
               "anon, err = 0, b''\n"
               "while True:\n"
               "    pid, status, usage = os.wait4(p.pid, os.WNOHANG)  # reaps it with its own rusage\n"
               "    if pid:\n"
               "        break\n"
               "    try:\n"
               "        text = open(f'/proc/{p.pid}/status').read()\n"
               "        anon = max(anon, int(text.split('RssAnon:')[1].split()[0]))\n"
               "    except (OSError, IndexError):\n"
               "        pass\n"
               "    err = (err + (p.stderr.read() or b''))[-3000:]\n"
               "    time.sleep(0.05)\n"
               "print(json.dumps({'status': os.waitstatus_to_exitcode(status), 'anon': anon / 1024,\n"
               "                  'rss': usage.ru_maxrss / 1024, 'err': err.decode(errors='replace')}))\n")
    result = json.loads(run_child([sys.executable, "-c", wrapper, *command]).strip().splitlines()[-1])
    if result["status"]:
        raise RuntimeError(f"{' '.join(command[:2])} failed:\n{result['err']}")
    return result


def drop_page_cache() -> bool:
    """Empties the kernel's page cache (root only); False where that is not allowed."""
    try:
        os.sync()
        pathlib.Path("/proc/sys/vm/drop_caches").write_text("1")
        return True
    except OSError:
        return False


def read_into_page_cache(store: pathlib.Path) -> float:
    """Reads every file of `store` once (so its pages are cached, where RAM holds them); GB/s."""
    started, total = time.perf_counter(), 0
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                total += len(chunk)
    return total / 1e9 / (time.perf_counter() - started)


def loader_figures(store: pathlib.Path) -> dict:
    out = run_child([sys.executable, "-c", _LOADER, str(store), str(_BATCHES.value), str(_BATCH.value)])
    return json.loads(out.strip().splitlines()[-1])


def measure(records: int, workdir: pathlib.Path) -> dict:
    store = workdir / f"store_{records}"
    summary = ingest_store(store, records)
    size = directory_bytes(store)
    # The loader twice: its pages on disk (random ~60 kB reads: the disk's speed, not the loader's),
    # then cached (what the loader's own work costs).
    cold = loader_figures(store)["segments_per_s"] if drop_page_cache() else float("nan")
    read_gb_s = read_into_page_cache(store)
    loader = loader_figures(store)
    run = workdir / f"train_{records}"
    shutil.rmtree(run, ignore_errors=True)
    train = peak_memory_mb([sys.executable, str(REPO / "experiments" / "pretrain.py"),
                            f"--config={REPO / 'configs' / 'hybrid.py'}:runlocal", f"--workdir={run}",
                            f"--config.data.store={store}", f"--config.train.num_steps={_TRAIN_STEPS.value}",
                            f"--config.train.checkpoint_every={_TRAIN_STEPS.value}"])
    return dict(records=summary["records"], patients=summary["patients"],
                ingest_records_per_s=summary.get("records_per_second", float("nan")),
                ingest_s=summary.get("seconds", float("nan")), store_gb=size / 1e9, bytes_per_record=size / records,
                train_anon_mb=train["anon"], train_peak_rss_mb=train["rss"], cold_segments_per_s=cold,
                sequential_read_gb_s=read_gb_s, **loader)


def main(argv):
    del argv
    workdir = pathlib.Path(_WORKDIR.value)
    workdir.mkdir(parents=True, exist_ok=True)
    print("machine:", describe_machine())
    header = ("| records | patients | ingest records/s | store GB | store open s | store MiB | loader build s "
              "| loader index MiB | loader segments/s cached (from disk) | loader own MiB (peak RSS) | training own MiB (peak RSS) |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for size in (int(s) for s in _SIZES.value):
        started = time.perf_counter()
        r = measure(size, workdir)
        print(f"| {r['records']:,} | {r['patients']:,} | {r['ingest_records_per_s']:,.0f} | {r['store_gb']:.2f} | "
              f"{r['open_s']:.2f} | {r['store_mb']:.0f} | {r['build_s']:.2f} | {r['index_mb']:.1f} | "
              f"{r['segments_per_s']:,.0f} ({r['cold_segments_per_s']:,.0f}) | "
              f"{r['loader_anon_mb']:.0f} ({r['loader_peak_rss_mb']:.0f}) | "
              f"{r['train_anon_mb']:.0f} ({r['train_peak_rss_mb']:.0f}) |", flush=True)
        print(json.dumps(dict(r, wall_s=round(time.perf_counter() - started, 1))), file=sys.stderr)
    print("machine:", describe_machine())


if __name__ == "__main__":
    app.run(main)
