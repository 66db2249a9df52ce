"""The training run: data on the devices or streamed, model and state, start-up report (summary,
layer rules, per-stage FLOPs), epochs of jitted steps, evaluation, checkpoints, metrics, results."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from nmsparse.data.sources import ArrayDataset, load_dataset
from nmsparse.data.stream import IMAGENET_MEAN, IMAGENET_STD, folder_bytes, make_pipeline
from nmsparse.prune.methods import ff_mask
from nmsparse.prune.permutation import DEFAULT_REFRESH, DEFAULT_SEARCH
from nmsparse.prune.rules import LayerRules, path_str, sparsity_report
from nmsparse.prune.schedule import MASK_COLLECTION
from nmsparse.train import flops as flops_lib
from nmsparse.train.checkpoint import Checkpointer
from nmsparse.train.inputs import DevicePrefetch, InputMeter, check_fits_device, put_local_batch
from nmsparse.train.metrics import (MetricWriter, Progress, device_name, git_sha,
                                    quiet_library_logs, split_mask_flips, write_json)
from nmsparse.train.parallel import make_mesh, put_batch_sharded, put_replicated
from nmsparse.train.setup import (build_model, build_rules, compute_dtype, create_state,
                                  run_pattern, validate_config)
from nmsparse.train.state import TrainState
from nmsparse.train.step import (InputSpec, make_eval_step, make_stream_eval_step,
                                 make_stream_train_step, make_train_step)
from nmsparse.train.workdir import (RESULTS_FILE, check_workdir, hold_workdir, read_segments,
                                    record_config, record_segment)


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/inf loss; the message names the step."""


def run_name(config: Any) -> str:
  """``<name>_<method>[_<N>x<M>][_every<k>]_s<seed>``, the stem of the run's results file: every
  field a sweep grid varies (method, pattern, ``mask_every`` when not 1, seed) is in it, so the
  runs of one sweep never share a file in ``results_dir``."""
  pattern = run_pattern(config)
  tag = "" if pattern is None else f"_{pattern.n}x{pattern.m}"
  every = config.get("mask_every", 1) or 1
  if pattern is not None and every != 1:
    tag += f"_every{every}"
  return f"{config.name}_{config.method}{tag}_s{config.seed}"


def model_summary(params: Any) -> None:
  """Logs parameter counts per top-level module and the total."""
  total = 0
  for name, subtree in params.items():
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(subtree))
    total += count
    logging.info("  %-32s %12s params", name, f"{count:,}")
  logging.info("  %-32s %12s params", "total", f"{total:,}")


def sparse_kernels(params: Any, rules: LayerRules, method: str) -> dict[str, Any]:
  """``{path: pattern}`` of the kernels trained sparse (empty for ``dense``)."""
  if method == "dense":
    return {}
  out = {}
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    path = path_str(key_path)
    if path.endswith("/kernel") and leaf.ndim >= 2 and rules.pattern_for(path) is not None:
      out[path] = rules.pattern_for(path)
  return out


_ff_mask = jax.jit(ff_mask, static_argnums=(1, 2))


def ff_masks(params: Any, kernels: dict[str, Any], nm_masks: Any = None,
             method: str | None = None) -> dict[str, jax.Array]:
  """The FF masks the sparse kernels of ``method`` use now (on the device): from the kernel, or
  from its ``kernel_snapshot`` in ``nm_masks`` where the layer keeps one (``mask_every > 1``)."""
  flat = {path_str(k): v for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(nm_masks or {})[0]:
    path = path_str(key_path)
    if path.endswith("/kernel_snapshot"):
      flat[path[: -len("_snapshot")]] = leaf
  return {path: _ff_mask(flat[path], pattern, method) for path, pattern in kernels.items()}


def check_mask_counts(state: TrainState) -> None:
  """Checks that every ``nm_masks`` call count (``mask_every > 1`` layers) equals the step.

  Each train step advances them once; a mismatch means the step applied the model with
  ``nm_masks`` immutable, so its masks would stay frozen at their last refresh.

  Raises:
    RuntimeError: naming the first layer whose count is off.
  """
  if not state.nm_masks:
    return
  counts = {path_str(k): v for k, v in jax.tree_util.tree_flatten_with_path(state.nm_masks)[0]
            if path_str(k).endswith("/count")}
  counts, step = jax.device_get((counts, state.step))
  for path, count in counts.items():
    if int(count) != int(step):
      raise RuntimeError(f"{path} = {int(count)} after step {int(step)}: the train step must apply "
                         f"the model with {MASK_COLLECTION!r} mutable and keep the update (see "
                         "nmsparse/train/step.py), or masks never refresh under mask_every > 1.")


def epoch_order(key: jax.Array, epoch: int, num_examples: int, batch_size: int) -> np.ndarray:
  """The epoch's shuffled ``[steps, batch]`` index table (remainder dropped); depends only on the
  seed and the epoch, so a resumed run sees the same batches."""
  perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), num_examples))
  steps = num_examples // batch_size
  return perm[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)


