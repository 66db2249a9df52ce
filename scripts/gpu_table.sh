#!/usr/bin/env bash
# Issue 14's full-schedule CIFAR-10 runs on one GPU machine, across back-to-back device calls (each
# at most 10 minutes; the runs live on in the background while the machine stays warm). The data
# goes in three carries of ~37 MB (bash scripts/split_carry.sh, here, once), since a call carries at
# most 64 MiB with the working tree:
#   call 1 (carry .data/carry/1, .whl/ml_collections-*.whl): DEADLINE_S=<device seconds left
#   minus ~120> bash scripts/gpu_table.sh start
#   call 2 (carry .data/carry/2): bash scripts/gpu_table.sh carried
#   call 3 (carry .data/carry/3): bash scripts/gpu_table.sh unpack-and-wait 540
#   later calls: bash scripts/gpu_table.sh wait 560
#   when a lane's next run cannot finish in the session: bash scripts/gpu_table.sh finish LANE
#   SECONDS [SWEEP...] (lane LANE ends the run it trains, then stops, so the other lane runs alone;
#   given sweeps, "config[:arg][@filter]" as in LANE<i>, a new lane runs them in its place, under
#   the same MPS daemon; "stop LANE" stops a lane at once)
#   the session's last long call: bash scripts/gpu_table.sh end SECONDS (waits, then exports the
#   runs still unfinished and sends its first chunks), then "wait 0" calls until every chunk came back
#   (below: those runs go on in the next session; that session carries .data/resume/carry-K with
#   "carried" calls between calls 2 and 3); "export" alone does the same at once
# The machine goes cold ~30 s after a call, so send calls 1-3 as one batch of device calls (on
# 2026-12-02 it went cold between calls 1 and 2 sent one at a time).
# "step SECONDS" does calls 1-3 in any order: every call of the batch is the same command (with
# DEADLINE_S and LANE<i>), each with its own carry. The first on a machine starts the lanes, each
# call checks which carries are here, the one that completes them unpacks, and a call then waits
# up to SECONDS; one that finds a carry missing says which and returns at once. So when a call
# finds no machine, or the machine went cold between calls (2026-12-03: call 1 got none, call 2
# started a fresh one), sending the missing carries again picks up where it stands. (Resume
# carries go before the last data carry: the unpack imports what is here then.) Sending the three
# carries twice in the batch (1 2 3 1 2 3) covers a refused first call without a round trip
# through the conversation, in which the machine may go cold (2026-12-03: call 1 got none, the
# batch's last call, a plain wait, found carry 1 missing and returned, and the machine went cold
# before carry 1 came: a fresh start cost ~130 s); once all are here, a later carry's call waits.
# A wait, finish, stop, end or export that finds no lanes says so and exits 1 at once, rather than
# spend the call on a fresh machine. (On one H200, git af7c9ce: lane 0's ResNet50 :full run took
# 1065 s next to the ViT's; a finish with the ViT's sweeps then ran a Bi-Mask ViT run in 459 s in
# lane 0's place, where lane 0's next ResNet50 run could not have finished in the session.)
# (ml_collections is the one wheel a CIFAR run needs; the "arrays" source never imports Grain or
# array_record, which only the folder/arrayrecord/tfds sources read through.) Two carries of the
# parts as they are (call 1 .data/cifar10/part-a, call 2 .data/cifar10/part-b and .data/unpack.py,
# then unpack-and-wait) still work, with under 5 MB of room left for the tree.
# LANES (default 2) sweeps share the GPU, each in its own process with 1/LANES of its memory; lane i
# runs the sweeps of LANE<i> in order (each a "config[:arg][@filter]" list; defaults below). Two
# lanes on one H200 finish more runs per device minute than one, but each run's wall_time_s then
# counts a shared GPU (recorded as gpu_lanes in the run JSON). Three gained nothing over two:
# VGG19 :full took 671-776 s a run three at a time (0.24 runs a minute), 310-341 s next to one ViT
# run. Finished runs are skipped: the committed results/runs/*.json are copied into the sweeps'
# --results_dir first, and sweep.py counts a run found there as finished (after checking its
# run-defining fields). Once every lane has been through its sweeps, one of them goes through its
# own once more alone (SOLO=0: not; see lane()), so the session's tail trains a run at one lane's
# pace where two lanes' pace left none that could end before the deadline.
# MPS (default 1; MPS=0: off): "start" first starts a CUDA MPS control daemon (pipes and logs under
# $state/mps), so the lanes' kernels run at once rather than by time slicing; the runs then record
# gpu_mps. Without the binary, or when it fails to start, the lanes run as usual (said). On one H200
# (git 6423cb4) two lanes under MPS ran ResNet18 :full at a median 1.90-2.33 s an epoch and the ViT
# at 1.71-1.80 s, against 2.4-2.8 s and 2.2-2.4 s time-sliced in earlier sessions (1.29-1.37 s for
# ResNet18 alone): 405-520 s a run rather than 462-600 s.
# Every call packs the finished results and the lanes' log tails into $OUT/results.tgz (a waiting
# call also each time a run finishes, and before it exits on a TERM, so a call cut at the end of the
# budget still brings back what finished); results live under /tmp/table, outside the repository
# (each call re-copies the working tree).
set -uo pipefail
# DEADLINE_S (at start; default none): the lanes start no run that would end later than that many
# seconds from now (each sweep's --deadline: a run's time is estimated from the recorded runs like
# it, the committed ones and this machine's, the slowest of them; experiments/sweep.py), and go on
# to the runs that fit; so lanes listing long runs before short ones fill the session with what
# can finish, and leave the rest for the next. Set it to the session's device time left at call 1,
# less ~120 s for the last call and the machine's start.
# DEADLINE_AT (epoch seconds; over DEADLINE_S): the same deadline as a time of day, computed here
# (date +%s plus the budget left, less ~120 s) and sent alike in every call of the batch: start
# sets it and every later "step" call resets it when it differs. A relative DEADLINE_S counts from
# the call that starts the machine, so when a cold machine restarts later in the session it runs
# past the budget (2026-12-03: set by hand to 12:04:37 after a restart left it at 12:07:39, with
# the budget's end near 12:07:20). Device time runs only while a machine is held and the clock
# always does, so a time of day never overshoots the budget. Held time starts when the first call
# is sent, the machine's start included (2026-12-03 evening: held_s 94 when call 1 returned after
# 5.8 s of command), so the budget ends near the batch's send time plus the budget left. ~300 s
# less put the lanes' deadline ~210 s before the budget's end (a ResNet18 run started by hand once
# the lanes were done used that time, ending ~100 s before the budget); ~120 s is enough for the
# last call to return and pack, since a run is only started where the slowest recorded runs like
# it say it ends by the deadline.
# TABLE_STATE, TABLE_RUNS, TABLE_CHUNK, RESUME_DIR, TABLE_CARRY: elsewhere or smaller, for tests of
# these steps; TABLE_SWEEP: the command a lane runs for each of its sweeps, TABLE_UNPACK: the one
# that runs unpack.py (stand-ins, for tests)
state=${TABLE_STATE:-/tmp/table}
runs=${TABLE_RUNS:-/tmp/runs}
resume=${RESUME_DIR:-.data/resume}
carry=${TABLE_CARRY:-.data/carry}
chunk=${TABLE_CHUNK:-15M} chunks_per_call=3  # files back: at most 8 a call, 16 MiB each, 64 MiB
results=$state/results
mkdir -p "$results/runs"
[ -e "$state/seeded" ] || { cp results/runs/*.json "$results/runs/" && touch "$state/seeded"; }
lanes=${LANES:-2}
# Default: the rest of issue 14's 66 runs (finished ones are skipped), the main table's cells
# (dense, bdwp 2:8) first: ResNet50's in lane 0, the ViT's baselines and ratios in lane 1. Each
# lane then goes on to every run: the lanes may list the same runs, since a sweep skips a run the
# other lane trains now (it holds the workdir's lock), and, with DEADLINE_S, a run that could not
# end in time (so lane 0 goes on to shorter runs once no ResNet50 run fits). (A "bdwp_2:8" filter
# also takes the config's mask_every runs.)
LANE0=${LANE0:-"configs/resnet50_cifar10.py:full@dense_None configs/resnet50_cifar10.py:full@bdwp_2:8
  configs/resnet50_cifar10.py:full configs/resnet18_cifar10.py:full configs/vit_cifar10.py:full"}
LANE1=${LANE1:-"configs/vit_cifar10.py:full configs/resnet18_cifar10.py:full
  configs/resnet50_cifar10.py:full"}

# A run that cannot finish before the session's device time ends goes on in the next session from
# its newest checkpoint: "export" snapshots every unfinished workdir under $runs (config, metrics,
# segments and its newest checkpoint; not log.txt or TensorBoard events) as a tar in 15 MiB
# chunks with its sha256, and every later call (pack) sends the next $chunks_per_call chunks and the
# manifest under $OUT/ckpt. Here, scripts/resume_carries.sh gathers the returned chunks into
# .data/resume/carry-K folders of at most three chunks; the next session carries them in calls of
# their own ("carried"), and unpack-and-wait joins and checks them and extracts each workdir
# under $runs before the lanes start, so the sweep resumes those runs where the snapshot left them
# (their results list the processes as "segments", each with its git SHA).
export_runs() {
  local out=$state/export
  rm -rf "$out" && mkdir -p "$out/chunks"
  : > "$out/manifest.txt"
  while IFS= read -r -d '' cfg; do
    local wd=$(dirname "$cfg") rel id newest
    [ -e "$wd/results.json" ] && continue
    newest=$(ls "$wd/checkpoints" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -n 1)
    [ -n "$newest" ] || continue
    rel=${wd#$runs/} id=$(echo "$rel" | tr '/' '-')
    rm -rf "$out/stage" && mkdir -p "$out/stage/$rel/checkpoints"
    # Copied first (orbax drops a step once keep_checkpoints newer ones are saved); a step that went
    # while copied skips the run, said on stderr.
    (cd "$wd" && cp -r config.json metrics.jsonl segments.jsonl "$out/stage/$rel/" 2>/dev/null;
     find checkpoints -maxdepth 1 -type f -exec cp {} "$out/stage/$rel/checkpoints/" \;
     cp -r "checkpoints/$newest" "$out/stage/$rel/checkpoints/") || {
      echo "export: $rel: step $newest went while copied; skipped" >&2; continue; }
    tar cf "$out/$id.tar" -C "$out/stage" "$rel"
    (cd "$out/chunks" && split -b "$chunk" -d -a 3 "../$id.tar" "$id.tar.")
    echo "$id $(sha256sum "$out/$id.tar" | cut -d' ' -f1) $(ls "$out/chunks" | grep -c "^$id.tar.") $newest" \
      >> "$out/manifest.txt"
    rm "$out/$id.tar"
    echo "export: $rel at step $newest: $(ls "$out/chunks" | grep -c "^$id.tar.") chunks"
  done < <(find "$runs" -mindepth 4 -maxdepth 4 -name config.json -print0 2>/dev/null)
  rm -rf "$out/stage"
  echo "export: $(ls "$out/chunks" | wc -l) chunks to send, $chunks_per_call a call"
}

send_chunks() {  # the next chunks of an export, with its manifest, under $OUT/ckpt
  local out=$state/export
  [ -f "$out/manifest.txt" ] || return 0
  mkdir -p "$OUT/ckpt" && cp "$out/manifest.txt" "$OUT/ckpt/"
  local left=$(ls "$out/chunks" | wc -l)
  for f in $(ls "$out/chunks" | sort | head -n "$chunks_per_call"); do
    mv "$out/chunks/$f" "$OUT/ckpt/"
  done
  echo "export: sent $(ls "$OUT/ckpt" | grep -c '\.tar\.'), $(ls "$out/chunks" | wc -l) of $left left"
}

import_runs() {  # the exported workdirs carried in $resume/*/, checked, under $runs
  [ -d "$resume" ] || return 0
  mkdir -p "$runs"
  sort -u "$resume"/*/manifest.txt | while read -r id sha n step; do
    local parts=$(find "$resume" -name "$id.tar.[0-9][0-9][0-9]" -printf "%f %p\n" | sort |
                  cut -d' ' -f2)
    if [ "$(echo "$parts" | grep -c .)" != "$n" ]; then
      echo "import: $id: $(echo "$parts" | grep -c .) of $n chunks carried; it starts afresh" >&2
      continue
    fi
    if [ "$(cat $parts | sha256sum | cut -d' ' -f1)" != "$sha" ]; then
      echo "import: $id: sha256 differs; it starts afresh" >&2
      continue
    fi
    cat $parts | tar xf - -C "$runs" && echo "import: $id resumes from step $step"
  done
}

start_mps() {  # unless MPS=0: a CUDA MPS daemon for the lanes; sets NMS_GPU_MPS=1 when it runs
  [ "${MPS:-1}" = 1 ] || return 0
  if ! command -v nvidia-cuda-mps-control > /dev/null; then
    echo "MPS: nvidia-cuda-mps-control not found; the lanes share the GPU by time slicing"
    return 0
  fi
  export CUDA_MPS_PIPE_DIRECTORY=$state/mps/pipe CUDA_MPS_LOG_DIRECTORY=$state/mps/log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d; then
    export NMS_GPU_MPS=1
    # for lanes that a later call starts (finish ... SWEEP): they inherit nothing from this call
    echo "export CUDA_MPS_PIPE_DIRECTORY=$CUDA_MPS_PIPE_DIRECTORY" \
         "CUDA_MPS_LOG_DIRECTORY=$CUDA_MPS_LOG_DIRECTORY NMS_GPU_MPS=1" > "$state/mps.env"
    echo "MPS: daemon started (pipes in $CUDA_MPS_PIPE_DIRECTORY)"
  else
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    echo "MPS: the daemon did not start; the lanes share the GPU by time slicing"
  fi
}

pack_results() {  # the finished results and the lanes' log tails, as $OUT/results.tgz
  mkdir -p "$state/tails"
  for f in "$state"/*.log; do [ -f "$f" ] && tail -c 30000 "$f" > "$state/tails/$(basename "$f")"; done
  tar czf "$OUT/results.tgz.part" -C "$state" results tails 2>/dev/null &&
    mv "$OUT/results.tgz.part" "$OUT/results.tgz"  # never a half-written tar, if the call is cut
}

pack() {
  pack_results
  send_chunks
  local new=$(find "$results/runs" -name "*.json" -newer "$state/seeded" -printf "%f ")
  echo "--- status $(date +%T): $(ls "$results/runs" | wc -l) run results, new on this machine: $new"
  for i in $(lane_ids); do
    if [ -f "$state/lane$i.done" ]; then echo "lane $i done"
    elif [ -f "$state/lane$i.idle" ]; then echo "lane $i idle (waits for the others, to run alone)"
    fi
  done
  command -v nvidia-smi > /dev/null &&
    nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
  for f in "$state"/lane*.log; do [ -f "$f" ] && { echo "== $f"; grep -E "epoch|Epoch|test_acc" "$f" | tail -n 2; }; done
  return 0
}

warm_here() {  # the lanes (or an export) live on this machine; a fresh one has neither
  [ -f "$state/unpacked" ] || [ -f "$state/export/manifest.txt" ] && return 0
  echo "no lanes here: the machine went cold since this session's unpack-and-wait (a fresh one" \
       "has neither the data nor the runs); start again from call 1" >&2
  pack
  return 1
}

stop_lane() {  # stop lane $1 (its sweep and the run it trains: back to its newest checkpoint)
  local pid=$(cat "$state/lane$1.pid" 2>/dev/null) pgid
  pgid=$(ps -o pgid= -p "${pid:-0}" 2>/dev/null | tr -d ' ')
  if [ -n "$pgid" ]; then
    kill -- "-$pgid" && echo "lane $1 stopped at $(date +%T)"
  else
    echo "lane $1 was not running"
  fi
  [ -f "$state/lane$1.done" ] || echo stopped > "$state/lane$1.done"
}

lane_ids() {  # the lanes started on this machine: start's and those that took a lane's place
  ls "$state" 2>/dev/null | sed -nE 's/^lane([0-9]+)\.pid$/\1/p' | sort -n
}

add_lane() {  # add_lane LANE SWEEP...: a new lane (the next free index) in lane LANE's place,
  # running the sweeps, under start's MPS daemon
  local old=$1 i=$lanes
  shift
  while [ -e "$state/lane$i.log" ]; do i=$((i + 1)); done
  [ -f "$state/mps.env" ] && source "$state/mps.env"
  [ -z "${NMSPARSE_GIT_SHA:-}${GIT_SHA:-}" ] && [ -f "$state/git.env" ] && source "$state/git.env"
  LANE_SWEEPS="$*" setsid nohup bash "$0" lane "$i" > "$state/lane$i.log" 2>&1 < /dev/null &
  local deadline=$((SECONDS + 10))
  while [ ! -s "$state/lane$i.pid" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  echo "lane $i started at $(date +%T) in lane $old's place: $*"
}

finish_lane() {  # let lane $1 end the run it trains (up to $2 seconds), then stop it; the sweeps
  # after that, if any, go to a new lane in its place; then pack
  local log=$state/lane$1.log deadline=$((SECONDS + $2)) before
  before=$(grep -c "Finished " "$log" 2>/dev/null)
  while [ $SECONDS -lt $deadline ] && [ ! -f "$state/lane$1.done" ] &&
        [ ! -f "$state/lane$1.idle" ] &&
        [ "$(grep -c "Finished " "$log" 2>/dev/null)" = "$before" ]; do
    sleep 5
  done
  grep "Finished " "$log" 2>/dev/null | tail -n 1
  stop_lane "$1"
  local lane=$1
  shift 2
  [ $# -gt 0 ] && add_lane "$lane" "$@"
  pack
}

wait_lanes() {  # wait up to $1 seconds, or until every lane is done; a run that finishes
  # meanwhile goes into $OUT/results.tgz at once, and a TERM (the call cut at its time limit or at
  # the end of the device budget) packs before exiting: a call that does not return in time still
  # brings back every run finished by then (2026-12-03: a run ended 100 s before the budget did)
  local deadline=$((SECONDS + $1))
  trap 'pack; exit 143' TERM
  while [ $SECONDS -lt $deadline ]; do
    lanes_done && break
    [ -n "$(find "$results/runs" -name "*.json" -newer "$OUT/results.tgz" 2>/dev/null)" ] ||
      [ ! -f "$OUT/results.tgz" ] && pack_results
    sleep "${TABLE_POLL:-5}" & wait $!  # (in the background, so a TERM is handled at once)
  done
  trap - TERM
}

lanes_done() {  # every lane started on this machine is done
  local i
  for i in $(lane_ids); do [ -f "$state/lane$i.done" ] || return 1; done
}

stop_mps() {  # quit start's MPS daemon, if any (its server exits with its last client)
  [ -f "$state/mps.env" ] || return 0
  if (source "$state/mps.env" && echo quit | timeout 10 nvidia-cuda-mps-control); then
    echo "MPS: daemon stopped"
  else
    echo "MPS: the daemon did not take quit"
  fi
  rm -f "$state/mps.env"
}

# AFTER_LANES (default none): a shell command that the first waiting call to find every lane done
# runs once, in that call, under `timeout AFTER_S` (default 120 s), its output in $OUT/after.log
# (it may write more under $OUT), when it would end by the lanes' deadline plus 60 s; the deadline
# is the budget's end less ~120 s, so that leaves the call ~60 s to return. Without it, a short
# job for the session's spare seconds (the GPU resume test) goes in a call of its own once the
# lanes are done, and a machine that goes cold before that call leaves too little budget to start
# another (2026-12-03, late afternoon: 237 s left, the call refused). The job runs after the MPS
# daemon is quit, as a plain call's would: on 2026-12-03 (evening, one H200) the resume test,
# run so with the daemon still up, printed nothing in 50 s (rc 124), and the same test in a
# call of its own right after took 41 s in all (why it was slower is not known).
# Nor does it start where it would outlast this call (CALL_S, default 590 s from the call's start:
# the device's 600 s limit a call, less packing): a later waiting call of the batch, finding the
# lanes done at once, runs it with the whole call ahead of it.
after_lanes() {
  [ -n "${AFTER_LANES:-}" ] && lanes_done && [ ! -e "$state/after.started" ] || return 0
  local limit=${AFTER_S:-120} deadline
  deadline=$(cat "$state/deadline" 2>/dev/null || echo 0)
  if [ "$deadline" != 0 ] && [ $(($(date +%s) + limit)) -gt $((deadline + 60)) ]; then
    echo "after lanes: not run, ${limit} s from now ends past the deadline plus 60 s"; return 0
  fi
  if [ $((SECONDS + limit)) -gt "${CALL_S:-590}" ]; then
    echo "after lanes: left for a later call (this one is ${SECONDS} s in, of ${CALL_S:-590} s)"
    return 0
  fi
  touch "$state/after.started"
  stop_mps
  timeout "$limit" bash -c "$AFTER_LANES" > "$OUT/after.log" 2>&1
  echo "after lanes: rc $? in $OUT/after.log"
}

wait_for() { wait_lanes "$1"; after_lanes; pack; }  # wait up to $1 s for every lane, then pack

run_sweeps() {  # run_sweeps INDEX SWEEPS: lane INDEX's sweeps in turn
  local i=$1 item deadline
  deadline=$(cat "$state/deadline" 2>/dev/null || echo 0)
  for item in $2; do
    local config=${item%%@*} filter=""
    [[ $item == *@* ]] && filter=${item#*@}
    echo "=== $(date +%T) lane $i: $config filter '$filter' (lanes $NMS_GPU_LANES)"
    ${TABLE_SWEEP:-python3 -m experiments.sweep} --config "$config" --filter "$filter" \
      --workdir_root "$runs" --results_dir "$results/runs" --deadline "$deadline" \
      --set data.data_dir=$state/data
  done
}

others_idle() {  # every lane but $1 is done, or idle (waiting to run alone)
  local j
  for j in $(lane_ids); do
    [ "$j" = "$1" ] || [ -f "$state/lane$j.done" ] || [ -f "$state/lane$j.idle" ] || return 1
  done
}

lane() {  # lane INDEX: its sweeps (LANE_SWEEPS, else LANE<INDEX>) in turn, once data is unpacked;
  # then, with other lanes (SOLO=0: not), it waits until every lane is idle, and the first to get
  # there runs its sweeps once more alone, at one lane's pace: a run that two lanes' pace could not
  # end before the deadline may fit then (2026-12-03, by hand: ResNet18 Bi-Mask 2:8 in 373 s alone
  # where two lanes took 527-533 s a run). Its runs record gpu_lanes 1, true unless a "finish ...
  # SWEEP" call adds a lane beside it.
  local i=$1 var="LANE$1"
  local sweeps=${LANE_SWEEPS:-${!var:-}}
  echo $$ > "$state/lane$i.pid"  # its own session's leader (setsid): stop_lane kills that group
  while [ ! -f "$state/unpacked" ]; do sleep 2; done
  source scripts/gpu_env.sh
  export XLA_PYTHON_CLIENT_MEM_FRACTION=$(python3 -c "print(round(0.9 / $lanes, 2))")
  export JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache NMS_GPU_LANES=$lanes
  run_sweeps "$i" "$sweeps"
  if [ "$lanes" -gt 1 ] && [ "${SOLO:-1}" = 1 ]; then
    touch "$state/lane$i.idle"
    until others_idle "$i"; do sleep "${TABLE_POLL:-2}"; done
    if mkdir "$state/solo" 2> /dev/null; then  # (the others then wait until it is done)
      rm -f "$state/lane$i.idle"
      echo "=== $(date +%T) lane $i: the other lanes are idle; its sweeps again, alone"
      NMS_GPU_LANES=1 run_sweeps "$i" "$sweeps"
    fi
  fi
  touch "$state/lane$i.done"
}

set_deadline() {  # $state/deadline from DEADLINE_AT, else (at start only) DEADLINE_S from now
  local at=${DEADLINE_AT:-}
  if [ -z "$at" ] && [ -n "${DEADLINE_S:-}" ] && [ "${1:-}" = start ]; then
    at=$(($(date +%s) + DEADLINE_S))
  fi
  [ -n "$at" ] || return 0
  [ "$(cat "$state/deadline" 2> /dev/null)" = "$at" ] && return 0
  echo "$at" > "$state/deadline"
  echo "deadline: the lanes start no run that would end after $(date -d "@$at" +%T)" \
       "($((at - $(date +%s))) s from now)"
}

start_lanes() {  # the lanes (each waits for the unpacked data), under MPS, with their deadline
  command -v nvidia-smi > /dev/null && nvidia-smi -L
  set_deadline start
  start_mps
  # the commit the runs record (metrics.git_sha: the machine's copy of .git is stale), for lanes
  # that a later call starts, whose command may not set it (2026-12-03: one recorded 49031e6+dirty)
  local sha=${NMSPARSE_GIT_SHA:-${GIT_SHA:-}}
  [ -n "$sha" ] && echo "export NMSPARSE_GIT_SHA=$sha" > "$state/git.env"
  for i in $(seq 0 $((lanes - 1))); do
    setsid nohup bash "$0" lane "$i" > "$state/lane$i.log" 2>&1 < /dev/null &
  done
  touch "$state/started"
  sleep 5
}

missing_carries() {  # the pieces of the three data carries not on this machine, by name
  local f
  for f in 1/train-0.npz.0 2/train-0.npz.1 2/test.npz 3/train-1.npz 3/unpack.py; do
    [ -f "$carry/$f" ] || printf '%s ' "$carry/$f"
  done
}

unpack_data() {  # the carried parts joined, checked and decoded under $state/data; then the
  # carried resume snapshots under $runs; then the lanes go
  local src=.data/cifar10 unpack=.data/unpack.py
  if [ -d "$carry/3" ]; then  # three carries: join part-a's two pieces (checked by unpack.py)
    src=$state/parts unpack=$carry/3/unpack.py
    mkdir -p "$src/part-a" "$src/part-b"
    cat "$carry/1/train-0.npz.0" "$carry/2/train-0.npz.1" > "$src/part-a/train-0.npz" &&
      cp "$carry/2/test.npz" "$carry/3/train-1.npz" "$src/part-b/" || return 1
  fi
  ${TABLE_UNPACK:-python3} "$unpack" --out "$state/data" --src "$src" || return 1
  rm -rf "$state/parts"
  import_runs
  touch "$state/unpacked"
}

case "${1:-}" in
  start) start_lanes; pack ;;
  lane) lane "$2" ;;
  carried)  # a call that only carries (data carry 2, resume carries): it stays while warm
    ls -l "$carry/1" "$carry/2" "$resume"/* 2>&1 | grep -v "^total"
    [ -d "$carry/1" ] || { pack; exit 1; }
    pack ;;
  export) warm_here || exit 1; export_runs; pack ;;
  stop) warm_here || exit 1; stop_lane "$2"; pack ;;
  finish) warm_here || exit 1; finish_lane "$2" "${3:-560}" "${@:4}" ;;
  end) warm_here || exit 1; wait_lanes "${2:-540}"; export_runs; pack ;;
  import) import_runs ;;  # (unpack-and-wait does it; on its own for tests)
  mps) start_mps; env | grep -E "^(CUDA_MPS_|NMS_GPU_MPS)" | sort || true ;;  # (start does it; for tests)
  unpack-and-wait)
    # A machine that went cold since call 1 has neither its carry nor lanes: stop at once rather
    # than wait out the call on nothing.
    unpack_data || { pack; exit 1; }
    wait_for "${2:-540}" ;;
  step)  # any call of a session, in any order (see "step" above)
    if [ -f "$state/started" ]; then set_deadline; else start_lanes; fi
    if [ ! -f "$state/unpacked" ]; then
      missing=$(missing_carries)
      if [ -n "$missing" ]; then
        echo "step: the lanes wait for the data; not here yet: $missing"
        pack; exit 0
      fi
      unpack_data || { pack; exit 1; }
    fi
    wait_for "${2:-540}" ;;
  wait) warm_here || exit 1; wait_for "${2:-560}" ;;
  *) echo "usage: $0 start | carried | unpack-and-wait SECONDS | step SECONDS | wait SECONDS |" \
       "export | stop LANE | finish LANE SECONDS [SWEEP...] | end SECONDS | import | mps" >&2
     exit 2 ;;
esac
