"""Several processes, one program: real 2-process pretraining runs on this host, checked against a
1-process run of the same global batches, a kill -9 of one process, and the relaunch that resumes.

Every run goes through the real entry point (`python -m ecgjax.launch -- experiments/pretrain.py`):
2 processes x 2 simulated CPU devices = one 4-device mesh, gloo collectives, Orbax checkpoints
written by both. The comparison follows the tolerance argument of tests/equivalence.py (float64
compute, Adam eps 1, per-leaf differences under 1e-4 of the leaf's update); `run_pretrain.py` below
applies it to the entry point. The 1-process reference reads the same two patient shards
(`loop.make_dataset(..., shard=(i, 2))`) and concatenates their batches, which is the global batch
the two processes build with `make_array_from_process_local_data`.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import equivalence
from ecgjax import launch
from ecgjax.data.ingest import build_synthetic_store
from ecgjax.errors import UserError
from ecgjax.train.checkpoint import Checkpointer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups, pdeathsig (Linux)")

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
RUN_TIMEOUT_S = 600  # one run: ~20 s on 2 idle cores, minutes on a busy machine
HEARTBEAT_TIMEOUT_S = 15  # how long JAX lets a dead process go unnoticed in these runs
STOP_BOUND_S = 60         # a killed process's peers must be gone this soon (heartbeat + abort, loaded CPU)
KILL_AT_STEP = 5         # process 1 kills itself before this step; saves at 2 and 4 (2 is committed by then)

# The entry point with the tolerance argument applied (and, where asked, a kill -9 of one process).
RUN_PRETRAIN = textwrap.dedent("""
    import os, runpy, signal, sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    import equivalence
    equivalence.use_float64()
    from ecgjax.train import loop

    pretrain = loop.pretrain

    def float64_pretrain(config, workdir, *args, **kwargs):
        equivalence.configure(config)
        # No augmentation: its per-example keys are drawn inside the one global jitted program, so
        # the process layout cannot change them (tests/test_train.py checks 1 vs 4 devices with it
        # on); here it would only add ~10 s of float64 compilation to every run.
        config.data.augmentation = {{}}
        return pretrain(config, workdir, *args, **kwargs)

    loop.pretrain = float64_pretrain
    if os.environ.get("TEST_KILL_AT"):  # "process:step": that process is killed -9 before that step
        process, kill_step = map(int, os.environ["TEST_KILL_AT"].split(":"))
        step = loop.Trainer.step

        def step_or_die(self, state, batch):
            import jax
            if jax.process_index() == process and int(state.step) + 1 == kill_step:
                os.kill(os.getpid(), signal.SIGKILL)
            return step(self, state, batch)

        loop.Trainer.step = step_or_die
    sys.argv = [{pretrain!r}, *sys.argv[1:]]
    runpy.run_path({pretrain!r}, run_name="__main__")
""")

# 1 process, 4 devices: the reference runs, and every comparison (x64 must be on to read the runs).
COMPARE = textwrap.dedent("""
    import json, sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    import equivalence
    equivalence.use_float64()
    import jax, numpy as np
    from ecgjax.data import resolve
    from ecgjax.train import loop
    from ecgjax.train.checkpoint import Checkpointer
    assert jax.device_count() == 4 and jax.process_count() == 1, jax.devices()

    def saved_state(run, template):
        ckpt = Checkpointer(run + "/checkpoints")
        try:
            return equivalence.float_leaves(ckpt.restore_state_only(template))
        finally:
            ckpt.close()

    def compare(run):
        config = loop.load_config(run)  # the run's own config, float64 settings included
        store = resolve.open_store(config.data)
        trainer = loop.Trainer(config, num_devices=4)
        shards = [iter(loop.make_dataset(config, store, shard=(i, 2))) for i in range(2)]
        state, wrong = trainer.new_state(), trainer.new_state()
        start = equivalence.float_leaves(state)
        losses = []
        for _ in range(config.train.num_steps):
            parts = [next(it) for it in shards]
            batch = {{k: np.concatenate([p[k] for p in parts]) for k in parts[0]}}
            state, metrics = trainer.step(state, batch)
            losses.append(float(metrics["loss"]))
            # what a reduction over process 0's half instead of the global batch would see
            wrong, _ = trainer.step(wrong, {{k: np.concatenate([parts[0][k]] * 2) for k in parts[0]}})
        reference = equivalence.updates(equivalence.float_leaves(state), start)
        two = equivalence.updates(saved_state(run, trainer.new_state()), start)
        logged = [json.loads(line)["loss"] for line in open(run + "/metrics.jsonl")]
        return trainer, start, dict(
            losses=losses, logged=logged, update_rel_diff=equivalence.max_relative_difference(reference, two),
            wrong_update_rel_diff=equivalence.max_relative_difference(
                reference, equivalence.updates(equivalence.float_leaves(wrong), start)))

    runs = json.loads(sys.argv[1])
    out = {{}}
    for name, run in runs["equivalence"].items():
        trainer, start, out[name] = compare(run)
        if name == "hybrid":  # the killed-and-relaunched run against the uninterrupted one
            straight = equivalence.updates(saved_state(run, trainer.new_state()), start)
            resumed = equivalence.updates(saved_state(runs["resumed"], trainer.new_state()), start)
            out["resumed_update_rel_diff"] = equivalence.max_relative_difference(straight, resumed)
    print(json.dumps(out))
