"""Parallel runs on Ray (a local instance of 2 CPUs per run, no cluster) against the in-process executor:
the same records, timing jobs never beside another job, kill -9 of the driver, a worker killed mid-job,
bad input; and the placement policy and the time estimate on constructed cases with known answers."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pandas as pd
import pytest
from conftest import FIXTURES, ROOT, suite

from suite import tuning
from suite.errors import SuiteError
from suite.jobs import Job
from suite.placement import Node, Placement
from suite.profiles import Plan
from suite.tuning import TunedGroup

PARALLEL = FIXTURES / "tiny_parallel.toml"
TRAIN = {"steps": 12, "batch_size": 8, "eval_every": 6, "eval_batch_size": 64}


def _job(kind="train", model="nn-lstm", seed=0, **recipe) -> Job:
    return Job(
        kind=kind,
        experiment="main",
        task="adding",
        model=model,
        seed=seed,
        task_params={"seq_len": 10},
        param_budget=3000,
        recipe={**TRAIN, **recipe},
    )


def _records(out) -> pd.DataFrame:
    return pd.read_json(out / "records.jsonl", lines=True)


def _ray_processes(pgid: int) -> list[str]:
    """Processes left in a driver's process group (Ray's GCS, raylet and agents inherit it)."""
    ps = subprocess.run(["ps", "-eo", "pid=,pgid=,args="], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if line.split()[1] == str(pgid)]


# ---- what jobs declare, where they go ------------------------------------------------------------------


def test_jobs_whose_result_is_a_time_declare_they_run_alone():
    assert not _job().runs_alone
    assert _job(seconds=5.0).runs_alone  # a wall-clock budget makes training a time
    assert all(replace(_job(), kind=kind).runs_alone for kind in ("throughput", "scaling", "latency"))


def _drain(placement: Placement, queue: list[Job]) -> None:
    """Run the queue to its end, finishing the oldest job each time; a timing job never shares its node
    and the queue never stalls (an empty `running` with jobs left would raise)."""
    running: list[Job] = []
    while queue or running:
        running += [job for job, _ in placement.take(queue)]
        assert all(not n.busy_alone or len(n.running) == 1 for n in placement.nodes), (
            "a timing job shared its node"
        )
        placement.finish(running.pop(0))


def test_placement_runs_timing_jobs_alone_and_never_starves_them():
    shared = [_job(seed=s) for s in range(6)]
    timing = [_job("throughput", model=m) for m in ("nn-lstm", "transformer")]
    queue = shared[:3] + [timing[0]] + shared[3:] + [timing[1]]
    one = Placement([Node("a", "h", 2)], threads=1, workers=2)
    _drain(one, list(queue))
    two = Placement([Node("a", "h", 2), Node("b", "h", 2)], threads=1, workers=4)
    first = two.take(list(queue))
    # at the start both nodes are idle: each timing job takes one, no sharing job starts beside them
    assert sorted(job.kind for job, _ in first) == ["throughput", "throughput"]
    late = Placement([Node("a", "h", 2)], threads=1, workers=2)
    started = late.take([shared[0], shared[1]])
    assert len(started) == 2
    queue = [timing[0], shared[2]]
    assert late.take(queue) == []  # the node drains for the waiting timing job: nothing new starts
    late.finish(shared[0])
    assert late.take(queue) == []
    assert late.finish(shared[1]) == 2  # it ran beside one other job
    ((job, _),) = late.take(queue)
    assert job.kind == "throughput" and late.finish(job) == 1


def test_placement_stops_at_once_when_the_cluster_cannot_hold_a_job():
    nodes = [Node("a", "h", 4)]
    with pytest.raises(SuiteError, match="no node of the Ray cluster has a GPU"):
        Placement(nodes, threads=1, workers=2, gpu=True).check([_job()])
    with pytest.raises(SuiteError, match="largest node has 4"):
        Placement(nodes, threads=8, workers=1).check([_job()])
    gpu = Placement([Node("a", "h", 4, gpus=1)], threads=1, workers=4, gpu=True)
    assert gpu.slots == 1 and gpu.demand(_job(), gpu.nodes[0]).gpus == 1


def test_a_tuned_groups_seeds_wait_for_its_own_points_only():
    group = TunedGroup.of(_job(), (1e-3, 1e-2), [0, 1, 2])
    plan = Plan([], [group])
    points = group.tuning_jobs()
    rec = {"status": "ok", "higher_is_better": False}
    first = {points[0].key: {**rec, "recipe": points[0].recipe, "best_val": 0.5}}
    assert plan.follow_ups(first) == []
    both = {**first, points[1].key: {**rec, "recipe": points[1].recipe, "best_val": 0.1}}
    seeds = plan.follow_ups(both)
    assert [j.seed for j in seeds] == [0, 1, 2] and {j.recipe["lr"] for j in seeds} == {1e-2}


def _scored(job, best_val):
    return {"status": "ok", "higher_is_better": False, "recipe": job.recipe, "best_val": best_val}


def test_a_best_point_at_the_grids_end_extends_the_grid_before_the_seeds_run():
    group = TunedGroup.of(_job(), (1e-3, 3e-3, 1e-2), [0, 1, 2], extend=2)
    plan = Plan([], [group])
    settled = {j.key: _scored(j, v) for j, v in zip(group.tuning_jobs(), (0.5, 0.3, 0.1))}
    (more,) = plan.follow_ups(settled)  # 1e-2 is best and the top end: try 1e-2 * (1e-2 / 3e-3)
    assert more.seed == 0 and more.recipe["lr"] == pytest.approx(0.0333) and more.extra["lr_grid"]
    settled[more.key] = _scored(more, 0.05)  # better again: one more step up, the last one allowed
    (last,) = plan.follow_ups(settled)
    assert last.recipe["lr"] == pytest.approx(0.111)
    settled[last.key] = _scored(last, 0.01)  # still the best, still at the end: the limit is reached
    seeds = plan.follow_ups(settled)
    assert [j.seed for j in seeds] == [0, 1, 2] and {j.recipe["lr"] for j in seeds} == {0.111}
    choice = tuning.choose([settled[k] for k in settled])
    assert tuning.edge(choice, list(group.grid)) == "at the edge"


def test_an_extension_that_does_worse_leaves_the_choice_inside_the_tried_points():
    group = TunedGroup.of(_job(), (1e-3, 1e-2), [0, 1, 2], extend=3)
    plan = Plan([], [group])
    settled = {j.key: _scored(j, v) for j, v in zip(group.tuning_jobs(), (0.1, 0.3))}
    (low,) = plan.follow_ups(settled)  # the bottom end is best: one step down
    assert low.recipe["lr"] == pytest.approx(1e-4)
    settled[low.key] = _scored(low, 0.2)
    seeds = plan.follow_ups(settled)
    assert {j.recipe["lr"] for j in seeds} == {1e-3} and len(seeds) == 3
    assert tuning.edge(tuning.choose(list(settled.values())), [1e-3, 1e-2]) == "inside"


def test_without_extend_a_choice_at_the_edge_is_kept_and_named():
    group = TunedGroup.of(_job(), (1e-3, 1e-2), [0, 1, 2])
    settled = {j.key: _scored(j, v) for j, v in zip(group.tuning_jobs(), (0.3, 0.1))}
    assert {j.recipe["lr"] for j in Plan([], [group]).follow_ups(settled)} == {1e-2}
    assert tuning.edge(tuning.choose(list(settled.values())), [1e-3, 1e-2]) == "at the edge"


def test_the_estimate_simulates_the_schedule_on_a_constructed_case():
    from suite.estimate import simulate

    group = TunedGroup.of(_job(), (1e-3, 1e-2), [0, 1, 2])  # 2 points, then 2 more seeds
    plan = Plan([_job(seed=9), _job("throughput")], [group])

    def cost(job):
        return 2.0 if job.runs_alone else 1.0

    # one worker: every job after the other; two: the timing job alone, then pairs
    assert simulate(plan, [], cost, 1, 2, 2, 1, False).clock == pytest.approx(2 + 5 * 1)
    two = simulate(plan, [], cost, 1, 2, 1, 2, False)
    assert two.clock == pytest.approx(2 + 1 + 1 + 1) and len(two.started) == 6
    done = [{"key": _job(seed=9).key, "status": "ok"}]
    assert simulate(plan, done, cost, 1, 2, 2, 1, False).clock == pytest.approx(6.0)


# ---- the command line ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_with_two_workers_gives_the_in_process_records(smoke_run, tmp_path):
    """smoke_run ran in one process at 1 thread; here 2 workers of 1 thread each on a local Ray."""
    out = tmp_path / "w2"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "suite",
            "run",
            "--profile",
            "smoke",
            "--out",
            str(out),
            "--workers",
            "2",
            "--threads",
            "1",
            "--no-progress",
        ],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-2000:]
    assert "2 workers x 1 thread" in stderr
    time.sleep(1)
    assert _ray_processes(proc.pid) == [], "Ray left processes behind"
    one, two = _records(smoke_run), _records(out)
    assert two["key"].is_unique and sorted(one["key"]) == sorted(two["key"])
    merged = one.merge(two, on="key", suffixes=("_1", "_2"))
    train = merged[merged["kind_1"] == "train"]
    assert (train["test_1"] == train["test_2"]).all(), "a training job's metrics depend on the parallelism"
    assert (merged["status_1"] == merged["status_2"]).all()
    assert set(two["env"].map(lambda e: e["threads"])) == {1} and set(two["executor"]) == {"ray"}
    start, end = pd.to_datetime(two["started"]), pd.to_datetime(two["finished"])
    alone = two["kind"].ne("train")
    for i in two.index[alone]:
        overlap = (start < end[i]) & (end > start[i]) & (two.index != i)
        assert not overlap.any(), (
            f"timing job {two.at[i, 'kind']} {two.at[i, 'model']} overlapped another job"
        )
    assert two.loc[alone, "ran_alone"].all() and (two.loc[~alone, "concurrency"] <= 2).all()
    assert (two.loc[~alone, "concurrency"] == 2).any(), "no two jobs ever ran at once"


@pytest.mark.slow
def test_kill_9_of_the_driver_then_a_rerun_gives_the_uninterrupted_records(tmp_path):
    ref = tmp_path / "ref"
    assert (
        suite("run", "--profile", PARALLEL, "--out", ref, "--threads", "1", "--no-progress").returncode == 0
    )
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "suite",
        "run",
        "--profile",
        str(PARALLEL),
        "--out",
        str(out),
        "--workers",
        "2",
        "--threads",
        "1",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    records = out / "records.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (records.exists() and records.read_bytes().count(b"\n") >= 5):
        time.sleep(0.05)  # the 3 timing jobs, then 2 of the training jobs that run side by side
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # Ray's agents outlive a killed driver by a minute or two
    assert 5 <= records.read_bytes().count(b"\n") < 11, "the kill came too late to test anything"
    rerun = suite(*args[3:])
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "already finished" in rerun.stderr
    df, ref_df = _records(out), _records(ref)
    assert df["key"].is_unique and sorted(df["key"]) == sorted(ref_df["key"])
    merged = df.merge(ref_df, on="key", suffixes=("", "_ref"))
    train = merged[merged["kind"] == "train"]
    assert (train["test"] == train["test_ref"]).all()
    tuned = train[train["extra"].map(lambda e: "lr_grid" in e)]
    assert (tuned["recipe"] == tuned["recipe_ref"]).all(), "the rerun chose other learning rates"


@pytest.mark.slow
def test_a_worker_killed_mid_job_is_a_failed_record_and_the_run_goes_on(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text(
        "seeds = 1\n[train]\nsteps = 12\nbatch_size = 8\neval_every = 6\neval_batch_size = 64\n"
        '[[experiment]]\nmodels = ["killer", "nn-lstm"]\nparam_budget = 3000\n'
        '[[experiment.task]]\nname = "adding"\nparams = { seq_len = [10, 16] }\n'
    )
    marker = tmp_path / "kill"
    marker.touch()
    out = tmp_path / "out"
    plugin = FIXTURES / "killer_model.py"
    run = ["--plugin", plugin, "run", "--profile", profile, "--out", out, "--no-progress"]
    proc = suite(*run, "--workers", "2", env={"LSTM_BENCH_TEST_KILL": str(marker)})
    assert proc.returncode == 1, proc.stderr[-2000:]  # failed jobs: exit 1, after every job ran
    df = _records(out)
    assert len(df) == 4 and df["key"].is_unique
    assert set(df.loc[df["model"] == "nn-lstm", "status"]) == {"ok"}
    killed = df[df["model"] == "killer"]
    assert set(killed["status"]) == {"failed"} and killed["error"].str.contains("worker died").all()
    marker.unlink()
    again = suite(*run, "--retry-failed", env={"LSTM_BENCH_TEST_KILL": str(marker)})
    assert again.returncode == 0, again.stderr[-2000:]
    latest = {r["key"]: r for r in map(json.loads, (out / "records.jsonl").read_text().splitlines())}
    assert len(latest) == 4 and {r["status"] for r in latest.values()} == {"ok"}


BAD = [
    (["--workers", "0"], "--workers must be >= 1"),
    (["--workers", "4096"], "cores of this machine"),
    (["--ray-address", "127.0.0.1:1"], "cannot reach a Ray head"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m for _, m in BAD])
def test_bad_parallel_input_one_line_exit_2_nothing_written(tmp_path, args, message):
    out = tmp_path / "out"
    proc = suite("run", "--profile", PARALLEL, "--out", out, *args, timeout=60)
    assert proc.returncode == 2, proc.stderr[-500:]
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_without_ray_the_suite_starts_and_only_parallel_runs_say_so(tmp_path):
    blocked = (
        "import sys; sys.modules['ray'] = None; from suite.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    listing = subprocess.run(
        [sys.executable, "-c", blocked, "list", "models"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0 and "nn-lstm" in listing.stdout
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            blocked,
            "run",
            "--profile",
            str(PARALLEL),
            "--out",
            str(out),
            "--workers",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "need Ray, which failed to import" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.slow
def test_dry_run_lists_new_and_finished_jobs_and_writes_nothing(tmp_path):
    done = tmp_path / "done"
    assert (
        suite(
            "run", "--profile", FIXTURES / "tiny.toml", "--out", done, "--threads", "1", "--no-progress"
        ).returncode
        == 0
    )
    before = (done / "records.jsonl").read_bytes()
    proc = suite("run", "--profile", FIXTURES / "tiny.toml", "--out", done, "--dry-run", "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-1000:]
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("done") for line in lines) == 12
    assert (done / "records.jsonl").read_bytes() == before
    fresh = tmp_path / "fresh"  # a sibling of `done`: its costs come from those records, no calibration
    proc = suite(
        "run",
        "--profile",
        FIXTURES / "tiny.toml",
        "--out",
        fresh,
        "--dry-run",
        "--threads",
        "1",
        "--workers",
        "2",
    )
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert sum(line.startswith("new") for line in proc.stdout.splitlines()) == 12
    total = next(line for line in proc.stdout.splitlines() if line.startswith("total")).split()
    assert total[1:4] == ["12", "12", "0"] and "calibrating" not in proc.stderr
    assert not fresh.exists()


def _gru_job(recipe: dict) -> Job:
    """A small training job for the estimate's tests."""
    return Job(
        kind="train",
        experiment="e",
        task="adding",
        model="gru",
        seed=0,
        task_params={"seq_len": 25},
        model_options={},
        param_budget=2000,
        layers=None,
        recipe=recipe,
    )


