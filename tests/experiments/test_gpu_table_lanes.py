"""scripts/gpu_table.sh's lane control on the CPU, with stand-in lanes (and once with the lanes
``start`` makes, waiting for data): ``finish`` lets a lane end its run and then stops it (its whole
process group), given sweeps a new lane runs them in its place under start's MPS settings, ``wait``
waits for that lane too, ``stop`` stops one at once, ``end`` waits and then exports the unfinished
runs, and a ``wait``, ``finish``, ``stop``, ``end`` or ``export`` on a machine without lanes (gone
cold between calls) exits 1 at once instead of waiting out the call."""

import os
import signal
import subprocess
import tarfile
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def table_env(tmp_path, **extra):
  """gpu_table.sh's environment for a table state under ``tmp_path`` (and its $OUT folder)."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("CUDA_MPS_", "NMS_GPU_", "NMSPARSE_GIT_SHA", "GIT_SHA"))}
  env.update(TABLE_STATE=str(tmp_path / "state"), TABLE_RUNS=str(tmp_path / "runs"),
             OUT=str(tmp_path / "out"), LANES="2", **extra)
  os.makedirs(tmp_path / "out", exist_ok=True)
  return env


def table(tmp_path, *args, timeout=60, **extra):
  env = table_env(tmp_path, **extra)
  start = time.monotonic()
  proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_table.sh"), *args], env=env,
                        capture_output=True, text=True, cwd=ROOT, check=False, timeout=timeout)
  return proc, time.monotonic() - start


@pytest.fixture
def lanes(tmp_path):
  """Two stand-in lanes (a shell and its child, in a session of their own, as ``start`` makes
  them) on a warm table state; yields (tmp_path, [lane processes])."""
  state = tmp_path / "state"
  os.makedirs(state / "results" / "runs")
  (state / "seeded").touch()
  (state / "unpacked").touch()
  procs = []
  for i in range(2):
    (state / f"lane{i}.log").write_text("=== lane\nFinished earlier_run: test accuracy 0.5\n")
    procs.append(subprocess.Popen(["bash", "-c", "sleep 300 & wait"], start_new_session=True))
    (state / f"lane{i}.pid").write_text(f"{procs[-1].pid}\n")
  yield tmp_path, procs
  for p in procs:
    if p.poll() is None:
      os.killpg(p.pid, signal.SIGKILL)
    p.wait()


def group_gone(pgid, within=10.0):
  """Whether process group ``pgid`` is gone within ``within`` seconds (its orphans get reaped)."""
  deadline = time.monotonic() + within
  while time.monotonic() < deadline:
    try:
      os.killpg(pgid, 0)
    except ProcessLookupError:
      return True
    time.sleep(0.1)
  return False


def test_finish_waits_for_the_lanes_run_then_stops_only_that_lane(lanes):
  tmp_path, procs = lanes
  log = tmp_path / "state" / "lane0.log"

  def run_finishes():
    time.sleep(3)
    with open(log, "a") as f:
      f.write("Finished vit_cifar10_full_bimask_2x8_s0: test accuracy 0.8800\n")
  threading.Thread(target=run_finishes).start()
  proc, took = table(tmp_path, "finish", "0", "40")
  assert proc.returncode == 0, proc.stderr
  assert took >= 3 and took < 30  # it waited for the new "Finished", not for the deadline
  assert "Finished vit_cifar10_full_bimask_2x8_s0" in proc.stdout
  assert "lane 0 stopped" in proc.stdout
  procs[0].wait(timeout=10)
  assert group_gone(procs[0].pid)  # the lane's children (its run) went with it
  assert procs[1].poll() is None  # the other lane runs on
  assert (tmp_path / "state" / "lane0.done").read_text().strip() == "stopped"
  assert "lane 0 done" in proc.stdout


def test_wait_packs_each_finished_run_at_once_and_packs_when_cut(lanes):
  """A ``wait`` puts a run that finishes meanwhile into $OUT/results.tgz at once (a call killed
  outright still brings it back), and one cut by a TERM packs before it exits."""
  tmp_path, _ = lanes
  runs, tgz = tmp_path / "state" / "results" / "runs", tmp_path / "out" / "results.tgz"
  proc = subprocess.Popen(["bash", os.path.join(ROOT, "scripts", "gpu_table.sh"), "wait", "60"],
                          env=table_env(tmp_path, TABLE_POLL="0.2"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)

  def packed(name, within=10.0):
    deadline = time.monotonic() + within
    while True:  # at least once
      try:
        with tarfile.open(tgz) as tar:
          if f"results/runs/{name}" in tar.getnames():
            return True
      except (FileNotFoundError, tarfile.ReadError, EOFError):
        pass
      if time.monotonic() >= deadline:
        return False
      time.sleep(0.2)

  try:
    (runs / "a_s0.json").write_text("{}")
    assert packed("a_s0.json")
    (runs / "b_s0.json").write_text("{}")
    assert packed("b_s0.json")
    assert proc.poll() is None  # still waiting on the lanes
    (runs / "c_s0.json").write_text("{}")
    proc.send_signal(signal.SIGTERM)  # at once, before the next poll can pack it
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 143, err
    assert "--- status" in out and "c_s0.json" in out
    assert packed("c_s0.json", within=0)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def test_finish_stops_the_lane_at_its_deadline(lanes):
  tmp_path, procs = lanes
  proc, took = table(tmp_path, "finish", "1", "2")
  assert proc.returncode == 0, proc.stderr
  assert took >= 2 and "lane 1 stopped" in proc.stdout
  procs[1].wait(timeout=10)
  assert procs[0].poll() is None


def test_stop_is_at_once_and_says_when_there_was_nothing_to_stop(lanes):
  tmp_path, procs = lanes
  proc, _ = table(tmp_path, "stop", "0")
  assert "lane 0 stopped" in proc.stdout, proc.stderr
  procs[0].wait(timeout=10)
  proc, _ = table(tmp_path, "stop", "0")
  assert "lane 0 was not running" in proc.stdout


def test_finish_with_sweeps_starts_a_lane_in_its_place(lanes):
  """The new lane takes the next free index, runs the sweeps it was given in order (a stand-in
  sweep command that prints its arguments and MPS settings) under the MPS settings that ``start``
  left, and ``wait`` waits for it as for start's lanes."""
  tmp_path, procs = lanes
  state = tmp_path / "state"
  (state / "mps.env").write_text(f"export CUDA_MPS_PIPE_DIRECTORY={state}/mps/pipe "
                                 f"CUDA_MPS_LOG_DIRECTORY={state}/mps/log NMS_GPU_MPS=1\n")
  (state / "deadline").write_text("1234\n")  # as start leaves it with DEADLINE_S
  (state / "git.env").write_text("export NMSPARSE_GIT_SHA=abc123\n")  # and with GIT_SHA
  sweep = tmp_path / "sweep.sh"
  go = tmp_path / "go"  # each stand-in sweep runs until this file exists
  sweep.write_text('#!/bin/bash\necho "sweep $* pipe=$CUDA_MPS_PIPE_DIRECTORY mps=$NMS_GPU_MPS '
                   'lanes=$NMS_GPU_LANES sha=$NMSPARSE_GIT_SHA"\n'
                   f'while [ ! -e {go} ]; do sleep 0.1; done\n')
  sweep.chmod(0o755)
  proc, _ = table(tmp_path, "finish", "0", "1", "configs/vit_cifar10.py:full",
                  "configs/resnet18_cifar10.py:full@bdwp_2:4", TABLE_SWEEP=str(sweep))
  assert proc.returncode == 0, proc.stderr
  assert "lane 0 stopped" in proc.stdout
  assert ("lane 2 started" in proc.stdout and "in lane 0's place: configs/vit_cifar10.py:full "
          "configs/resnet18_cifar10.py:full@bdwp_2:4" in proc.stdout)
  procs[0].wait(timeout=10)
  new = int((state / "lane2.pid").read_text())
  assert os.getpgid(new) == new  # a session of its own, as start's lanes: stop ends all of it
  (state / "lane1.done").write_text("stopped\n")  # start's lanes are done, the new one runs
  proc, took = table(tmp_path, "wait", "3", TABLE_POLL="0.2")
  assert took >= 2 and "lane 2 done" not in proc.stdout, proc.stderr
  go.touch()
  proc, took = table(tmp_path, "wait", "40", TABLE_POLL="0.2")
  assert "lane 2 done" in proc.stdout and took < 40, (state / "lane2.log").read_text()
  log = (state / "lane2.log").read_text()
  first, second = (log.index("lane 2: configs/vit_cifar10.py:full filter ''"),
                   log.index("lane 2: configs/resnet18_cifar10.py:full filter 'bdwp_2:4'"))
  assert first < second
  assert (f"sweep --config configs/vit_cifar10.py:full --filter  --workdir_root {tmp_path}/runs "
          f"--results_dir {state}/results/runs --deadline 1234 --set" in log)
  assert "--filter bdwp_2:4" in log
  assert log.count(f"pipe={state}/mps/pipe mps=1 lanes=2 sha=abc123") == 2


