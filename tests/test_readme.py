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


def test_readme_and_runner_name_the_same_unpack_script():
  from nmsparse.data.sources import UNPACK_SCRIPT
  assert f"python {UNPACK_SCRIPT} --out ./data" in README.read_text()
  script = README.parent / UNPACK_SCRIPT
  if not (README.parent.parent / "shared").is_dir():
    import pytest
    pytest.skip(f"no shared/ folder next to this checkout ({README.parent.parent})")
  assert script.resolve().is_file(), script


def test_readme_test_command_runs_in_parallel():
  import tomllib
  assert "python -m pytest -q -n auto --dist loadgroup" in README.read_text()  # xdist_group marks
  ci = (README.parent / ".ci" / "run").read_text().splitlines()
  assert [line for line in ci if line.startswith("python -m pytest")] == [
      "python -m pytest -q -n auto --dist loadgroup"]  # CI runs the README's command
  extras = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"][
      "optional-dependencies"]
  assert "pytest-xdist" in extras["test"]