def test_the_estimate_learns_costs_from_this_commits_records_only(registry):
    """Records of other code are no hint: a kernel made 3x faster must not be costed at the old speed."""
    from dataclasses import asdict

    import torch

    from suite.estimate import Costs, _signature
    from suite.executor import RunContext

    job = _gru_job({"steps": 100})
    env = {"host": "h", "threads": 2, "dtype": "float32", "device": "cpu"}

    def record(commit, train_seconds):
        return {
            **asdict(job),
            "status": "ok",
            "env": {**env, "commit": commit},
            "wall_seconds": train_seconds,
            "train_seconds": train_seconds,
            "steps_done": 100,
            "curve": [],
        }

    run = RunContext(registry, torch.device("cpu"), "float32", {**env, "commit": "new"})
    costs = Costs(run, [record("old", 30.0), record("new", 10.0)], threads=2)
    assert costs.train_costs[_signature(job)].step == pytest.approx(0.1)  # the old commit's 0.3 s ignored


def test_runs_that_stop_once_solved_are_tuned_on_their_steps_to_solve():
    """Solved runs all end near the threshold: the one that got there first wins, whatever its score."""
    group = TunedGroup.of(_job(), (1e-3, 3e-3, 1e-2), [0, 1, 2])
    recs = []
    for job, best, steps in zip(group.tuning_jobs(), (0.2, 0.008, 0.009), (None, 900, 400)):
        recipe = {**job.recipe, "until_solved": True}
        recs.append({**_scored(job, best), "recipe": recipe, "time_to_threshold_steps": steps})
    assert tuning.choose(recs)["lr"] == 1e-2
    plain = [{**r, "recipe": {**r["recipe"], "until_solved": False}} for r in recs]
    assert tuning.choose(plain)["lr"] == 3e-3  # without the stopping rule the best score wins


