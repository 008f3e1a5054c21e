"""A public app survives its visitors: bad input gets a message naming the field, API callers read errors as
plain text, a model that fails to load is not re-read on every click, uploads and disk stay bounded, nobody
skips the queue in public mode, and the page opens without the bundled models."""

from __future__ import annotations

import math
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from conftest import free_port, serve

import app as app_module
from rpln_app import inside
from rpln_app.handlers import Handlers, import_engine
from rpln_app.registry import ModelRegistry
from rpln_app.settings import DEFAULT_MODELS, Settings, exposure_warning, from_environment, is_loopback
from rpln_app.teaching import TeachingHandlers, teaching_engine
from rpln_core import budgets
from rpln_core.catalog import HUB_PRESETS
from rpln_core.errors import RplnError

NO_MASK = "No mask in here."


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server.url, verbose=False)


@pytest.fixture(scope="module")
def model_dir(checkpoint_dir):
    return str(checkpoint_dir("pre-ln", "mlm"))


@pytest.fixture(scope="module")
def handlers(model_dir):
    return Handlers(ModelRegistry([model_dir], public=False))


@pytest.fixture
def restore_budgets():
    before = budgets.current()
    yield
    budgets.configure(**{name: getattr(before, name) for name in before.__dataclass_fields__})


# --- every field is checked, with its name in the message


@pytest.mark.parametrize("top_k", ["abc", None, math.nan, float("1e400"), 2.5, True, 0, 10**9])
def test_a_top_k_that_is_not_a_whole_number_in_range_is_refused_by_name(handlers, model_dir, top_k):
    with pytest.raises(RplnError, match=r"^Top k must be a whole number from 1 to 100"):
        handlers.fill_mask(model_dir, "the <mask> .", top_k)
    with pytest.raises(RplnError, match=r"^Answers must be a whole number"):
        handlers.answer(model_dir, "who ?", "the man .", top_k, False)


def test_a_list_as_the_model_is_refused_as_not_a_name(handlers):
    with pytest.raises(RplnError, match="^model must be a name"):
        handlers.fill_mask(["preln-mini"], "the <mask> .", 5)
    with pytest.raises(RplnError, match="^Left model must be a name"):
        TeachingHandlers(handlers.registry).ablation(["preln-mini"], "preln-mini", "the <mask> .", 1, 0)


def test_texts_and_flags_of_the_wrong_type_are_refused_by_name(handlers, model_dir):
    with pytest.raises(RplnError, match="^The text must be text, got list"):
        handlers.fill_mask(model_dir, ["the <mask> ."], 5)
    with pytest.raises(RplnError, match="^The second text must be text, got int"):
        handlers.classify(model_dir, "fine", 3)
    with pytest.raises(RplnError, match="^Allow 'no answer' must be True or False"):
        handlers.answer(model_dir, "who ?", "the man .", 1, "yes")
    with pytest.raises(RplnError, match="^The dims must be text, got list"):
        handlers.ablate_api("the <mask> .", model_dir, dims=[5])


def test_the_comparison_and_the_experiment_controls_are_bounded(handlers, model_dir):
    teaching = TeachingHandlers(handlers.registry)
    for top_k in ("abc", 2.5, 10**9):
        with pytest.raises(RplnError, match="^Top k must be a whole number"):
            teaching.compare(model_dir, model_dir, "the <mask> .", top_k)
        with pytest.raises(RplnError, match="^top_k must be a whole number"):
            teaching.compare_api("the <mask> .", model_dir, model_dir, top_k)
    with pytest.raises(RplnError, match="^Width must be a whole number"):
        TeachingHandlers.matched_std("abc")


def test_the_api_refuses_bad_values_naming_the_field_and_keeps_serving(client):
    with pytest.raises(AppError, match="top_k must be a whole number from 1 to 100; got 'abc'"):
        client.predict(text="The <mask>.", top_k="abc", api_name="/fill_mask")
    with pytest.raises(AppError, match="top_k must be a whole number from 1 to 100; got 2.5"):
        client.predict(text="The <mask>.", top_k=2.5, api_name="/fill_mask")
    with pytest.raises(AppError, match="model must be a name"):
        client.predict(text="The <mask>.", model=["preln-mini"], api_name="/fill_mask")
    assert len(client.predict(text="The <mask>.", top_k=2, api_name="/fill_mask")["predictions"]) == 2


