"""An analytical model of SAT, the paper's FPGA training accelerator: cycles and DRAM bytes per
layer and training stage (FF, BP, WU, WUVE, SORE), compute- or memory-bound, WS or OS dataflow
per GEMM.

What is known of SAT (paper abstract and a summary of it): a 32x32 array of unified sparse PEs
(USPEs) that fold the dot product of an N:M group into N cycles (value-serial) and run dense work at
M cycles per group; weight-stationary (WS) or output-stationary (OS) dataflow per layer; a sparse
online reduction engine (SORE) that pre-generates the compressed N:M weights of both directions
after the update, so FF and BP load only compressed weights; a weight-update vector engine (WUVE);
FP32 updates. Everything else is a parameter of :class:`SATConfig`, marked "assumed".

Per GEMM stage and dataflow the time is ``max(cycles / clock, bytes / (bandwidth * efficiency))``
(compute and DRAM traffic overlap inside a layer, not across layers); the per-stage time of a step
is the sum over layers. Not modelled: non-GEMM work (BatchNorm, activations, softmax, pooling:
assumed fused into the GEMM output path), biases and norm parameters in the update, and the
activation-by-activation products of attention (they are not weight layers, so the FLOP walk has
none).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable

from nmsparse.sat.layers import LayerShape
from nmsparse.types import NMPattern

GEMM_STAGES = ("FF", "BP", "WU")
STAGES = GEMM_STAGES + ("WUVE", "SORE")
DATAFLOWS = ("ws", "os")


def _param(default, source: str):
  """A field whose default carries its source: "datasheet", "paper abstract" or "assumed"."""
  return dataclasses.field(default=default, metadata={"source": source})


@dataclasses.dataclass(frozen=True)
class SATConfig:
  """SAT hardware and mapping parameters; each default names its source (``parameter_sources``)."""

  rows: int = _param(32, "paper abstract: 32x32 USPE array")
  cols: int = _param(32, "paper abstract: 32x32 USPE array")
  clock_hz: float = _param(200e6, "assumed: a typical clock for a large VU9P design")
  group: int = _param(8, "assumed: reduction elements per USPE slot; every M must divide it")
  utilisation: float = _param(1.0, "assumed: achieved / ideal array cycles, every mode")
  sparse_utilisation: float = _param(1.0, "assumed: extra factor on value-serial sparse GEMMs")
  tile_overhead_cycles: int | None = _param(None, "assumed: fill + drain per tile, None = R + C")
  dram_bandwidth: float = _param(4 * 2400e6 * 8, "datasheet: 4 x DDR4-2400 x 64 bit = 76.8 GB/s")
  dram_efficiency: float = _param(0.8, "assumed: sustained / peak DRAM bandwidth")
  onchip_bytes: float = _param(345e6 / 8, "datasheet: VU9P BRAM + UltraRAM, about 345 Mb")
  buffer_fraction: float = _param(0.5, "assumed: share of on-chip RAM for the GEMM buffers")
  buffer_split: tuple[float, float, float] = _param((0.4, 0.3, 0.3),
                                                    "assumed: weight / input / output buffers")
  compute_bytes: int = _param(2, "assumed: 16-bit FF/BP/WU operands (paper: mixed precision)")
  master_bytes: int = _param(4, "paper abstract: FP32 updates (weights, gradients, states)")
  psum_bytes: int = _param(4, "assumed: FP32 accumulators")
  index_bits: int | None = _param(None, "assumed: None = ceil(log2 M) bits per kept value")
  wuve_elems_per_cycle: int = _param(32, "assumed: WUVE lanes")
  sore_elems_per_cycle: int = _param(64, "assumed: SORE lanes")
  sore_fused: bool = _param(True, "assumed: SORE taps WUVE's output (no extra DRAM read)")
  pregenerate: bool = _param(True, "paper abstract: SORE pre-generates FF/BP weights")
  dataflow: str = _param("best", "paper abstract: WS or OS per layer ('best': faster per GEMM)")

  def __post_init__(self):
    if self.dataflow not in DATAFLOWS + ("best",):
      raise ValueError(f"dataflow={self.dataflow!r}; use 'best', 'ws' or 'os'.")
    if abs(sum(self.buffer_split) - 1.0) > 1e-9:
      raise ValueError(f"buffer_split={self.buffer_split} must sum to 1.")

  @classmethod
  def parameter_sources(cls) -> dict[str, str]:
    """``{field: source of its default}``."""
    return {f.name: f.metadata["source"] for f in dataclasses.fields(cls)}

  @property
  def overhead(self) -> int:
    return self.rows + self.cols if self.tile_overhead_cycles is None else self.tile_overhead_cycles

  @property
  def sustained_bandwidth(self) -> float:
    return self.dram_bandwidth * self.dram_efficiency

  def buffer(self, which: str) -> float:
    """Bytes of the ``"weight"``, ``"input"`` or ``"output"`` buffer."""
    share = self.buffer_split[("weight", "input", "output").index(which)]
    return self.onchip_bytes * self.buffer_fraction * share

  def index_bits_for(self, pattern: NMPattern) -> int:
    return math.ceil(math.log2(pattern.m)) if self.index_bits is None else self.index_bits

  def cycles_per_slot(self, pattern: NMPattern | None) -> int:
    """Value-serial cycles for one USPE slot of ``group`` elements: N per N:M group, M dense.

    Raises:
      ValueError: if the pattern's M does not divide ``group``.
    """
    if pattern is None:
      return self.group
    if self.group % pattern.m:
      raise ValueError(f"Pattern {pattern}: M={pattern.m} does not divide the USPE group of "
                       f"{self.group} elements; use SATConfig(group=k*{pattern.m}).")
    return self.group // pattern.m * pattern.n


@dataclasses.dataclass(frozen=True)
class Gemm:
  """``out[rows, cols] = a[rows, reduction] @ b[reduction, cols]`` with its DRAM operand sizes.

  ``a_bytes`` / ``b_bytes`` are what reading each operand once moves (``b`` is the operand that WS
  holds stationary); ``out_bytes`` is the final write; the OS output buffer holds ``rows * cols``
  partial sums. ``pattern`` (``None``: dense) sets the value-serial cycles per slot.
  """

  rows: int
  reduction: int
  cols: int
  pattern: NMPattern | None
  a_bytes: float
  b_bytes: float
  out_bytes: float

  @property
  def macs(self) -> float:
    return float(self.rows) * self.reduction * self.cols


@dataclasses.dataclass(frozen=True)
class StageCost:
  """One stage of one layer: cycles, DRAM bytes, time and what bounds it."""

  stage: str
  layer: str
  dataflow: str
  cycles: float
  bytes: float
  compute_s: float
  memory_s: float

  @property
  def time_s(self) -> float:
    return max(self.compute_s, self.memory_s)

  @property
  def bound(self) -> str:
    return "memory" if self.memory_s > self.compute_s else "compute"


def gemm_cycles(g: Gemm, hw: SATConfig, dataflow: str) -> float:
  """Array cycles of a GEMM: USPE slots of ``hw.group`` reduction elements, N cycles per N:M group.

  WS holds a ``rows x cols`` block of ``b`` slots in the array and streams every row of ``a``; OS
  holds a ``rows x cols`` block of outputs and streams the reduction. Every tile pays
  ``hw.overhead`` fill/drain cycles.
  """
  slots = math.ceil(g.reduction / hw.group)
  c = hw.cycles_per_slot(g.pattern)
  if dataflow == "ws":
    tiles = math.ceil(slots / hw.rows) * math.ceil(g.cols / hw.cols)
    cycles = tiles * (g.rows * c + hw.overhead)
  elif dataflow == "os":
    tiles = math.ceil(g.rows / hw.rows) * math.ceil(g.cols / hw.cols)
    cycles = tiles * (slots * c + hw.overhead)
  else:
    raise ValueError(f"dataflow={dataflow!r}; use 'ws' or 'os'.")
  util = hw.utilisation * (hw.sparse_utilisation if g.pattern is not None else 1.0)
  return cycles / util


def gemm_bytes(g: Gemm, hw: SATConfig, dataflow: str) -> float:
  """DRAM bytes of a GEMM under a dataflow, with re-reads where the stationary operand does not fit.

  WS: ``b`` is cut into blocks that fit the weight buffer; ``a`` is re-read once per block unless it
  fits the input buffer; if a single column of ``b`` does not fit, partial sums spill (read + write
  per extra reduction block). OS: the outputs are cut into row blocks that fit the output buffer
  (FP32 partial sums); ``b`` is re-read per block unless it fits the weight buffer.
  """
  if dataflow == "ws":
    blocks = max(1, math.ceil(g.b_bytes / hw.buffer("weight")))
    a_reads = 1 if g.a_bytes <= hw.buffer("input") else min(blocks, g.cols)
    column = g.b_bytes / g.cols
    spill = 0.0
    if column > hw.buffer("weight"):
      extra = math.ceil(column / hw.buffer("weight")) - 1
      spill = 2.0 * extra * g.rows * g.cols * hw.psum_bytes
    return g.a_bytes * a_reads + g.b_bytes + g.out_bytes + spill
  if dataflow == "os":
    blocks = max(1, math.ceil(g.rows * g.cols * hw.psum_bytes / hw.buffer("output")))
    b_reads = 1 if g.b_bytes <= hw.buffer("weight") else min(blocks, g.rows)
    return g.a_bytes + g.b_bytes * b_reads + g.out_bytes
  raise ValueError(f"dataflow={dataflow!r}; use 'ws' or 'os'.")


def weight_bytes(k: int, o: int, pattern: NMPattern | None, hw: SATConfig) -> float:
  """DRAM bytes of one FF or BP weight operand: compressed N:M values + indices when the layer is
  sparse and SORE pre-generates it, else the dense compute-precision copy."""
  if pattern is None or not hw.pregenerate:
    return float(k) * o * hw.compute_bytes
  return float(k) * o * pattern.density * (hw.compute_bytes + hw.index_bits_for(pattern) / 8.0)


def compression_ratio(pattern: NMPattern, hw: SATConfig) -> float:
  """Dense compute-precision weight bytes / pre-generated compressed bytes."""
  per_kept = hw.compute_bytes + hw.index_bits_for(pattern) / 8.0
  return hw.compute_bytes / (pattern.density * per_kept)


def layer_gemms(layer: LayerShape, batch: int, hw: SATConfig) -> dict[str, Gemm]:
  """FF, BP (when the layer has one) and WU of a layer as GEMMs at ``batch``.

  FF: ``[B*pos, K] @ [K, O]``; BP: ``[B*pos, taps*O] @ [taps*O, C]`` (the same MACs as FF, the
  runner's convention); WU: ``[K, B*pos] @ [B*pos, O]``, dense, written as an FP32 gradient.
  """
  b = hw.compute_bytes
  rows = batch * layer.positions
  k, o, c, taps = layer.k, layer.out_channels, layer.in_channels, layer.taps
  x_bytes = float(batch) * layer.in_elems * b
  y_bytes = float(rows) * o * b
  w = weight_bytes(k, o, layer.pattern, hw)
  gemms = {"FF": Gemm(rows, k, o, layer.pattern, x_bytes, w, y_bytes)}
  if layer.needs_bp:
    gemms["BP"] = Gemm(rows, taps * o, c, layer.pattern, y_bytes, w, x_bytes)
  gemms["WU"] = Gemm(k, rows, o, None, x_bytes, y_bytes, float(k) * o * hw.master_bytes)
  return gemms


def _time(hw: SATConfig, stage: str, layer: str, dataflow: str, cycles: float,
          nbytes: float) -> StageCost:
  return StageCost(stage, layer, dataflow, cycles, nbytes, cycles / hw.clock_hz,
                   nbytes / hw.sustained_bandwidth)


def gemm_cost(g: Gemm, hw: SATConfig, stage: str = "", layer: str = "") -> StageCost:
  """The GEMM's cost under ``hw.dataflow``, or the faster of WS and OS for ``"best"``."""
  flows = DATAFLOWS if hw.dataflow == "best" else (hw.dataflow,)
  costs = [_time(hw, stage, layer, f, gemm_cycles(g, hw, f), gemm_bytes(g, hw, f)) for f in flows]
  return min(costs, key=lambda s: (s.time_s, s.bytes))


def layer_costs(layer: LayerShape, batch: int, optimizer_states: int,
                hw: SATConfig) -> list[StageCost]:
  """Every stage of one layer for one training step at ``batch``.

  WUVE reads the FP32 master weight, gradient and ``optimizer_states`` state words and writes the
  weight and states back; without pre-generation (or for a dense layer) it also writes the dense
  compute-precision copy that FF and BP read. SORE (sparse layers with ``pregenerate``) writes the
  compressed FF and BP copies (and re-reads the master weight unless ``sore_fused``).
  """
  gemms = layer_gemms(layer, batch, hw)
  costs = [gemm_cost(g, hw, stage, layer.path) for stage, g in gemms.items()]
  elems = float(layer.k) * layer.out_channels
  pregen = layer.pattern is not None and hw.pregenerate
  wuve_bytes = elems * hw.master_bytes * (3 + 2 * optimizer_states)
  if not pregen:
    wuve_bytes += elems * hw.compute_bytes
  costs.append(_time(hw, "WUVE", layer.path, "-", elems / hw.wuve_elems_per_cycle, wuve_bytes))
  if pregen:
    sore_bytes = 2.0 * weight_bytes(layer.k, layer.out_channels, layer.pattern, hw)
    if not hw.sore_fused:
      sore_bytes += elems * hw.master_bytes
    costs.append(_time(hw, "SORE", layer.path, "-", elems / hw.sore_elems_per_cycle, sore_bytes))
  return costs


@dataclasses.dataclass(frozen=True)
class StepCost:
  """A training step: per-stage seconds, bytes and memory-bound share, and every layer's costs."""

  stages: dict[str, float]
  bytes: dict[str, float]
  memory_bound_s: dict[str, float]
  layers: tuple[StageCost, ...]

  @property
  def total_s(self) -> float:
    return sum(self.stages.values())


def step_cost(layers: Iterable[LayerShape], batch: int, optimizer_states: int,
              hw: SATConfig) -> StepCost:
  """Sums :func:`layer_costs` over the layers, stage by stage."""
  stages = {s: 0.0 for s in STAGES}
  nbytes = {s: 0.0 for s in STAGES}
  mem = {s: 0.0 for s in STAGES}
  all_costs = []
  for layer in layers:
    for cost in layer_costs(layer, batch, optimizer_states, hw):
      stages[cost.stage] += cost.time_s
      nbytes[cost.stage] += cost.bytes
      if cost.bound == "memory":
        mem[cost.stage] += cost.time_s
      all_costs.append(cost)
  return StepCost(stages, nbytes, mem, tuple(all_costs))


def speedup(dense: StepCost, sparse: StepCost) -> float:
  """Dense step time / sparse step time on the same array."""
  return dense.total_s / sparse.total_s

