"""How many operations the runner's compiled train step holds in its entry computation (fusions,
convolutions, custom calls, the rest): a proxy for the kernels the host launches per step.

  python scripts/count_fusions.py --config configs/resnet18_cifar10.py:full --methods dense,bdwp \
      --out results/step_fusions_cpu.json

On a CPU the count differs from the GPU's (other fusion passes; convolutions are library calls
there), so read it as an order of magnitude, not the GPU's kernel count.
"""

from __future__ import annotations

import collections
import re
import tempfile

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments.config_io import apply_overrides, load_config
from nmsparse.train.loop import Run, epoch_order
from nmsparse.train.metrics import device_name, git_sha, write_json
from nmsparse.train.parallel import put_batch_sharded

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Config file[:arg].")
flags.DEFINE_string("methods", "dense,bdwp", "Comma-separated methods to compile.")
flags.DEFINE_string("out", "", "Write the counts as JSON here.")
flags.mark_flag_as_required("config")


def entry_ops(config) -> dict[str, int]:
  """Op counts of the compiled train step's ENTRY computation, and its state's leaf count."""
  run = Run(config, tempfile.mkdtemp(prefix="count_fusions_"))
  n = len(run.data.train_labels)
  order = put_batch_sharded(epoch_order(run.data_key, 0, n, config.batch_size), run.mesh, axis=1)
  compiled = run.train_step.lower(run.state, *run.train_arrays, order, jnp.int32(0),
                                  run.step_key).compile().as_text()
  entry = compiled[compiled.index("\nENTRY"):]
  ops = collections.Counter(re.findall(r"= \S+ ([a-z][\w-]*)\(", entry))
  return {"entry_instructions": sum(ops.values()), "fusions": ops["fusion"],
          "convolutions": ops["convolution"], "custom_calls": ops["custom-call"],
          "state_leaves": len(jax.tree.leaves(run.state))}


def main(argv):
  del argv
  rows = []
  for method in FLAGS.methods.split(","):
    config = apply_overrides(load_config(FLAGS.config), {
        "method": method, "data.source": "synthetic", "data.data_dir": "",
        "data.synthetic_train": 512, "progress_bar": False})
    rows.append({"config": config.name, "method": method, **entry_ops(config)})
    print(rows[-1])
  out = {"device": device_name(), "jax_version": jax.__version__, "git_sha": git_sha(),
         "rows": rows}
  if FLAGS.out:
    write_json(FLAGS.out, out)


if __name__ == "__main__":
  app.run(main)