# --- errors: plain text for API callers, escaped for the browser's toast


def test_api_callers_read_errors_as_plain_text(client):
    with pytest.raises(AppError) as raised:
        client.predict(text=NO_MASK, api_name="/fill_mask")
    assert "put <mask> where" in str(raised.value) and "&lt;" not in str(raised.value)


def test_the_tabs_escape_errors_for_the_toast_which_renders_html(client):
    with pytest.raises(AppError) as raised:
        client.predict("preln-mini", NO_MASK, 5, api_name="/ui_fill_mask")
    assert "put &lt;mask&gt; where" in str(raised.value)


# --- the API's defaults are the page's


def test_every_endpoint_defaults_to_the_models_the_page_starts_with(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    defaults = {
        (endpoint, p["parameter_name"]): p["parameter_default"]
        for endpoint, info in endpoints.items()
        for p in info["parameters"]
        if p["parameter_has_default"]
    }
    assert defaults[("/fill_mask", "model")] == DEFAULT_MODELS["fill-mask"]
    assert defaults[("/classify", "model")] == DEFAULT_MODELS["classification"]
    assert defaults[("/answer", "model")] == DEFAULT_MODELS["qa"]
    assert defaults[("/ablate", "model")] == DEFAULT_MODELS["fill-mask"]
    assert (defaults[("/compare", "left")], defaults[("/compare", "right")]) == (
        DEFAULT_MODELS["compare-left"], DEFAULT_MODELS["compare-right"],
    )
    assert defaults[("/fill_mask", "top_k")] == 5 and defaults[("/classify", "text_pair")] == ""
    served = client.predict(text="The cat sat on the <mask>.", api_name="/fill_mask")
    assert served["model"] == DEFAULT_MODELS["fill-mask"] and len(served["predictions"]) == 5


def test_the_api_defaults_follow_the_settings():
    settings = Settings(models=["a", "b"], defaults={**DEFAULT_MODELS, "fill-mask": "b"})
    demo = app_module.build_demo(settings)
    fill_mask = next(fn for fn in demo.fns.values() if fn.api_name == "fill_mask")
    assert [block.value for block in fill_mask.inputs] == [None, "b", 5]


# --- the queue: nobody skips it in public mode


def test_public_mode_closes_the_direct_run_route_that_skips_the_queue(app_server):
    body = {"data": ["The <mask>.", "preln-mini", 1]}
    response = httpx.post(f"{app_server.url}gradio_api/run/fill_mask", json=body, timeout=60)
    assert response.status_code == 404 and "join the queue" in response.text
    assert app_module.build_demo(Settings(models=["a"], public=False)).api_open  # locally, scripts may use it


# --- uploads and disk


def test_uploads_past_the_limit_are_refused(app_server):
    limit = int(Settings().max_upload_mb * 2**20)
    url = f"{app_server.url}gradio_api/upload"
    small = httpx.post(url, files={"files": ("small.txt", b"x" * 1000)}, timeout=60)
    assert small.status_code == 200
    big = httpx.post(url, files={"files": ("big.bin", b"x" * (limit + 1))}, timeout=60)
    assert big.status_code == 413


def test_upload_and_cache_settings_come_from_the_environment():
    settings = from_environment([], env={"RPLN_MAX_UPLOAD_MB": "2.5", "RPLN_CACHE_MINUTES": "10"})
    assert settings.launch_options["max_file_size"] == int(2.5 * 2**20)
    assert settings.cache_schedule == (150, 600)
    assert app_module.build_demo(settings).delete_cache == (150, 600)
    with pytest.raises(RplnError, match="RPLN_MAX_UPLOAD_MB"):
        from_environment([], env={"RPLN_MAX_UPLOAD_MB": "lots"})


@pytest.fixture(scope="module")
def sweeping_server():
    """The app with Gradio's cache swept every second of files older than a second."""
    from rpln_core.catalog import bundled_models

    settings = Settings(port=free_port(), public=True, models=bundled_models(), cache_age_s=1, cache_every_s=1)
    for server in serve(app_module, settings, DEFAULT_MODELS):  # its first results end before the next tests
        yield server.url


def test_gradios_cache_of_images_and_downloads_is_swept_on_schedule(sweeping_server):
    client = Client(sweeping_server, verbose=False, download_files=False)  # the server's paths, not copies
    outputs = client.predict("preln-mini", "A sweeping <mask> came through.", 5, api_name="/ui_fill_mask")
    served = [Path(outputs[6]["path"])]  # the model view's PNG
    assert all(path.exists() for path in served)
    deadline = time.monotonic() + 15
    while any(path.exists() for path in served) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(path.exists() for path in served)


def test_export_folders_of_every_tab_share_one_bound(tmp_path, monkeypatch, handlers, model_dir):
    from rpln_app import teaching

    import_engine()
    teaching_engine()  # both import EXPORT_ROOT from rpln_app.inside

    monkeypatch.setattr(inside, "EXPORT_ROOT", tmp_path)
    monkeypatch.setattr(teaching, "EXPORT_ROOT", tmp_path)
    monkeypatch.setattr(inside, "EXPORTS_KEPT", 2)
    handlers.fill_mask(model_dir, "the <mask> .", 1)
    for _ in range(2):
        TeachingHandlers(handlers.registry).compare(model_dir, model_dir, "the <mask> .", 1)
    folders = [path for path in tmp_path.iterdir()]
    assert len(folders) == 2 and all(path.is_dir() for path in folders)
    assert all(any(path.name.startswith("compare") for path in folder.iterdir()) for folder in folders)


def test_old_export_folders_are_removed_beyond_the_kept_number(tmp_path):
    made = [inside.fresh_export_directory(tmp_path, kept=4) for _ in range(10)]
    for folder in made:
        if folder.exists():
            (folder / "rows.csv").write_text("x")
    assert sorted(tmp_path.iterdir()) == sorted(made[-4:])


# --- a model that fails to load


class FailingLoader:
    def __init__(self):
        self.calls = 0

    def __call__(self, name):
        self.calls += 1
        raise RplnError(f"'{name}' has corrupt weights (attempt {self.calls}).")


def test_a_failed_load_is_remembered_briefly_and_not_retried_within_it():
    now = [0.0]
    loader = FailingLoader()
    registry = ModelRegistry(["broken"], public=True, loader=loader, clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(RplnError, match=r"^'broken' has corrupt weights \(attempt 1\)\.$"):
            registry.get("broken")
    assert loader.calls == 1
    now[0] += registry.failure_memory_s + 1  # a fixed file, or the network back, gets its chance
    with pytest.raises(RplnError, match=r"attempt 2"):
        registry.get("broken")
    assert loader.calls == 2


def test_a_load_that_succeeds_after_a_failure_is_served():
    now, outcomes = [0.0], [RplnError("the Hub is unreachable"), "loaded"]

    def loader(name):
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    registry = ModelRegistry(["m"], public=False, loader=loader, clock=lambda: now[0], size_of=len)
    with pytest.raises(RplnError, match="unreachable"):
        registry.get("m")
    now[0] += 61
    assert registry.get("m") == "loaded" and registry.get("m") == "loaded"


# --- loaded models: a memory budget, not a count


def test_loaded_models_are_kept_within_the_memory_budget_least_recently_used_out_first():
    sizes = {"small-a": 20, "small-b": 20, "large-a": 1400, "large-b": 1400, "huge": 5000}  # MB
    loads = []

    def loader(name):
        loads.append(name)
        return name

    registry = ModelRegistry(list(sizes), public=False, memory_mb=3072, loader=loader,
                             size_of=lambda name: sizes[name] * 2**20)
    for name in ("small-a", "small-b", "large-a", "large-b"):
        registry.get(name)
    assert registry.loaded == ["small-a", "small-b", "large-a", "large-b"]  # 2,840 MB: all fit
    registry.get("small-a")  # used again: now the most recent
    registry.get("huge")  # alone over the budget: kept anyway, as the newest, and everything else goes
    assert registry.loaded == ["huge"]
    registry.get("large-a")
    assert registry.loaded == ["large-a"] and loads.count("large-a") == 2


def test_the_bundled_models_all_stay_loaded_under_the_default_budget():
    from rpln_core.catalog import bundled_models
    from rpln_app.registry import model_bytes

    registry = ModelRegistry(bundled_models(), public=False)
    for name in bundled_models():
        registry.get(name)
    assert registry.loaded == bundled_models()  # moving between the tabs reloads none
    assert sum(model_bytes(registry.get(name)) for name in bundled_models()) < 0.1 * registry.memory_bytes


def test_the_model_memory_budget_comes_from_the_environment():
    assert from_environment([], env={"RPLN_MODEL_MEMORY_MB": "8000"}).model_memory_mb == 8000
    with pytest.raises(RplnError, match="RPLN_MODEL_MEMORY_MB"):
        from_environment([], env={"RPLN_MODEL_MEMORY_MB": "0"})


# --- without the bundled models


@pytest.fixture
def no_models(tmp_path, monkeypatch):
    from rpln_core import catalog, curves

    absent = tmp_path / "models"
    monkeypatch.setattr(catalog, "BUNDLED_DIR", absent)
    monkeypatch.setattr(curves, "CURVES_DIR", absent / "curves")
    return absent


def test_without_models_the_page_opens_and_its_curves_section_says_what_is_missing(no_models):
    settings = from_environment([], env={})
    assert settings.models == HUB_PRESETS
    assert settings.defaults["fill-mask"] == settings.models[0]
    assert settings.defaults["compare-right"] == "FacebookAI/roberta-base"  # the post-LN side stays post-LN
    demo = app_module.build_demo(settings)
    # what the lesson runs as the page opens: its last step is the curves, whose notice takes the place of an
    # error toast (the steps that need the missing models are named in the lesson's own notice instead)
    lesson = next(fn for fn in demo.fns.values() if any(t[1] == "load" for t in fn.targets) and fn.name == "arrive")
    lesson_notice, *_, notice, loss, gradient, files = lesson.fn()
    assert "steps 1 and 2" in lesson_notice
    assert "training curves are missing" in notice and "models/curves" in notice
    assert loss is None and gradient is None and files == []


def test_a_missing_setting_is_a_message_not_an_attribute_error(no_models):
    from rpln_core import curves

    with pytest.raises(RplnError, match="No training curves for None"):
        curves.load_pair(None, no_models / "curves")


# --- settings: budgets, and who can reach the server


def test_generation_and_choice_budgets_come_from_the_environment(restore_budgets):
    settings = from_environment([], env={"RPLN_MAX_NEW_TOKENS": "12", "RPLN_MAX_CHOICES": "3"})
    assert settings.budgets == {"max_new_tokens": 12, "max_choices": 3}
    budgets.configure(**settings.budgets)
    assert (budgets.current().max_new_tokens, budgets.current().max_choices) == (12, 3)


def test_budget_settings_come_from_the_environment_and_apply_when_the_app_is_built(restore_budgets):
    settings = from_environment([], env={"RPLN_MAX_TOP_K": "7", "RPLN_MAX_CONTEXT_CHARS": "900"})
    assert settings.budgets == {"max_top_k": 7, "max_context_chars": 900}
    demo = app_module.build_demo(settings)
    assert (budgets.current().max_top_k, budgets.current().max_context_chars) == (7, 900)
    assert max(block.maximum for block in demo.blocks.values() if getattr(block, "label", "") == "Top k") == 7
    with pytest.raises(RplnError, match=r"^RPLN_MAX_MASKS must be a whole number of at least 1; got 'many'"):
        from_environment([], env={"RPLN_MAX_MASKS": "many"})


def test_trace_memory_and_session_limits_come_from_the_environment():
    settings = from_environment([], env={"RPLN_TRACE_MEMORY_MB": "64", "RPLN_MAX_SESSIONS": "10"})
    assert settings.trace_memory_mb == 64
    assert settings.launch_options["state_session_capacity"] == 10


@pytest.mark.parametrize(
    "host, public, warned",
    [
        ("127.0.0.1", False, False),
        ("localhost", False, False),
        ("::1", False, False),
        ("127.0.0.2", False, False),
        ("0.0.0.0", False, True),
        ("192.168.1.20", False, True),
        ("my-laptop.local", False, True),
        ("0.0.0.0", True, False),
    ],
)
def test_serving_other_machines_outside_public_mode_is_warned_about(host, public, warned):
    warning = exposure_warning(Settings(host=host, public=public))
    assert (warning is not None) == warned
    assert is_loopback(host) == (host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    if warned:
        assert host in warning and "RPLN_PUBLIC=1" in warning and "checkpoint directory" in warning
