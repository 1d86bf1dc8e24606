# deidflow — the two commands of the quick start are `make run` and `make test`.
PY     ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
POLICY ?= configs/release.yaml

.PHONY: install run test pg server bench samples clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e ".[test,dask]"
	touch $(STAMP)

install: $(STAMP)

## run: venv + install, load the sample consents, run a full release on data_samples/; the
## policy requires the privacy officer's approval, so the demo makes an officer key (in
## production it never lives on the flow machine), stages the release and approves it
OFFICER_KEY ?= .deidflow/officer/approver.key
TRUST       ?= .deidflow/trust.yaml
run: install
	$(BIN)/deidflow consent import data_samples/consents.csv --policy $(POLICY)
	@test -f .deidflow/keys/signing.key || $(BIN)/deidflow keys init
	@$(BIN)/deidflow keys trust .deidflow/keys/signing.pub --owner "Demo data engineering" --role executor --trust $(TRUST)
	@test -f $(OFFICER_KEY) || $(BIN)/deidflow keys init --role approver --owner "Demo privacy officer" --key $(OFFICER_KEY)
	@$(BIN)/deidflow keys trust $(basename $(OFFICER_KEY)).pub --owner "Demo privacy officer" --role approver --trust $(TRUST)
	$(BIN)/deidflow release $(POLICY)
	$(BIN)/deidflow approve --policy $(POLICY) --key $(OFFICER_KEY) --trust $(TRUST) --yes --comment "make run demo"

## test: the whole suite (PostgreSQL tests need DEIDFLOW_TEST_PG_URL: `eval "$$(make -s pg)"`)
test: install
	@$(BIN)/python -m pytest -q; s=$$?; \
	  if [ $$s -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing" >&2; exit 1; fi; \
	  exit $$s

## pg: start a throwaway local PostgreSQL and print the export line for the tests
pg:
	@bash .ci/postgres.sh

## server: a local Prefect server for schedules (deidflow serve needs it)
server: install
	PREFECT_HOME=$(CURDIR)/.deidflow/prefect-server PREFECT_SERVER_ANALYTICS_ENABLED=false \
	  $(BIN)/prefect server start --host 127.0.0.1 --port 4200

## bench: every benchmark in benchmarks/, printing their tables
bench: install
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

## samples: regenerate the committed sample extract
samples: install
	$(BIN)/deidflow samples --patients 2000 --out data_samples

clean:
	rm -rf releases .deidflow .pytest_cache .hypothesis