def eval_order(num_examples: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Indices ``[steps, batch]`` covering the test set (padded with index 0) and a validity mask."""
  steps = -(-num_examples // batch_size)
  idx = np.arange(steps * batch_size)
  return (np.where(idx < num_examples, idx, 0).reshape(steps, batch_size).astype(np.int32),
          (idx < num_examples).reshape(steps, batch_size))


def eval_batch(requested: int, num_test: int, num_devices: int) -> int:
  """``requested`` clipped to the test set (rounded up to a multiple of the devices), so a large
  ``eval_batch_size`` never pads a small test set up to it."""
  fits = -(-num_test // num_devices) * num_devices
  if requested > fits:
    logging.info("eval_batch_size=%d exceeds the %d test examples: evaluating in batches of %d.",
                 requested, num_test, fits)
  return min(requested, fits)


def check_device_dataset(config: Any, dataset: ArrayDataset | None) -> None:
  """``data.pipeline="device"``: stops before training when the dataset would not fit in device
  memory (an image folder is counted before it is read; see ``train/inputs.py``)."""
  limit_mb = config.data.get("device_memory_limit_mb", 0)
  if dataset is None:
    if config.data.source == "folder":
      splits = ("train", config.data.test_split)
      check_fits_device(folder_bytes(config.data.data_dir, config.data.image_size,
                                     config.data.channels, splits),
                        f"the image folder {config.data.data_dir} at {config.data.image_size} px",
                        limit_mb)
    return
  nbytes = sum(a.nbytes for a in (dataset.train_images, dataset.train_labels,
                                  dataset.test_images, dataset.test_labels))
  check_fits_device(nbytes, f"dataset {dataset.name}", limit_mb)


class Run:
  """Everything one training run holds; :func:`train_and_evaluate` drives it."""

  def __init__(self, config: Any, workdir: str, dataset: ArrayDataset | None = None):
    self.config, self.workdir = config, workdir
    os.makedirs(workdir, exist_ok=True)
    self.mesh = make_mesh(config.num_devices or None)
    n_dev = self.mesh.size
    if config.batch_size % n_dev or config.eval_batch_size % n_dev:
      raise ValueError(f"batch_size={config.batch_size} and eval_batch_size="
                       f"{config.eval_batch_size} must divide by the {n_dev} devices.")
    self.data, self.stream = None, None
    if config.data.get("pipeline", "device") == "stream":
      if dataset is not None:
        raise ValueError("train_and_evaluate(dataset=...) is for data.pipeline='device'; a "
                         "stream reads data.source.")
      self.stream = make_pipeline(config.data, seed=config.seed, batch_size=config.batch_size,
                                  eval_batch_size=config.eval_batch_size,
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count())
      self.data_name, self.image_shape = config.data.name, self.stream.image_shape
      self.num_train, self.num_test = len(self.stream.train), len(self.stream.test)
      self.steps_per_epoch = self.stream.steps_per_epoch
      mean, std = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
    else:
      if dataset is None:
        check_device_dataset(config, None)
      self.data = dataset if dataset is not None else load_dataset(config.data)
      check_device_dataset(config, self.data)
      if self.data.num_classes != config.data.num_classes:
        raise ValueError(f"Dataset {self.data.name} has {self.data.num_classes} classes, config "
                         f"data.num_classes={config.data.num_classes}.")
      self.data_name, self.image_shape = self.data.name, self.data.image_shape
      self.num_train, self.num_test = len(self.data.train_labels), len(self.data.test_labels)
      self.steps_per_epoch = self.num_train // config.batch_size
      if self.steps_per_epoch == 0:
        raise ValueError(f"batch_size={config.batch_size} exceeds the {self.num_train} training "
                         "examples.")
      mean, std = self.data.channel_stats()
    self.total_steps = config.epochs * self.steps_per_epoch
    self.inputs = InputSpec(tuple(mean.tolist()), tuple(std.tolist()), config.data.crop_padding,
                            config.data.flip, compute_dtype(config),
                            **dict(config.get("augment") or {}))
    self.rules = build_rules(config)
    self.model = build_model(config, self.rules)
    # RBG keys: deterministic per seed and far cheaper to compile than threefry (initialisers and
    # augmentation draw many random numbers).
    self.key = jax.random.key(config.seed, impl="rbg")
    init_key, self.data_key, self.step_key = jax.random.split(self.key, 3)
    state, self.schedule = create_state(config, self.model, self.image_shape,
                                        self.steps_per_epoch, init_key)
    self.state: TrainState = put_replicated(jax.device_get(state), self.mesh)
    num_classes = config.data.num_classes
    # bimask with bimask_search="marked_calls": a second train step, the search call, for every
    # step that is a multiple of bimask_refresh (nmsparse.prune.permutation); else the one step.
    self.search_every = (config.get("bimask_refresh", DEFAULT_REFRESH)
                         if config.method == "bimask"
                         and config.get("bimask_search", DEFAULT_SEARCH) == "marked_calls" else 0)
    make_step = functools.partial(make_train_step if self.stream is None
                                  else make_stream_train_step, self.model, self.mesh, self.inputs,
                                  num_classes, config.label_smoothing)
    self.train_step = make_step()
    self.search_step = make_step(search=True) if self.search_every else self.train_step
    if self.stream is not None:
      self.eval_step = make_stream_eval_step(self.model, self.mesh, self.inputs, num_classes)
    else:
      self.train_arrays = put_replicated((self.data.train_images, self.data.train_labels),
                                         self.mesh)
      self.test_arrays = put_replicated((self.data.test_images, self.data.test_labels), self.mesh)
      self.eval_batch_size = eval_batch(config.eval_batch_size, self.num_test, n_dev)
      eval_idx, eval_valid = eval_order(self.num_test, self.eval_batch_size)
      self.eval_idx = put_batch_sharded(eval_idx, self.mesh, axis=1)
      self.eval_valid = put_batch_sharded(eval_valid, self.mesh, axis=1)
      self.eval_step = make_eval_step(self.model, self.mesh, self.inputs, num_classes)
    self.sparse = sparse_kernels(self.state.params, self.rules, config.method)

  def report_startup(self) -> dict[str, Any]:
    """Logs model summary, layer rules and per-stage FLOPs; returns the FLOPs table."""
    c = self.config
    logging.info("Run %s: model %s, data %s (train %d, test %d, %s), method %s, pattern %s, "
                 "%d epochs x %d steps, batch %d on %s", run_name(c), c.model, self.data_name,
                 self.num_train, self.num_test, self.image_shape, c.method, run_pattern(c),
                 c.epochs, self.steps_per_epoch, c.batch_size, device_name())
    logging.info("Model summary (%s):", c.model)
    model_summary(self.state.params)
    # Shapes only: the report checks every rule against its kernel and logs the nominal sparsity
    # without computing masks eagerly, layer by layer.
    sparsity_report(jax.eval_shape(lambda p: p, self.state.params), self.rules, c.method, log=True)
    example = jax.ShapeDtypeStruct((1,) + self.image_shape, jnp.float32)
    layers = flops_lib.layer_flops(self.model, self.state.variables(), example, self.rules)
    stages = flops_lib.stage_flops(layers, c.method)
    flops_lib.log_stage_flops(stages, c.method, c.batch_size)
    return stages

  def prefetch(self, batches: Iterator[Any]) -> DevicePrefetch:
    """Streamed host batches placed on the devices ahead of the step (``data.prefetch``)."""
    return DevicePrefetch(batches, functools.partial(put_local_batch, self.mesh),
                          self.config.data.get("prefetch", 2))

  def epoch_batches(self, epoch: int, start: int) -> Iterator[tuple[Any, ...]]:
    """The train step's arguments after the state, for the steps ``start..`` of ``epoch``."""
    if self.stream is not None:
      return self.prefetch(self.stream.epoch(epoch, start))
    order = put_batch_sharded(epoch_order(self.data_key, epoch, self.num_train,
                                          self.config.batch_size), self.mesh, axis=1)
    return ((*self.train_arrays, order, jnp.int32(i), self.step_key)
            for i in range(start, self.steps_per_epoch))

  def evaluate(self) -> dict[str, float]:
    sums = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    if self.stream is not None:
      batches = self.prefetch(self.stream.eval_batches())
      try:
        for batch in batches:
          out = self.eval_step(self.state, *batch)
          sums = {k: sums[k] + v for k, v in out.items()}
      finally:
        batches.close()
    else:
      for i in range(self.eval_idx.shape[0]):
        out = self.eval_step(self.state, *self.test_arrays, self.eval_idx, self.eval_valid,
                             jnp.int32(i))
        sums = {k: sums[k] + v for k, v in out.items()}
    sums = jax.device_get(sums)
    return {"test_loss": float(sums["loss"] / sums["count"]),
            "test_accuracy": float(sums["correct"] / sums["count"])}


def _check_finite(losses: list[tuple[int, jax.Array]]) -> None:
  values = np.asarray(jax.device_get([v for _, v in losses]))
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    step, value = losses[bad[0]][0], values[bad[0]]
    raise NonFiniteLossError(f"Non-finite training loss {value} at step {step} (epoch-local batch "
                             "as scheduled); stopping. Lower the learning rate or check the data.")


def train_and_evaluate(config: Any, workdir: str, *, dataset: ArrayDataset | None = None,
                       stop_after_step: int | None = None) -> dict[str, Any] | None:
  """Trains ``config`` in ``workdir`` (resuming from its newest readable checkpoint) and returns the
  results dict that is also written to ``workdir/results.json`` (and ``config.results_dir``): SPEC
  §3's keys, with ``history`` one record per epoch and, when ``track_mask_flips``, ``mask_flips``
  the per-layer FF mask flips of every epoch as columns (``metrics.split_mask_flips``). A resumed
  run adds ``segments``: the step each process started from, with its git SHA, JAX and device
  (``git_sha`` and ``jax_version`` are the last process's).

  A workdir belongs to one run (SPEC §4): its config is recorded in ``workdir/config.json``; a
  finished run returns its results and rewrites nothing.

  Args:
    config: a run config (see ``configs/``).
    workdir: checkpoints, ``metrics.jsonl``, TensorBoard events and ``results.json`` go here.
    dataset: use this dataset instead of loading ``config.data`` (tests).
    stop_after_step: return ``None`` right after this step without a final checkpoint, as a
      preempted job would (tests of resumption).
  Raises:
    ConfigMismatchError: ``workdir`` holds a run of another config (nothing is written).
    ValueError: a config field that cannot run (named in the message).
    NonFiniteLossError, NonFiniteParamsError: training diverged (the checkpoints stay finite).
    WorkdirBusyError: another live process trains the run in ``workdir`` (nothing is written).
  """
  start = time.time()
  quiet_library_logs()
  finished = check_workdir(config, workdir)
  if finished is not None:
    logging.info("Run %s in %s is finished (test accuracy %.4f); left as it is.",
                 run_name(config), workdir, finished["test_accuracy"])
    return finished
  validate_config(config)
  # One process trains a workdir at a time (process 0 of a multi-process run holds it for all).
  with hold_workdir(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    finished = check_workdir(config, workdir)  # again: another process may have finished it
    if finished is not None:
      logging.info("Run %s in %s was finished by another process (test accuracy %.4f).",
                   run_name(config), workdir, finished["test_accuracy"])
      return finished
    return _train_and_report(config, workdir, dataset, start, stop_after_step)


def _train_and_report(config: Any, workdir: str, dataset: ArrayDataset | None, start: float,
                      stop_after_step: int | None) -> dict[str, Any] | None:
  """``train_and_evaluate`` once the workdir is checked and held."""
  run = Run(config, workdir, dataset)
  if jax.process_index() == 0:
    record_config(config, workdir)
  stages = run.report_startup()
  ckpt = Checkpointer(workdir, config.keep_checkpoints)
  try:
    trained = _train(run, ckpt, start, stop_after_step)
  except BaseException:
    try:
      ckpt.close()
    except Exception as close_error:  # the training error below is the one to report
      logging.error("Closing the checkpointer after a training error failed too: %r", close_error)
    raise
  ckpt.close()
  if trained is None:
    return None
  step, history, wall_before = trained
  history, mask_flips = split_mask_flips(history)
  final = run.evaluate()
  pattern = run_pattern(config)
  results = {
      "model": config.model, "dataset": run.data_name, "method": config.method,
      "pattern": None if pattern is None else str(pattern), "seed": config.seed,
      "epochs": config.epochs, "test_accuracy": final["test_accuracy"],
      "test_loss": final["test_loss"], "device": device_name(), "git_sha": git_sha(),
      "jax_version": jax.__version__, "wall_time_s": wall_before + time.time() - start,
      "steps": step, "batch_size": config.batch_size,
      "implementation": config.implementation or "auto",
      "gemm_flops_per_example": stages, "history": history, "name": run_name(config),
      "config": json.loads(config.to_json_best_effort()),
  }
  if mask_flips is not None:
    results["mask_flips"] = mask_flips
  segments = read_segments(workdir)
  if len(segments) > 1:  # resumed: which code, JAX and device trained it from which step on
    results["segments"] = segments
  if os.environ.get("NMS_GPU_LANES"):  # set by launchers that run several runs on one GPU
    results["gpu_lanes"] = int(os.environ["NMS_GPU_LANES"])
  if os.environ.get("NMS_GPU_MPS") == "1":  # ... through CUDA MPS (kernels of the runs overlap)
    results["gpu_mps"] = True
  if os.environ.get("XLA_FLAGS", "").strip():  # compiled otherwise than XLA's defaults
    results["xla_flags"] = os.environ["XLA_FLAGS"].strip()
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, RESULTS_FILE), results)
    if config.results_dir:
      write_json(os.path.join(config.results_dir, run_name(config) + ".json"), results)
  logging.info("Finished %s: test accuracy %.4f (%d epochs, %.1f s)", run_name(config),
               final["test_accuracy"], config.epochs, results["wall_time_s"])
  return results


