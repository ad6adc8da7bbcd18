# The two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
SV     := $(VENV)/bin/satvault
STAMP  := $(VENV)/.installed

.PHONY: run test install lint bench clean browser manifest pg-tools catalogs

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The dashboard's front-end files from npm (package.json / package-lock.json): htmx, served
# by satvault itself, and axe-core for the browser tests' accessibility scan. Without npm the
# pages still work (htmx only enhances them) and the accessibility scan says it is missing.
NODE_STAMP := node_modules/.installed
$(NODE_STAMP): package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund --loglevel=error \
		&& touch $(NODE_STAMP); else echo "note: npm is missing; the dashboard runs without htmx"; fi

install: $(STAMP) $(NODE_STAMP)

run: $(STAMP) $(NODE_STAMP)
	$(SV) init --if-needed --format text
	$(SV) serve

# Debian's chromium for the checkout page's browser test (Playwright drives it; it never
# downloads a browser of its own). Installed when missing and possible (root + apt), after
# saying so; `make test BROWSER_INSTALL=no` never installs anything.
BROWSER_PACKAGES := chromium fonts-noto-cjk fonts-thai-tlwg
BROWSER_INSTALL  ?= yes
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$(BROWSER_INSTALL)" = yes ] \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& echo "make: chromium is missing; installing Debian's $(BROWSER_PACKAGES) with" \
		        "apt-get for the checkout page's browser test (BROWSER_INSTALL=no to skip)" \
		&& (apt-get install -y -qq $(BROWSER_PACKAGES) >/dev/null 2>&1 \
		|| (apt-get update -qq >/dev/null && apt-get install -y -qq $(BROWSER_PACKAGES) \
		>/dev/null)) && echo "make: chromium installed"; } \
		|| echo "note: chromium is not installed; the browser test will be skipped"

# The example plug-in (tests/plugins/example) the plug-in tests load through entry points:
# installed for the suite only, never by `make run`.
PLUGIN_STAMP := $(VENV)/.plugin-example
$(PLUGIN_STAMP): $(STAMP) $(wildcard tests/plugins/example/*.toml tests/plugins/example/*/*.py)
	$(PIP) install -q --no-deps ./tests/plugins/example
	touch $(PLUGIN_STAMP)


# PostgreSQL's client tools (pg_dump, pg_restore, psql) for `satvault backup` / `satvault restore`
# and their tests. Installed from Debian when missing and possible (root + apt), after saying
# so; `make test PG_TOOLS_INSTALL=no` never installs anything. Their major version must be at
# least the server's: `satvault backup` checks and says so.
PG_TOOLS_INSTALL ?= yes
pg-tools:
	@command -v pg_dump >/dev/null 2>&1 && command -v pg_restore >/dev/null 2>&1 \
		&& command -v psql >/dev/null 2>&1 \
		|| { [ "$(PG_TOOLS_INSTALL)" = yes ] \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& echo "make: pg_dump/pg_restore are missing; installing Debian's postgresql-client" \
		        "with apt-get for satvault backup and restore (PG_TOOLS_INSTALL=no to skip)" \
		&& (apt-get install -y -qq postgresql-client >/dev/null 2>&1 \
		|| (apt-get update -qq >/dev/null && apt-get install -y -qq postgresql-client \
		>/dev/null)) && echo "make: postgresql-client installed"; } \
		|| echo "note: pg_dump is not installed; the PostgreSQL backup tests will fail"

# The suite runs on TEST_WORKERS pytest-xdist workers (a test file stays on one worker; each
# worker has its own PostgreSQL database, <name>_gw0, …, dropped when it ends); 0 runs it in
# this process alone.
TEST_WORKERS ?= 2
test: $(STAMP) $(NODE_STAMP) $(PLUGIN_STAMP) browser pg-tools
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The pages' message catalogs (checkout page, dashboard, admin console): one template from the
# code and templates of both, merged into every language's .po (then translate what is new;
# tests/checkout/test_catalogs.py fails while anything is missing).
catalogs: $(STAMP)
	cd src/satvault && ../../$(VENV)/bin/pybabel extract -F checkout/babel.cfg --no-location \
		--omit-header -w 100 -o checkout/locale/messages.pot checkout web/pages
	$(VENV)/bin/pybabel update -w 100 --ignore-obsolete -i src/satvault/checkout/locale/messages.pot \
		-d src/satvault/checkout/locale

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The signed manifest of the installed package's files, for `satvault doctor`'s code check
# (docs/operations.md). MANIFEST_KEY: the Ed25519 key from `satvault doctor keygen`.
manifest: $(STAMP)
	@test -n "$(MANIFEST_KEY)" || { echo "make manifest MANIFEST_KEY=/path/to/key"; exit 2; }
	$(SV) doctor manifest --key $(MANIFEST_KEY)

bench: $(STAMP)
	$(PY) benchmarks/ledger.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache   # never var/: it holds the ledger
