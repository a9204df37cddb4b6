# Two commands do all set-up on a fresh machine (see README.md):
#   make demo   grade the bundled demo submissions into reports/
#   make test   run the whole test suite
PYTHON ?= python3
DATA_DIR ?= $(abspath ../shared/data)
PRACTICALS := linear_softmax mlp cnn ocean_proximity custom_train_step
STAMP := .venv-installed

.PHONY: demo test install system-deps clean

system-deps:
	@missing=""; command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "WARNING: missing$$missing: run 'sudo apt-get install$$missing' (sandbox and browser tests skip without them)"; fi; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m pip install -q -e ".[tensorflow,test]"
	@touch $(STAMP)

install: system-deps $(STAMP)

# Every practical is graded even if one cannot be (e.g. no housing.csv): its rows say why.
demo: install
	@failed=""; for name in $(PRACTICALS); do \
	  echo "== $$name"; \
	  grader run examples/submissions/$$name --assignment $$name --out reports/$$name \
	    --data-dir "$(DATA_DIR)" || failed="$$failed $$name"; \
	done; \
	echo "Open reports/<practical>/index.html for each class dashboard."; \
	if [ -n "$$failed" ]; then echo "Not fully graded:$$failed (see their grades.csv)"; exit 1; fi

# pytest exits 5 when it collected no tests: a broken suite, never a pass.
test: install
	@$(PYTHON) -m pytest -n 2; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no tests: the suite is broken" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf reports/*/ $(STAMP) .pytest_cache