def test_the_estimate_costs_runs_that_stop_early_at_the_share_of_the_cap_earlier_ones_used(registry):
    from dataclasses import asdict

    import torch

    from suite.estimate import Costs, _signature
    from suite.executor import RunContext

    recipe = {"steps": 1000, "until_solved": True, "eval_every": 1000}
    job = _gru_job(recipe)
    env = {"host": "h", "threads": 2, "dtype": "float32", "device": "cpu", "commit": "c"}
    stopped = [
        {**asdict(job), "status": "ok", "env": env, "wall_seconds": s * 0.01, "train_seconds": s * 0.01,
         "steps_done": s, "curve": []}
        for s in (200, 250, 300)
    ]  # fmt: skip
    run = RunContext(registry, torch.device("cpu"), "float32", env)
    cost = Costs(run, stopped, threads=2).train_costs[_signature(job)]
    assert cost.stop_share == pytest.approx(0.25)
    assert cost.seconds(job) == pytest.approx(250 * 0.01, rel=0.05)  # not the cap's 1000 steps
    capped = replace(job, recipe={**recipe, "until_solved": False})
    assert cost.seconds(capped) == pytest.approx(1000 * 0.01, rel=0.05)  # no rule: the whole cap


def test_the_report_makes_the_runs_choice_from_pandas_rows():
    """The report reads records through pandas (NaN for a missing value): the same choice as the run."""
    group = TunedGroup.of(_job(), (1e-3, 1e-2), [0, 1, 2])
    recs = []
    for job, steps in zip(group.tuning_jobs(), (None, 400)):
        recipe = {**job.recipe, "until_solved": True}
        recs.append({**_scored(job, 0.01), "recipe": recipe, "time_to_threshold_steps": steps})
    rows = pd.DataFrame(recs).to_dict("records")
    assert tuning.choose(rows)["lr"] == tuning.choose(recs)["lr"] == 1e-2
