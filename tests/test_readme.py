"""The README's "use it in your own model" example runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _example(tag: str) -> str:
  text = README.read_text()
  match = re.search(rf"<!-- example: {tag} -->\s*```python\n(.*?)```", text, re.S)
  assert match, f"README has no example tagged {tag!r}"
  return match.group(1)


def test_own_model_example_runs(capsys):
  namespace = {}
  exec(compile(_example("own-model"), "README.md", "exec"), namespace)
  loss = float(namespace["loss"])
  assert loss == loss and loss > 0  # finite, positive cross-entropy
  assert "loss after one step" in capsys.readouterr().out
  # The stem and head stayed dense, the other layers went through the sparse primitives.
  import jax
  jaxpr = str(jax.make_jaxpr(lambda p, x: namespace["model"].apply({"params": p}, x))(
      namespace["params"], namespace["x"]))
  assert len(re.findall(r"\bnm_conv_fwd\[", jaxpr)) == 1
  assert len(re.findall(r"\bnm_dense_fwd\[", jaxpr)) == 1