def test_finish_without_sweeps_starts_no_lane(lanes):
  tmp_path, _ = lanes
  proc, _ = table(tmp_path, "finish", "1", "1")
  assert "lane 1 stopped" in proc.stdout and "started" not in proc.stdout
  assert not (tmp_path / "state" / "lane2.pid").exists()


def unfinished_run(runs, step, method="bdwp_1x4"):
  """A workdir as a run killed after its checkpoint ``step`` leaves it (no results.json)."""
  wd = runs / "vit_cifar10_full" / method / "seed0"
  os.makedirs(wd / "checkpoints" / str(step))
  for name in ("config.json", "metrics.jsonl", "segments.jsonl"):
    (wd / name).write_text("{}\n")
  (wd / "checkpoints" / str(step) / "state").write_bytes(os.urandom(1000))
  return wd


def test_end_waits_for_the_lanes_then_exports_the_unfinished_runs(lanes):
  tmp_path, _ = lanes
  unfinished_run(tmp_path / "runs", 6000)
  (unfinished_run(tmp_path / "runs", 78000, "bdwp_2x4") / "results.json").write_text("{}\n")
  proc, took = table(tmp_path, "end", "3", TABLE_POLL="0.2")
  assert proc.returncode == 0, proc.stderr
  assert took >= 2  # both lanes still ran: it waited out its seconds
  assert "export: vit_cifar10_full/bdwp_1x4/seed0 at step 6000: 1 chunks" in proc.stdout
  sent = sorted(os.listdir(tmp_path / "out" / "ckpt"))
  assert sent == ["manifest.txt", "vit_cifar10_full-bdwp_1x4-seed0.tar.000"]  # not the finished