def _train(run: Run, ckpt: Checkpointer, start: float, stop_after_step: int | None
           ) -> tuple[int, list[dict[str, Any]], float] | None:
  """The epochs of ``run`` from its newest checkpoint on; returns ``(step, history, wall time of
  the earlier segments)``, or ``None`` when stopped at ``stop_after_step``.

  Checkpoints carry the epoch's progress so far (train metric sums, steps, time, FF masks at the
  epoch's start) and the wall time of all segments, so a resumed epoch reports the whole epoch.
  """
  config = run.config
  spe = run.steps_per_epoch
  masks = (ff_masks(run.state.params, run.sparse, run.state.nm_masks, config.method)
           if config.track_mask_flips else {})

  def data_state(at_step: int) -> dict[str, int] | None:
    return None if run.stream is None else run.stream.state(at_step)

  progress = put_replicated(epoch_progress(0.0, 0.0, 0, 0.0, 0.0, jax.device_get(masks),
                                           data_state(0)), run.mesh)
  run.state, restored = ckpt.restore_latest(run.state, progress)
  step = int(jax.device_get(run.state.step))
  if jax.process_index() == 0:
    record_segment(run.workdir, step, git_sha=git_sha(), jax_version=jax.__version__,
                   device=device_name())
  if restored is not None and run.stream is not None:
    run.stream.check_state(jax.device_get(restored[DATA_STATE]), step)
  first_epoch = step // spe
  writer = MetricWriter(run.workdir, config.tensorboard)
  history = writer.history(completed_epochs=first_epoch)
  wall_before = epoch_before = 0.0
  sums = {"loss": progress["loss_sum"], "accuracy": progress["accuracy_sum"]}
  steps_done = 0
  if restored is None and history:  # a checkpoint without progress: time up to its epoch
    wall_before = history[-1]["wall_time_s"]
  if restored is not None:
    wall_before = float(restored["wall_time_s"])
    epoch_before = float(restored["epoch_time_s"])
    sums = {"loss": restored["loss_sum"], "accuracy": restored["accuracy_sum"]}
    steps_done = int(restored["steps"])
    masks = restored["epoch_start_masks"]

  def save() -> None:
    _check_finite(losses)
    losses.clear()
    now = time.time()
    ckpt.save(run.state, put_replicated(epoch_progress(
        sums["loss"], sums["accuracy"], steps_done, epoch_before + now - epoch_start,
        wall_before + now - start, masks, data_state(step)), run.mesh))

  progress_bar = Progress(run.total_steps, step, config.progress_bar)
  first_step = step
  log_every = max(1, config.log_every_steps)
  every = config.checkpoint_every_steps
  meter, batches = InputMeter(), iter(())
  try:
    for epoch in range(first_epoch, config.epochs):
      batches = run.epoch_batches(epoch, step - epoch * spe)
      streamed = isinstance(batches, DevicePrefetch)
      epoch_start, window_start, window_step = time.time(), time.time(), step
      if streamed:
        meter.restart(batches)
      losses = []
      for i in range(step - epoch * spe, spe):
        searches = run.search_every and step % run.search_every == 0
        train_step = run.search_step if searches else run.train_step
        run.state, metrics = train_step(run.state, *next(batches))
        step += 1
        steps_done += 1
        last = i == spe - 1
        if step == first_step + 1:
          check_mask_counts(run.state)
        sums = {k: sums[k] + metrics[k] for k in sums}
        losses.append((step, metrics["loss"]))
        if step % log_every == 0 or last:
          _check_finite(losses)
          losses.clear()
          now = time.time()
          ips = (step - window_step) * config.batch_size / max(now - window_start, 1e-9)
          window_start, window_step = now, step
          progress_bar.update(step, float(metrics["loss"]), float(metrics["accuracy"]), ips)
          if streamed:
            window = meter.window(batches)
            logging.info("step %d: step %.0f images/s, input pipeline %.0f images/s, %.1f%% of "
                         "the time waiting for input", step, ips, window["input_images_per_s"],
                         100 * window["input_wait_fraction"])
        if last:
          break  # the epoch's checkpoint follows its record, so a resume never loses the record
        if every and step % every == 0:
          save()
        if stop_after_step is not None and step >= stop_after_step:
          return None
      train_time = epoch_before + time.time() - epoch_start
      record = {"epoch": epoch + 1, "step": step,
                "train_loss": float(sums["loss"]) / steps_done,
                "train_accuracy": float(sums["accuracy"]) / steps_done,
                "learning_rate": float(run.schedule(step - 1)),
                "epoch_time_s": train_time,
                "images_per_s": steps_done * config.batch_size / max(train_time, 1e-9)}
      if streamed:
        record["input_images_per_s"] = batches.images / max(batches.produce_s, 1e-9)
        record["input_wait_fraction"] = batches.wait_s / max(time.time() - epoch_start, 1e-9)
        batches.close()
      if (epoch + 1) % config.eval_every_epochs == 0 or epoch + 1 == config.epochs:
        record.update(run.evaluate())
      if masks:
        new_masks = ff_masks(run.state.params, run.sparse, run.state.nm_masks, config.method)
        flips = jax.device_get({p: jnp.sum(new_masks[p] != masks[p]) for p in masks})
        flips = {p: int(n) for p, n in flips.items()}
        record["mask_flips"] = flips
        record["mask_flip_fraction"] = sum(flips.values()) / sum(m.size for m in masks.values())
        logging.info("epoch %d FF mask flips since last epoch: %s", epoch + 1,
                     ", ".join(f"{p}={n}" for p, n in flips.items()))
        masks = new_masks
      record["wall_time_s"] = wall_before + time.time() - start
      logging.info("epoch %d: %s", epoch + 1, {k: v for k, v in record.items() if k != "mask_flips"})
      writer.write(record)
      history.append(record)
      sums = {k: jnp.zeros_like(v) for k, v in sums.items()}
      steps_done, epoch_before, epoch_start = 0, 0.0, time.time()
      if (every and step % every == 0) or epoch + 1 == config.epochs:
        save()
      if stop_after_step is not None and step >= stop_after_step:
        return None
  finally:
    if isinstance(batches, DevicePrefetch):
      batches.close()
    progress_bar.close()
    writer.close()
  return step, history, wall_before


DATA_STATE = "data_iterator"


def epoch_progress(loss_sum: Any, accuracy_sum: Any, steps: int, epoch_time_s: float,
                   wall_time_s: float, epoch_start_masks: dict[str, Any],
                   data_state: dict[str, int] | None = None) -> dict[str, Any]:
  """The progress pytree a checkpoint carries besides the train state (host arrays); a streamed
  run adds its input iterator's state (``StreamPipeline.state``) as ``data_iterator``."""
  extra = {} if data_state is None else {
      DATA_STATE: {k: np.asarray(v, np.int32) for k, v in data_state.items()}}
  return {**extra, "loss_sum": np.asarray(jax.device_get(loss_sum), np.float32),
          "accuracy_sum": np.asarray(jax.device_get(accuracy_sum), np.float32),
          "steps": np.asarray(steps, np.int32),
          "epoch_time_s": np.asarray(epoch_time_s, np.float32),
          "wall_time_s": np.asarray(wall_time_s, np.float32),
          "epoch_start_masks": jax.device_get(epoch_start_masks)}
