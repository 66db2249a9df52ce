"""An analytical model of the paper's SAT FPGA accelerator: predicted training-stage times and
speedups of N:M sparse training from the zoo models' own layers."""

from nmsparse.sat.layers import LayerShape, ModelLayers, model_layers, walk
from nmsparse.sat.model import (DATAFLOWS, STAGES, Gemm, SATConfig, StageCost, StepCost,
                                compression_ratio, gemm_bytes, gemm_cost, gemm_cycles,
                                layer_costs, layer_gemms, speedup, step_cost, weight_bytes)

__all__ = [
    "DATAFLOWS", "STAGES", "Gemm", "LayerShape", "ModelLayers", "SATConfig", "StageCost",
    "StepCost", "compression_ratio", "gemm_bytes", "gemm_cost", "gemm_cycles", "layer_costs",
    "layer_gemms", "model_layers", "speedup", "step_cost", "walk", "weight_bytes",
]
