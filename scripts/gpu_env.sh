# Source at the start of a device command: installs the carried wheels (.whl/, e.g. ml_collections,
# which the GPU image lacks) into /tmp/site and puts the repo and them on PYTHONPATH.
#   source scripts/gpu_env.sh && python -m experiments.main --config ... --workdir ...
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || return 1
fi
export PYTHONPATH=.:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
