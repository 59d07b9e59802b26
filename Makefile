# Two commands set everything up on a fresh machine: `make derive` and `make test`.
# Both create (or reuse) the virtual environment .venv with this project installed in editable mode.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= test
STAMP := $(VENV)/.installed-$(EXTRAS)
# the cells' benchmark pins NumPy's BLAS, PyTorch and XLA to one thread each: on a shared machine that is the
# comparison a busy neighbour disturbs least
CELL_BENCH_ARGS ?= --threads 1

.PHONY: derive test explore help check docs bench demo analysis clean

$(STAMP): setup.cfg setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

## derive: regenerate generated/ (kernels and LaTeX) from the catalogue and derive/user_activations.json;
##   each derivation stops after RNN_BPTT_DERIVE_TIMEOUT seconds (default 60; 0: no limit)
derive: $(STAMP)
	$(PY) -m codegen

## check: fail with a diff when generated/ is not what `make derive` would write
check: $(STAMP)
	$(PY) -m codegen --check

## test: the whole test suite; property tests replay fixed examples, the same on every clone and run
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## explore: the property and fuzz tests drawing new examples each run (failures kept in .hypothesis/)
explore: $(STAMP)
	HYPOTHESIS_PROFILE=explore $(PY) -m pytest tests/test_properties.py tests/test_fuzz_parse.py $(PYTEST_ARGS)

## help: these targets
help:
	@grep -h '^## ' $(MAKEFILE_LIST) | sed 's/^## //'

## docs: the LaTeX derivations in generated/latex/ compiled to PDF under build/docs/ (needs pdflatex)
docs: derive
	@command -v pdflatex >/dev/null || { echo "pdflatex not found: apt-get install texlive-latex-base"; exit 1; }
	mkdir -p build/docs
	for f in generated/latex/*.tex; do \
	  pdflatex -interaction=nonstopmode -halt-on-error -output-directory build/docs $$f >/dev/null && \
	  pdflatex -interaction=nonstopmode -halt-on-error -output-directory build/docs $$f >/dev/null || \
	  { echo "pdflatex failed on $$f: see build/docs/$$(basename $$f .tex).log"; exit 1; }; \
	done
	@echo "PDFs in build/docs/"

## bench: ours against PyTorch, JAX and the GEMM floor (installs the bench extra), the vanilla RNN with every catalogue
## activation and then the LSTM and GRU cells against torch.nn.LSTM/GRU; BENCH_ARGS and CELL_BENCH_ARGS for options
## (BENCH_ARGS="--busy" and CELL_BENCH_ARGS="--threads 1 --busy": beside a process that keeps one core busy)
bench:
	$(MAKE) EXTRAS=bench $(VENV)/.installed-bench
	$(VENV)/bin/python -m bench --activations all --markdown build/bench.md $(BENCH_ARGS)
	$(VENV)/bin/python -m bench.memory
	$(VENV)/bin/python -m bench.cells $(CELL_BENCH_ARGS)
	$(VENV)/bin/python -m bench.memory --cell lstm
	$(VENV)/bin/python -m bench.memory --cell gru

## demo: train a character-level language model with three activations, the LSTM and the GRU, same settings;
## loss curves to docs/demo_loss.png
## demo DDP=2: the same model in PyTorch (interop.torch_rnn.RNN), data-parallel in 2 processes under torchrun
demo:
ifdef DDP
	$(MAKE) EXTRAS=bench $(VENV)/.installed-bench
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/torchrun --standalone --nproc_per_node $(DDP) -m demo.ddp $(DEMO_ARGS)
else
	$(MAKE) EXTRAS=plot $(VENV)/.installed-plot
	$(VENV)/bin/python -m demo --activations tanh,relu,gelu --cells lstm,gru --plot docs/demo_loss.png $(DEMO_ARGS)
endif

## analysis: gradient flow through time for four activations at one W, then the vanilla RNN against the LSTM and
## GRU (with and without an open forget/update gate); plots to docs/gradient_flow.png and docs/gradient_flow_cells.png
analysis:
	$(MAKE) EXTRAS=plot $(VENV)/.installed-plot
	$(VENV)/bin/python -m analysis --activations tanh,relu,sigmoid,silu --T 60 --H 64 --scale 1.5 \
	  --plot docs/gradient_flow.png
	$(VENV)/bin/python -m analysis --activations tanh --cells lstm,lstm:b_if=1:b_hf=1,gru,gru:b_iz=1:b_hz=1 --T 60 --H 64 \
	  --N 8 --scale 1.0 --plot docs/gradient_flow_cells.png

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