def test_end_exports_at_once_when_every_lane_is_done(lanes):
  tmp_path, procs = lanes
  for i in range(2):
    (tmp_path / "state" / f"lane{i}.done").touch()
  unfinished_run(tmp_path / "runs", 2000)
  proc, took = table(tmp_path, "end", "60", TABLE_POLL="0.2")
  assert took < 30 and "at step 2000: 1 chunks" in proc.stdout, proc.stderr


@pytest.mark.parametrize("args", [("wait", "30"), ("finish", "0", "30"), ("stop", "0"),
                                  ("export",), ("end", "30")])
def test_a_machine_without_lanes_exits_at_once(tmp_path, args):
  os.makedirs(tmp_path / "state" / "results" / "runs")
  (tmp_path / "state" / "seeded").touch()  # as on a fresh machine, after the seeding copy
  proc, took = table(tmp_path, *args)
  assert proc.returncode == 1
  assert "machine went cold" in proc.stderr
  assert took < 10


def test_stop_ends_the_lanes_that_start_made(tmp_path):
  """The real path: ``start`` makes the lanes (each records its pid, as its session's leader);
  here they wait for data that never comes, and ``stop`` ends each one's whole group. With
  DEADLINE_S, ``start`` leaves the lanes their deadline: that many seconds from its start."""
  state = tmp_path / "state"
  os.makedirs(state / "results" / "runs")
  (state / "seeded").touch()
  before = time.time()
  proc, _ = table(tmp_path, "start", timeout=60, DEADLINE_S="1500", GIT_SHA="abc123")
  assert proc.returncode == 0, proc.stderr
  assert (state / "git.env").read_text() == "export NMSPARSE_GIT_SHA=abc123\n"
  assert before + 1499 <= int((state / "deadline").read_text()) <= time.time() + 1500
  assert "deadline: the lanes start no run that would end after" in proc.stdout
  pids = []
  for i in range(2):
    deadline = time.monotonic() + 10
    while not (state / f"lane{i}.pid").exists() and time.monotonic() < deadline:
      time.sleep(0.1)
    pids.append(int((state / f"lane{i}.pid").read_text()))
    assert os.getpgid(pids[-1]) == pids[-1]  # a group of its own
  os.makedirs(state / "export")
  (state / "export" / "manifest.txt").touch()  # the lanes never unpack: let stop find them
  try:
    for i, pid in enumerate(pids):
      proc, _ = table(tmp_path, "stop", str(i))
      assert f"lane {i} stopped" in proc.stdout, proc.stderr
      assert group_gone(pid)
  finally:  # a failed stop leaves no lane waiting for ever
    for pid in pids:
      try:
        os.killpg(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass


def test_step_takes_the_carries_in_any_order_and_unpacks_once_all_are_here(tmp_path):
  """``step``: the first call on a machine starts the lanes (once), a call without every carry
  says which are missing and returns at once, the one that completes them unpacks (a stand-in
  for unpack.py that records its arguments) and the lanes then run their sweeps (stand-ins).
  DEADLINE_AT sets the lanes' deadline at start, and a later call that brings another resets it
  (as when a cold machine restarted): the lanes' sweeps get the newest."""
  state, carry = tmp_path / "state", tmp_path / "carry"
  os.makedirs(state / "results" / "runs")
  (state / "seeded").touch()
  unpack = tmp_path / "unpack.sh"
  unpack.write_text('#!/bin/bash\necho "unpack $*"; cat "$5/part-a/train-0.npz"; mkdir -p "$3"\n')
  unpack.chmod(0o755)
  sweep = tmp_path / "sweep.sh"
  sweep.write_text('#!/bin/bash\necho "sweep $* lanes=$NMS_GPU_LANES"\n')
  sweep.chmod(0o755)
  extra = dict(TABLE_CARRY=str(carry), TABLE_UNPACK=str(unpack), TABLE_SWEEP=str(sweep),
               TABLE_POLL="0.2", MPS="0", LANE0="configs/vit_cifar10.py:full",
               LANE1="configs/resnet18_cifar10.py:full")
  pieces = {2: ["train-0.npz.1", "test.npz"], 3: ["train-1.npz", "unpack.py"],
            1: ["train-0.npz.0"]}
  pids = None
  try:
    for n, (k, names) in enumerate(pieces.items()):  # carry 2 first, as when call 1 got no machine
      os.makedirs(carry / str(k))
      for name in names:
        (carry / str(k) / name).write_text(f"{k}/{name}\n")
      at = str(4_000_000_000 + (n == 2))  # the same in calls 0 and 1, another in call 2
      proc, took = table(tmp_path, "step", "30", DEADLINE_AT=at, **extra)
      assert proc.returncode == 0, proc.stderr
      assert ("deadline: the lanes start no run" in proc.stdout) == (n != 1), proc.stdout
      assert (state / "deadline").read_text() == at + "\n"
      if n < 2:
        assert "not here yet" in proc.stdout and took < 20
        assert f"{carry}/1/train-0.npz.0" in proc.stdout
        assert not (state / "unpacked").exists()
      now = [(state / f"lane{i}.pid").read_text() for i in range(2)]
      assert pids in (None, now)  # started by the first call, not again
      pids = now
    assert "not here yet" not in proc.stdout and (state / "unpacked").exists()
    assert "lane 0 done" in proc.stdout and "lane 1 done" in proc.stdout
    assert not (state / "parts").exists()  # joined, unpacked, then removed
    assert "1/train-0.npz.0\n2/train-0.npz.1\n" in proc.stdout  # part-a's pieces in order
    logs = [(state / f"lane{i}.log").read_text() for i in range(2)]
    assert "sweep --config configs/vit_cifar10.py:full" in logs[0]
    assert "sweep --config configs/resnet18_cifar10.py:full" in logs[1]
    # then one lane (either) ran its sweeps again alone, at one lane's pace; the other did not
    alone = [log for log in logs if "its sweeps again, alone" in log]
    assert len(alone) == 1, logs
    passes = alone[0].split("its sweeps again, alone")
    assert "(lanes 2)" in passes[0] and "(lanes 1)" not in passes[0]
    assert "(lanes 1)" in passes[1] and "lanes=1" in passes[1]  # what the runner records
    assert "lanes=2" in passes[0] and "lanes=1" not in passes[0]
    assert f"--set data.data_dir={state}/data" in logs[0]
    assert "--deadline 4000000001" in logs[0] and "--deadline 4000000000" not in logs[0]
  finally:
    for i in range(2):
      pid = state / f"lane{i}.pid"
      if pid.exists():
        try:
          os.killpg(int(pid.read_text()), signal.SIGKILL)
        except ProcessLookupError:
          pass


def test_finish_does_not_wait_on_a_lane_idle_until_it_can_run_alone(lanes):
  tmp_path, procs = lanes
  (tmp_path / "state" / "lane0.idle").touch()
  proc, took = table(tmp_path, "finish", "0", "40")
  assert took < 20 and "lane 0 stopped" in proc.stdout, proc.stderr
  procs[0].wait(timeout=10)
  assert procs[1].poll() is None


def test_after_lanes_runs_once_in_the_call_that_finds_the_lanes_done(lanes):
  tmp_path, _ = lanes
  job = 'echo "spare seconds used" >> "$OUT/job.txt"'
  proc, _ = table(tmp_path, "wait", "2", TABLE_POLL="0.2", AFTER_LANES=job)
  assert proc.returncode == 0, proc.stderr
  assert "after lanes" not in proc.stdout  # the lanes still train: not yet
  assert not (tmp_path / "out" / "job.txt").exists()
  for i in range(2):
    (tmp_path / "state" / f"lane{i}.done").touch()
  for _ in range(2):  # a second call does not run it again
    proc, took = table(tmp_path, "wait", "30", TABLE_POLL="0.2", AFTER_LANES=job)
    assert proc.returncode == 0 and took < 20, proc.stderr
  assert (tmp_path / "out" / "job.txt").read_text() == "spare seconds used\n"
  assert "after lanes: rc 0" not in proc.stdout


def test_after_lanes_quits_the_mps_daemon_before_its_job(lanes):
  tmp_path, _ = lanes
  state, fakebin, log = tmp_path / "state", tmp_path / "bin", tmp_path / "order.log"
  os.makedirs(fakebin)
  (fakebin / "nvidia-cuda-mps-control").write_text(
      f'#!/bin/bash\necho "mps-control [$*] $(cat) $CUDA_MPS_PIPE_DIRECTORY" >> {log}\n')
  (fakebin / "nvidia-cuda-mps-control").chmod(0o755)
  (state / "mps.env").write_text(f"export CUDA_MPS_PIPE_DIRECTORY={state}/mps/pipe "
                                 f"CUDA_MPS_LOG_DIRECTORY={state}/mps/log NMS_GPU_MPS=1\n")
  for i in range(2):
    (state / f"lane{i}.done").touch()
  path = f"{fakebin}{os.pathsep}{os.environ['PATH']}"
  proc, _ = table(tmp_path, "wait", "30", PATH=path, AFTER_LANES=f'echo job >> {log}')
  assert "MPS: daemon stopped" in proc.stdout and "after lanes: rc 0" in proc.stdout, proc.stdout
  assert log.read_text().splitlines() == [f"mps-control [] quit {state}/mps/pipe", "job"]
  assert not (state / "mps.env").exists()


def test_after_lanes_is_not_run_where_it_would_end_past_the_deadline(lanes):
  tmp_path, _ = lanes
  for i in range(2):
    (tmp_path / "state" / f"lane{i}.done").touch()
  (tmp_path / "state" / "deadline").write_text(f"{int(time.time()) + 30}\n")
  proc, _ = table(tmp_path, "wait", "30", AFTER_LANES='touch "$OUT/ran"', AFTER_S="100")
  assert "after lanes: not run" in proc.stdout
  assert not (tmp_path / "out" / "ran").exists()
  proc, _ = table(tmp_path, "wait", "30", AFTER_LANES='touch "$OUT/ran"; exit 3', AFTER_S="50")
  assert "after lanes: rc 3" in proc.stdout and (tmp_path / "out" / "ran").exists()


def test_after_lanes_waits_for_a_call_it_can_end_in(lanes):
  """A job longer than what is left of this call (CALL_S) waits for the next waiting call."""
  tmp_path, _ = lanes
  for i in range(2):
    (tmp_path / "state" / f"lane{i}.done").touch()
  proc, _ = table(tmp_path, "wait", "30", AFTER_LANES='touch "$OUT/ran"', AFTER_S="50",
                  CALL_S="40")
  assert "after lanes: left for a later call" in proc.stdout, proc.stdout
  assert not (tmp_path / "out" / "ran").exists()
  proc, _ = table(tmp_path, "wait", "30", AFTER_LANES='touch "$OUT/ran"', AFTER_S="50")
  assert "after lanes: rc 0" in proc.stdout and (tmp_path / "out" / "ran").exists()
