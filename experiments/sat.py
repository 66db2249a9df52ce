"""Predicted SAT (the paper's FPGA accelerator) speedups for the zoo's CIFAR-10 configs:
``python -m experiments.sat --out results`` writes sat.md, sat.json, sat_speedup.png and
sat_sensitivity.png there (about 20 s on a CPU)."""

import dataclasses
import json
import os

from absl import app, flags, logging

from experiments.config_io import load_config
from nmsparse.sat import SATConfig, model_layers
from nmsparse.sat import report

FIVE = ("resnet9", "vgg19", "resnet18", "resnet50", "vit")
FLAGS = flags.FLAGS
flags.DEFINE_string("out", "results", "Directory for sat.md, sat.json and the plots.")
flags.DEFINE_list("configs", [f"configs/{m}_cifar10.py" for m in FIVE],
                  "Run configs (path[:arg]) whose models, rules and batch are predicted.")
flags.DEFINE_list("patterns", list(report.PATTERNS), "N:M patterns (dense is always the baseline).")
flags.DEFINE_string("sweep_config", "configs/resnet18_cifar10.py",
                    "Config of the sensitivity sweep (at 2:8); empty: no sweep.")
flags.DEFINE_string("speed_json", "", "Measured GPU speed table; empty: <out>/speed.json.")
flags.DEFINE_bool("calibrate", True, "Solve for the parameter values that give the paper's 1.75x.")


def main(argv):
  del argv
  hw = SATConfig()
  patterns = report.pattern_list(FLAGS.patterns)
  models = [model_layers(load_config(c)) for c in FLAGS.configs]
  rows = [r for ml in models for r in report.predict(ml, hw, patterns)]
  no_pregen = []
  if "2:8" in patterns:
    no_pregen = [report.predict(ml, dataclasses.replace(hw, pregenerate=False), ["2:8"])[1]
                 for ml in models]
  sweep_rows = []
  if FLAGS.sweep_config:
    sweep_rows = report.sweep(model_layers(load_config(FLAGS.sweep_config)), "2:8")
  calibration = {}
  if FLAGS.calibrate and "2:8" in patterns:
    target = report.PAPER_SPEEDUP_2_8
    calibration = {
        "sparse utilisation (value-serial mode vs dense)": report.solve_for_average(
            models, target, lambda x: SATConfig(sparse_utilisation=x), 0.2, 1.0, steps=25),
        "DRAM bandwidth (GB/s)": report.solve_for_average(
            models, target, lambda x: SATConfig(dram_bandwidth=x * 1e9), 0.01, 76.8, steps=25),
    }
  gpu = report.gpu_ratios(FLAGS.speed_json or os.path.join(FLAGS.out, "speed.json"))
  os.makedirs(FLAGS.out, exist_ok=True)
  command = "python -m experiments.sat --out " + FLAGS.out
  report.write_markdown(os.path.join(FLAGS.out, "sat.md"), hw, rows, sweep_rows, gpu, no_pregen,
                        calibration, command)
  report.plot(os.path.join(FLAGS.out, "sat_speedup.png"),
              os.path.join(FLAGS.out, "sat_sensitivity.png"), rows, sweep_rows, gpu)
  summary = dict(
      hardware=dataclasses.asdict(hw), sources=SATConfig.parameter_sources(), rows=rows,
      no_pregenerate=no_pregen, sweep=sweep_rows, calibration=calibration,
      paper_speedup_2_8=report.PAPER_SPEEDUP_2_8,
      average_speedup={p: report.average_speedup(rows, p) for p in patterns},
      configs=list(FLAGS.configs), command=command)
  with open(os.path.join(FLAGS.out, "sat.json"), "w") as f:
    json.dump(summary, f, indent=1)
  logging.info("2:8 average over %d models: %.2fx (paper %.2fx); wrote %s/sat.md", len(models),
               summary["average_speedup"].get("2:8", float("nan")), report.PAPER_SPEEDUP_2_8,
               FLAGS.out)


def run() -> None:
  """Console-script entry point (``nms-sat``): parses flags from ``sys.argv`` and runs ``main``."""
  app.run(main)


if __name__ == "__main__":
  run()