""")

# A small real 2-process program: one sum over the 4-device mesh per step, through the same
# initialisation and error handling as the entry points. TEST_LATE="process:seconds" makes that
# process reach its first step late (a slow compile); TEST_KILL_AT="process:step" kills it -9.
COLLECTIVES = textwrap.dedent("""
    import os, signal, sys, time
    sys.path[:0] = [{repo!r}]
    import jax, numpy as np
    from ecgjax import cli
    from ecgjax.train import mesh as mesh_lib, multihost

    def main(argv):
        multihost.initialize()
        mesh = mesh_lib.make_mesh()
        late, kill = ([int(v) for v in os.environ.get(k, "-1:0").split(":")] for k in ("TEST_LATE", "TEST_KILL_AT"))
        with multihost.exit_fast_on_error():
            ones = jax.make_array_from_process_local_data(mesh_lib.data_sharding(mesh),
                                                          np.ones(jax.local_device_count(), np.int32))
            total = jax.jit(jax.numpy.sum, out_shardings=mesh_lib.replicated_sharding(mesh))
            for step in range(int(os.environ["TEST_STEPS"])):
                if [jax.process_index(), step] == [late[0], 0]:
                    time.sleep(late[1])
                if [jax.process_index(), step] == kill:
                    os.kill(os.getpid(), signal.SIGKILL)
                assert int(total(ones)) == jax.device_count()
                print("step", step, flush=True)
                time.sleep(0.05)

    cli.run(main)
