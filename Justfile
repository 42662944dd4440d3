# tradestream tasks. Recipes call the project's virtualenv explicitly, never the system Python.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv"
export PATH := venv / "bin" + ":" + env_var("PATH")

# list the recipes
default:
    @just --list

# create .venv (if missing) and install tradestream with its dev tools
setup:
    test -x "{{venv}}/bin/python" || python3 -m venv "{{venv}}"
    "{{venv}}/bin/pip" install -q -e '.[dev]'

# run the service, migrating the database first (built-in simulator unless KIS URLs are set)
[continue]
run:
    TRADESTREAM_DB_AUTO_UPGRADE="${TRADESTREAM_DB_AUTO_UPGRADE:-1}" tradestream run

# one ingest and two gateways over Redis (the Procfile; needs TRADESTREAM_JWT_SECRET)
[continue]
cluster:
    TRADESTREAM_REDIS_URL="${TRADESTREAM_REDIS_URL:-redis://127.0.0.1:6379/0}" honcho start

# run the broker simulator alone
[continue]
sim:
    tradestream sim

# run the whole test suite (extra arguments go to pytest)
test *ARGS:
    pytest {{ARGS}}

# lint and format check, types (strict on the pure core) and the one-way layers (CI runs it)
lint:
    ruff check tradestream tests migrations
    ruff format --check tradestream tests migrations
    mypy
    lint-imports

# run the benchmarks (or some: just bench reconnect)
bench *SCENARIOS:
    python -m tradestream.bench {{SCENARIOS}}
