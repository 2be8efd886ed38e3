"""Shared fixtures: tiny GPT-NeoX models built once per test session, offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may reach a model hub: fail fast instead of retrying DNS for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MECHURI_TEST", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Polyglot-shaped model, fitted on a few food answers so its output is readable."""
    from model.demo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", train_steps=60, seed=0)


@pytest.fixture(scope="session")
def polyglot_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Polyglot-faithful flavour: no pad token (pad falls back to EOS), extra special tokens, and embedding rows
    past the tokenizer, as in the real KoAlpaca-Polyglot-5.8B."""
    from model.demo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("polyglot") / "model", train_steps=60, seed=0, flavour="polyglot")


@pytest.fixture(scope="session", params=["tiny", "polyglot"])
def any_model_dir(request: pytest.FixtureRequest) -> Path:
    """Each of the two tiny flavours in turn: tests of the real model path run on both."""
    return request.getfixturevalue("tiny_model_dir" if request.param == "tiny" else "polyglot_model_dir")


@pytest.fixture(scope="session")
def any_adapter_dir(any_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random LoRA adapter for whichever flavour `any_model_dir` is."""
    from model.demo.tiny import make_tiny_adapter

    return make_tiny_adapter(any_model_dir, tmp_path_factory.mktemp("any-adapters") / "spicy", seed=1)


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.demo.tiny import make_tiny_adapter

    return make_tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "spicy", seed=1)


@pytest.fixture(scope="session")
def tiny_adapter2_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.demo.tiny import make_tiny_adapter

    return make_tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapters2") / "mild", seed=2)


@pytest.fixture(scope="session")
def polyglot_adapters(polyglot_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two rank-4 LoRAs on all four target modules of the Polyglot-faithful tiny model (QKV included: llama.cpp's
    conversion reorders its lora_B)."""
    from model.demo.tiny import make_tiny_adapter

    targets = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
    root = tmp_path_factory.mktemp("polyglot-adapters")
    return (make_tiny_adapter(polyglot_model_dir, root / "spicy", seed=1, target_modules=targets),
            make_tiny_adapter(polyglot_model_dir, root / "mild", seed=2, target_modules=targets))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models are all overhead: two OpenMP threads on two shared cores run them many times slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- databases: SQLite always; PostgreSQL when a server can be started (CI makes sure it can) ------------------------

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL server for the session (tests/pg_server.py). Skips with the reason when none can be
    started, unless MECHURI_REQUIRE_POSTGRES=1 (set by .ci/run), where that is a failure."""
    from pg_server import REQUIRE_ENV, PostgresUnavailable, start_server

    try:
        server = start_server()
    except PostgresUnavailable as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"PostgreSQL is required here ({REQUIRE_ENV}=1) but unavailable: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture
def postgres_db(postgres_server, tmp_path: Path):
    """A PostgreSQL database of its own for one test, at the newest schema."""
    from databases import PostgresDatabase
    from pg_server import TEMPLATE

    db = PostgresDatabase(postgres_server, postgres_server.create_database(template=TEMPLATE))
    yield db
    db.close()
    postgres_server.drop_database(db.name)


@pytest.fixture(params=BACKENDS)
def database(request, tmp_path: Path):
    """The same test on a SQLite file and on PostgreSQL, each migrated to the newest schema."""
    if request.param == "postgresql":
        yield request.getfixturevalue("postgres_db")
        return
    from databases import SqliteDatabase

    yield SqliteDatabase.fresh(tmp_path)


# --- the web page: the quick demo model, and the system's headless chromium ---------------------------------------

BROWSER_ENV = "MECHURI_REQUIRE_BROWSER"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="session")
def quick_demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model's code path on QUICK_RECIPE (a fixed number of steps, no time cap): names catalog dishes."""
    from model.demo.build import QUICK_RECIPE, build_demo_model

    # Laid out as XDG_CACHE_HOME=<cache> would hold it, so `mechuri … --demo-quick` in a subprocess reuses it.
    cache = tmp_path_factory.mktemp("quick-demo") / "cache"
    return build_demo_model(recipe=QUICK_RECIPE, progress=False, cache_root=cache / "mechuri" / "demo")


@pytest.fixture(scope="session")
def chromium():
    """A factory of headless Chromium sessions on Debian's chromium and chromedriver (apt), never a downloaded
    browser. Skips where they are missing, unless MECHURI_REQUIRE_BROWSER=1 (set by .ci/run): then it fails."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        if os.environ.get(BROWSER_ENV) == "1":
            pytest.fail(f"a browser is required here ({BROWSER_ENV}=1) but missing: {', '.join(missing)} "
                        f"(apt-get install chromium chromium-driver)")
        pytest.skip(f"chromium unavailable: {', '.join(missing)} (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers = []

    def start(width: int = 1100, height: int = 1100):
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    f"--window-size={width},{height}", "--lang=ko-KR"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()