""")
GLOO_CONNECT_TIMEOUT_S = 30  # gloo's fixed wait for a peer's address when it first connects

CONFIGS = {
    # ViT HL: 6 steps, saved every 2 (the kill-and-resume run uses the same settings).
    "hybrid": ("hybrid", "--config.train.num_steps=6", "--config.train.checkpoint_every=2"),
    # ResNet with BatchNorm and a MoCo queue of 16 keys, wrapped around after two steps of 8.
    "pclr": ("pclr_resnet", "--config.train.num_steps=3", "--config.train.checkpoint_every=3",
             "--config.objective.moco.queue_size=16"),
}


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGKILL to the process group of `proc` (it and everything it started), if still there."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class Runs:
    """Starts the runs of this module, all on one synthetic store and one JAX compilation cache."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.store = build_synthetic_store(root / "store", num_patients=24, records_per_patient=2, seed=0).path
        self.script = root / "run_pretrain.py"
        self.script.write_text(RUN_PRETRAIN.format(repo=str(REPO), tests=str(TESTS),
                                                   pretrain=str(REPO / "experiments" / "pretrain.py")))
        self.env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
                        # Later runs of the same program (the killed run, the relaunch) read it back.
                        JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"),
                        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
        self.env.pop("XLA_FLAGS", None)

    def args(self, name: str, workdir: pathlib.Path) -> list[str]:
        config, *overrides = CONFIGS[name]
        return [str(self.script), f"--config={REPO / 'configs' / config}.py:runlocal", f"--workdir={workdir}",
                f"--config.data.store={self.store}", "--config.train.batch_size=8", "--config.train.log_every=1",
                *overrides]

    def launch(self, name: str, workdir: pathlib.Path) -> subprocess.CompletedProcess:
        """`python -m ecgjax.launch --num_processes=2 --cpu_devices=2 -- run_pretrain.py ...`."""
        command = [sys.executable, "-m", "ecgjax.launch", "--num_processes=2", "--cpu_devices=2",
                   f"--heartbeat_timeout_s={HEARTBEAT_TIMEOUT_S}", "--", *self.args(name, workdir)]
        proc = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            out, _ = proc.communicate()
            pytest.fail(f"{name}: no result in {RUN_TIMEOUT_S} s:\n{failure_lines(out)}")
        finally:
            _stop_group(proc)
        return subprocess.CompletedProcess(command, proc.returncode, out, "")

    def start_without_launcher(self, name: str, workdir: pathlib.Path, kill_at: str) -> list[subprocess.Popen]:
        """The two processes started as a cluster manager (srun) would: no launcher watches them,
        so only JAX's heartbeats can end the survivor of a kill -9."""
        coordinator = f"localhost:{launch.free_port()}"
        procs = []
        for process_id in range(2):
            env = launch.child_env(self.env, coordinator=coordinator, num_processes=2, process_id=process_id,
                                   cpu_devices=2, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
            env["TEST_KILL_AT"] = kill_at
            log = open(workdir.parent / f"{workdir.name}.process{process_id}.log", "w")
            procs.append(subprocess.Popen([sys.executable, *self.args(name, workdir)], cwd=REPO, env=env,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            log.close()
        return procs


def failure_lines(output: str, keep: int = 40) -> str:
    """What a failed run said about why: its error lines (not faulthandler's thread dumps and
    module list), then its last lines."""
    cause = re.compile(r"error|Error|ERROR|failed|DEADLINE|Traceback|Fatal|ecgjax\.launch|^[EF]\d{4} ")
    lines = output.splitlines()
    errors = [line for line in lines if cause.search(line) and not line.startswith("Extension modules")]
    return "\n".join(["-- error lines:", *errors[-keep:], "-- last lines:", *lines[-10:]])


def _check(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, failure_lines(result.stdout)


def run_all(root: pathlib.Path) -> dict:
    """Every run, then one comparison process; returns the comparison and what the kill showed."""
    r = Runs(root)
    workdirs = {name: root / name for name in CONFIGS}
    outputs = {}
    for name, workdir in workdirs.items():
        _check(result := r.launch(name, workdir))
        outputs[name] = result.stdout

    # kill -9 of process 1 before step 5, with no launcher to clean up: process 0 must end by itself.
    killed = root / "killed"
    procs = r.start_without_launcher("hybrid", killed, kill_at=f"1:{KILL_AT_STEP}")
    try:
        procs[1].wait(timeout=RUN_TIMEOUT_S)
        killed_at = time.monotonic()
        try:
            procs[0].wait(timeout=STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            pass
        survivor_s = time.monotonic() - killed_at
        kill = dict(codes=[p.poll() for p in procs], survivor_s=survivor_s,
                    log=(root / "killed.process0.log").read_text()[-3000:])
    finally:
        for proc in procs:
            _stop_group(proc)
    kill["steps"] = sorted(int(s) for s in os.listdir(killed / "checkpoints") if s.isdigit())
    relaunch = r.launch("hybrid", killed)
    kill["relaunch"] = relaunch
    _check(relaunch)

    script = root / "compare.py"
    script.write_text(COMPARE.format(repo=str(REPO), tests=str(TESTS)))
    arg = json.dumps({"equivalence": {n: str(w) for n, w in workdirs.items()}, "resumed": str(killed)})
    env = dict(r.env, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    result = subprocess.run([sys.executable, str(script), arg], capture_output=True, text=True, env=env,
                            timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, failure_lines(result.stderr)
    compare = json.loads(result.stdout.strip().splitlines()[-1])
    (root / "compare.json").write_text(json.dumps(dict(compare, survivor_s=kill["survivor_s"]), indent=1))
    return dict(compare=compare, kill=kill, workdirs=workdirs, killed=killed, outputs=outputs)


def check_two_processes_match_one_process(runs, name):
    """Same losses and updates as one process on the same global batches."""
    r = runs["compare"][name]
    assert len(r["logged"]) == len(r["losses"])
    for step, (two, one) in enumerate(zip(r["logged"], r["losses"]), 1):
        assert equivalence.losses_agree(one, two), (name, step, r)
    assert r["update_rel_diff"] < equivalence.UPDATE_BOUND, (name, r)
    # The bound would catch a reduction over one process's half of the batch.
    assert r["wrong_update_rel_diff"] > equivalence.WRONG_REDUCTION_FACTOR * equivalence.UPDATE_BOUND, (name, r)


def check_each_process_checkpoints_its_own_iterator_and_process_0_logs(runs):
    workdir = runs["workdirs"]["hybrid"]
    data = workdir / "checkpoints" / "6" / "data"
    assert sorted(n for n in os.listdir(data) if n.endswith(".json")) == ["process_0-of-2.json", "process_1-of-2.json"]
    assert [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert len(os.listdir(workdir / "tensorboard")) == 1  # one event file: process 0's
    out = runs["outputs"]["hybrid"]
    assert "[process 0/2] step 6/6" in out and "[process 1/2] step" not in out, out[-3000:]


def check_a_two_process_checkpoint_refuses_one_process(runs):
    ckpt = Checkpointer(str(runs["workdirs"]["hybrid"] / "checkpoints"))
    try:
        with pytest.raises(UserError, match=r"written by 2 process\(es\).*this run has 1.*--num_processes=2"):
            ckpt.restore({}, data_iterator=object())
    finally:
        ckpt.close()


def check_kill_9_of_one_process_stops_the_other(runs):
    kill = runs["kill"]
    assert kill["codes"][1] == -signal.SIGKILL, kill
    assert kill["codes"][0] not in (None, 0), kill  # ended, and not as a success
    assert kill["survivor_s"] < STOP_BOUND_S, kill
    assert 2 in kill["steps"] and max(kill["steps"]) < KILL_AT_STEP, kill


def check_relaunch_resumes_at_the_last_common_step_like_the_uninterrupted_run(runs):
    kill, killed = runs["kill"], runs["killed"]
    restored = [int(s) for s in re.findall(r"checkpoint: restored step (\d+)", kill["relaunch"].stdout)]
    assert restored == [max(kill["steps"])], kill["relaunch"].stdout[-3000:]
    # Same bound as across layouts: float32 parts of the objectives summed over gloo need not round
    # the same way twice, while resuming at a wrong data position would change the updates by O(1).
    assert runs["compare"]["resumed_update_rel_diff"] < equivalence.UPDATE_BOUND, runs["compare"]
    straight = [json.loads(line) for line in open(runs["workdirs"]["hybrid"] / "metrics.jsonl")]
    resumed = [json.loads(line) for line in open(killed / "metrics.jsonl")]
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(straight, resumed):
        assert equivalence.losses_agree(a["loss"], b["loss"]), (a, b)


def test_two_processes_checkpoints_kill_and_relaunch(tmp_path):
    """The runs once (one test, so that pytest-xdist cannot start them twice on two workers), then
    every check: ViT HL and the ResNet whose BatchNorm statistics and MoCo queue are global state
    match one process; each process checkpoints its own iterator, process 0 alone logs; a kill -9
    stops the other process within STOP_BOUND_S; the relaunch resumes at the last common step."""
    runs = run_all(tmp_path)
    for name in CONFIGS:
        check_two_processes_match_one_process(runs, name)
    check_each_process_checkpoints_its_own_iterator_and_process_0_logs(runs)
    check_a_two_process_checkpoint_refuses_one_process(runs)
    check_kill_9_of_one_process_stops_the_other(runs)
    check_relaunch_resumes_at_the_last_common_step_like_the_uninterrupted_run(runs)


def test_only_process_0_logs_progress_and_every_process_marks_its_lines():
    import logging

    from ecgjax.train.metrics_log import logger, setup_console_logging

    try:
        setup_console_logging(process_index=1, process_count=2)
        handler = next(h for h in logger.handlers if getattr(h, "_ecgjax", False))
        assert logger.level == logging.WARNING and "[process 1/2]" in handler.formatter._fmt
        setup_console_logging(process_index=0, process_count=2)
        assert logger.level == logging.INFO and "[process 0/2]" in handler.formatter._fmt
    finally:
        setup_console_logging()
    assert "[process" not in handler.formatter._fmt


def test_launcher_stops_the_others_when_one_fails_and_names_it(tmp_path):
    """A process that fails fast (exit 3) while its peer would run for a minute: the launcher
    ends the peer at once and exits with the failed process's status."""
    script = tmp_path / "fail_one.py"
    script.write_text("import os, sys, time\n"
                      "if os.environ['ECGJAX_PROCESS_ID'] == '1':\n    sys.exit(3)\n"
                      "time.sleep(60)\n")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "ecgjax.launch", "--num_processes=2", "--grace_s=2", "--",
                             str(script)], cwd=REPO, capture_output=True, text=True, timeout=50)
    assert result.returncode == 3, result.stderr
    assert "process 1" in result.stderr and "exited with status 3" in result.stderr and "stopping processes [0]" in result.stderr
    assert time.monotonic() - started < 30


def test_launcher_without_a_command_says_how(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ecgjax.launch", "--num_processes=2"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "error: no command: pass it after `--`" in result.stderr, result.stderr


def launch_collectives(tmp_path: pathlib.Path, *launcher_flags: str, **env: str) -> subprocess.CompletedProcess:
    """COLLECTIVES as `python -m ecgjax.launch --num_processes=2 --cpu_devices=2 [flags] -- ...`."""
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES.format(repo=str(REPO)))
    env = dict(os.environ, JAX_PLATFORMS="cpu", **env)
    for name in ("XLA_FLAGS", "ECGJAX_DEBUG"):
        env.pop(name, None)
    command = [sys.executable, "-m", "ecgjax.launch", "--num_processes=2", "--cpu_devices=2",
               f"--heartbeat_timeout_s={HEARTBEAT_TIMEOUT_S}", *launcher_flags, "--", str(script)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def test_a_process_slower_than_gloos_connect_timeout_is_waited_for(tmp_path):
    """Process 1 reaches the first collective 35 s after process 0, as after a slow compile on a
    busy host. Gloo gives a peer a fixed 30 s when it first connects a set of devices, which ended
    such runs (`Gloo context initialization failed: DEADLINE_EXCEEDED`); multihost.initialize
    connects them while every process is there, and later collectives wait --peer_timeout_s."""
    result = launch_collectives(tmp_path, TEST_LATE=f"1:{GLOO_CONNECT_TIMEOUT_S + 5}", TEST_STEPS="3")
    assert result.returncode == 0, failure_lines(result.stderr)
    assert result.stdout.count("step 2\n") == 2, result.stdout


@pytest.mark.parametrize("killed, debug", [(1, False), (0, False), (0, True)])
def test_a_killed_process_and_the_stopped_one_get_one_line_each(tmp_path, killed, debug):
    """kill -9 of one process of a launched run: the launcher names it, then says the other one
    stopped. What the survivor writes about the loss (a gloo traceback; C++ logs, a stack and
    thread dumps when process 0, the coordination service, is gone) is held back unless --debug."""
    result = launch_collectives(tmp_path, *(["--debug"] if debug else []), TEST_KILL_AT=f"{killed}:3",
                                TEST_STEPS="1000")
    other = 1 - killed
    assert result.returncode == 128 + signal.SIGKILL, failure_lines(result.stderr)
    lines = result.stderr.splitlines()
    said = [line for line in lines if line.startswith("ecgjax.launch: ")]
    assert len(said) == 2, result.stderr
    assert re.fullmatch(rf"ecgjax.launch: process {killed} \(pid \d+\) was killed by SIGKILL; "
                        rf"stopping processes \[{other}\]", said[0]), said
    assert said[1].startswith(f"ecgjax.launch: process {other} (pid "), said
    assert f"stopped after process {killed} ended" in said[1], said
    others = [line for line in lines if not line.startswith("ecgjax.launch: ")]
    if debug:  # the survivor's account was there to hold back
        assert any("Gloo" in line or "Fatal Python error" in line for line in others), result.stderr
    else:  # nothing else: no traceback, no C++ stack, no JAX INFO lines
        assert others == [], result.stderr
