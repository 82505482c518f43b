"""A small job's fixed cost: the annotate job on two videos x 12 frames, where nearly all the time is Ray
start-up, actor start-up (each actor process imports torch/timm and loads its models) and scheduling.

    python benchmarks/overhead.py [--data ../shared/data] [--compare /path/to/other/checkout ...]

Each checkout (this one, then every --compare one, e.g. a `git worktree` of an earlier commit) runs in its own
process and its own local Ray (2 CPUs, started by that checkout's fer_ray.runtime.init_ray, as its jobs do): one annotate run from the videos (preprocess + logits +
post-processing), then two from the faces it wrote (logits + post-processing only), with untrained smoke
models. Also the import time of each actor's module in a fresh interpreter. Prints one table; the ratio of
two checkouts measured in one call of this script is the figure to quote (the machine's load moves both).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACTOR_MODULES = {"preprocess actors": "fer_ray.preprocess.stages", "logits actors": "fer_ray.infer.logits",
                 "post-processing actor": "fer_ray.infer.postprocess"}
VIDEOS = ("labeled/tw_TW01.mp4", "unlabeled/pyfeat_no_face.mp4")

CHILD = r'''
import json, os, sys, time
VIDEOS = sys.argv[3].split(',')
t0 = time.perf_counter()
from fer_ray.jobs import annotate
from fer_ray.runtime import init_ray
from fer_ray.models.smoke import write_untrained_models
out, data = sys.argv[1], sys.argv[2]
write_untrained_models(f"{out}/models")
os.makedirs(f"{out}/in")
for rel in VIDEOS:
    os.symlink(f"{data}/videos/{rel}", f"{out}/in/{os.path.basename(rel)}")
t = time.perf_counter(); init_ray(num_cpus=2)  # the checkout's own local instance, as its jobs start it
result = {"ray_init_s": time.perf_counter() - t, "runs": []}
for run in (1, 2, 3):
    source = f"{out}/in" if run == 1 else f"{out}/ann1"
    config = annotate.load_config({"input": source, "models": f"{out}/models", "output": f"{out}/ann{run}",
                                   "stride": 10, "max_frames": 12, "allowed_roots": [f"{data}/videos", f"{out}/in"]})
    t = time.perf_counter(); summary = annotate.run(config)
    result["runs"].append({"from": "videos" if run == 1 else "faces", "seconds": time.perf_counter() - t,
                           "videos": summary["videos_annotated"]})
print("RESULT " + json.dumps(result))
'''


def import_seconds(tree: str, module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=os.environ | {"PYTHONPATH": tree}, cwd=tree)
    return float(out.stdout.strip().splitlines()[-1])


def measure(tree: str, data: str) -> dict:
    env = os.environ | {"PYTHONPATH": tree, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "TQDM_DISABLE": "1"}
    with tempfile.TemporaryDirectory(prefix="fer-ray-overhead-") as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, f"{tmp}/run", data, ",".join(VIDEOS)], capture_output=True, text=True,
                             env=env, cwd=tree, timeout=900)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not line:
        raise SystemExit(f"{tree}: the job failed:\n{out.stderr[-3000:]}")
    result = json.loads(line[0][len("RESULT "):])
    result["imports_s"] = {name: import_seconds(tree, module) for name, module in ACTOR_MODULES.items()}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--compare", nargs="*", default=[], help="other checkouts to measure the same way")
    args = parser.parse_args(argv)
    data = str(Path(args.data).resolve())
    if not Path(data, "videos", VIDEOS[0]).exists():
        raise SystemExit(f"no shared data under {data}: pass --data")
    sys.path.insert(0, str(ROOT))
    from fer_ray.runtime import machine_info

    print(json.dumps(machine_info()))
    rows = []
    for tree in [str(ROOT), *args.compare]:
        result = measure(tree, data)
        runs = result["runs"]
        rows.append([tree, f"{result['ray_init_s']:.1f}", f"{runs[0]['seconds']:.1f}",
                     " / ".join(f"{r['seconds']:.1f}" for r in runs[1:]),
                     ", ".join(f"{k} {v:.1f}" for k, v in result["imports_s"].items())])
    header = ["checkout", "ray.init s", "annotate from videos s", "from faces s (2 runs)", "actor module import s"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
