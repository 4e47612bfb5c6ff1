# instabnn-hw: `make demo` runs the main job on the built-in default, `make test` the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.instabnn-setup
export BREVITAS_JIT := 0
export AMARANTH_USE_YOSYS := builtin

.PHONY: setup demo test test-slow test-long test-cocotb lint bench bench-hw bench-generate bench-sim \
	bench-accuracy bench-fpga bench-reference results clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $@

demo: setup
	$(PY) -m instabnn_hw.demo

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m "slow and not long"

# the longest simulations (hours on 2 cores): Icarus over the whole design suite, full-width ResNet-18
test-long: setup
	$(PY) -m pytest -q -m long

# the cocotb simulation suite alone (Verilator and Icarus, slow ones included)
test-cocotb: setup
	$(PY) -m pytest -q -m cocotb

lint: setup
	$(VENV)/bin/ruff check quant codegen hw sim instabnn_hw tests bench
	$(VENV)/bin/ruff format --check quant codegen hw sim instabnn_hw tests bench

bench: setup
	$(PY) bench/train_speed.py

bench-hw: setup
	$(PY) bench/hw_units.py

bench-generate: setup
	$(PY) bench/generate_speed.py

bench-sim: setup
	$(PY) bench/sim_rate.py

bench-accuracy: setup
	$(PY) bench/accuracy.py

bench-fpga: setup
	$(PY) bench/hardware.py

bench-reference: setup
	$(PY) bench/reference_speed.py

# every figure of the README's Results section, into bench/results/ (hours on 2 cores)
results: bench-accuracy bench-fpga bench-generate bench-sim bench-reference

clean:
	rm -rf build .pytest_cache
