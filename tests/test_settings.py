"""Settings: defaults mirror settings.yaml, environment overrides, file choice, validation, secrets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.errors import ConfigurationError
from app.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
REPO_SETTINGS = ROOT / "settings.yaml"
TOKEN = "ghp_SECRETVALUE123"


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def refusal(path: Path | None = None, **overrides: Any) -> str:
    """The message of the ConfigurationError that loading these settings raises."""
    with pytest.raises(ConfigurationError) as caught:
        load_settings(path, **overrides)
    return str(caught.value)


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory: no ./settings.yaml to fall back on."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


# -- defaults --------------------------------------------------------------------------------


def test_defaults_equal_the_values_in_settings_yaml(elsewhere: Path) -> None:
    defaults = load_settings(None)
    from_file = load_settings(REPO_SETTINGS)

    # models.dir differs by design: relative in the defaults, resolved against the file's folder.
    unrelated = {"models": {"dir"}}
    assert from_file.model_dump(exclude=unrelated) == defaults.model_dump(exclude=unrelated)
    assert defaults.models.dir == Path("models")
    assert from_file.models_dir == ROOT / "models"


def test_settings_yaml_mirrors_the_seed(elsewhere: Path) -> None:
    settings = load_settings(REPO_SETTINGS)

    assert settings.cloud_sync.enabled is True
    assert settings.cloud_sync.interval_minutes == 15
    assert settings.github.owner == "c-trading-bo"
    assert settings.github.repository == "trading-bot-c-"
    assert settings.github.token.get_secret_value() == ""
    assert settings.brain.confidence_threshold == 0.65
    assert len(settings.brain.features) == 16
    assert settings.brain.slots["unified_brain"].path == "unified_brain.onnx"


def test_settings_yaml_names_every_setting() -> None:
    documented = yaml.safe_load(REPO_SETTINGS.read_text(encoding="utf-8"))
    missing = [
        f"{section}.{key}"
        for section, values in Settings().model_dump().items()
        for key in values
        if key not in documented.get(section, {})
    ]
    assert missing == []


# -- environment overrides ---------------------------------------------------------------------


def override(variable: str, value: str, read: Callable[[Settings], Any], expected: Any) -> Any:
    return pytest.param(variable, value, read, expected, id=variable)


@pytest.mark.parametrize(
    ("variable", "value", "read", "expected"),
    [
        override("GITHUB__OWNER", "someone-else", lambda s: s.github.owner, "someone-else"),
        override("github__repository", "other-repo", lambda s: s.github.repository, "other-repo"),
        override("GitHub__Branch", "release", lambda s: s.github.branch, "release"),
        override(
            "GITHUB__API_URL",
            "https://ghe.test/api",
            lambda s: s.github.api_url,
            "https://ghe.test/api",
        ),
        override("CLOUD_SYNC__ENABLED", "false", lambda s: s.cloud_sync.enabled, False),
        override("Cloud_Sync__Interval_Minutes", "30", lambda s: s.cloud_sync.interval_minutes, 30),
        override("MODELS__DIR", "/srv/bot/models", lambda s: s.models.dir, Path("/srv/bot/models")),
        override("models__backup_retention", "9", lambda s: s.models.backup_retention, 9),
        override("OPS__PORT", "9100", lambda s: s.ops.port, 9100),
        override("BRAIN__CONFIDENCE_THRESHOLD", "0.8", lambda s: s.brain.confidence_threshold, 0.8),
        override("RESILIENCE__MAX_RETRIES", "7", lambda s: s.resilience.max_retries, 7),
        override("MEMORY__LIMIT_MB", "512", lambda s: s.memory.limit_mb, 512),
        override("ALERTS__SMTP_PORT", "2525", lambda s: s.alerts.smtp_port, 2525),
        override("LOGGING__LEVEL", "DEBUG", lambda s: s.logging.level, "DEBUG"),
    ],
)
def test_every_section_is_overridden_by_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    read: Callable[[Settings], Any],
    expected: Any,
) -> None:
    before = read(load_settings(REPO_SETTINGS))
    monkeypatch.setenv(variable, value)

    after = read(load_settings(REPO_SETTINGS))

    assert after != before  # the file sets it too: the environment wins over the file
    assert after == expected


def test_github_token_variable_sets_the_token_over_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings_path = write_yaml(tmp_path / "settings.yaml", {"github": {"token": "from-file"}})
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)

    assert load_settings(settings_path).github.token.get_secret_value() == TOKEN


def test_nested_token_variable_wins_over_github_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_plain")
    monkeypatch.setenv("GITHUB__TOKEN", "ghp_nested")

    assert load_settings(REPO_SETTINGS).github.token.get_secret_value() == "ghp_nested"


RUNNER_API = "https://ghe.runner.test/api/v3"


@pytest.mark.parametrize(
    ("file_api_url", "nested_variable", "expected"),
    [
        pytest.param("", None, RUNNER_API, id="file-empty-runner-fills"),
        pytest.param(None, None, RUNNER_API, id="no-file-runner-fills"),
        pytest.param(
            "https://explicit.test/api", None, "https://explicit.test/api", id="file-wins"
        ),
        pytest.param("", "https://nested.test/api", "https://nested.test/api", id="nested-wins"),
    ],
)
def test_github_api_url_from_the_runner_only_fills_an_unset_value(
    monkeypatch: pytest.MonkeyPatch,
    elsewhere: Path,
    file_api_url: str | None,
    nested_variable: str | None,
    expected: str,
) -> None:
    monkeypatch.setenv("GITHUB_API_URL", RUNNER_API)
    if nested_variable is not None:
        monkeypatch.setenv("GITHUB__API_URL", nested_variable)
    settings_path = None
    if file_api_url is not None:
        settings_path = write_yaml(elsewhere / "conf.yaml", {"github": {"api_url": file_api_url}})

    settings = load_settings(settings_path)

    assert settings.github.api_url == expected
    assert settings.github.effective_api_url == expected


def test_api_url_defaults_to_public_github() -> None:
    assert load_settings(REPO_SETTINGS).github.effective_api_url == "https://api.github.com"


# -- which file --------------------------------------------------------------------------------


def test_settings_file_is_the_argument_then_app_settings_then_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, elsewhere: Path, tmp_path: Path
) -> None:
    write_yaml(elsewhere / "settings.yaml", {"github": {"owner": "from-cwd"}})
    argument = write_yaml(tmp_path / "a" / "bot.yaml", {"github": {"owner": "from-argument"}})
    variable = write_yaml(tmp_path / "b" / "bot.yaml", {"github": {"owner": "from-variable"}})

    assert load_settings(None).github.owner == "from-cwd"
    monkeypatch.setenv("APP_SETTINGS", str(variable))
    assert load_settings(None).github.owner == "from-variable"
    assert load_settings(argument).github.owner == "from-argument"


def test_a_missing_settings_file_is_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path / "nope.yaml")

    assert "nope.yaml" in message
    assert "does not exist" in message


def test_relative_models_dir_resolves_against_the_files_folder(
    tmp_path: Path, elsewhere: Path
) -> None:
    config = write_yaml(tmp_path / "conf" / "settings.yaml", {"models": {"dir": "data/models"}})

    settings = load_settings(config)

    assert settings.models_dir == tmp_path / "conf" / "data" / "models"


def test_relative_models_dir_from_the_environment_resolves_against_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, elsewhere: Path
) -> None:
    config = write_yaml(tmp_path / "conf" / "settings.yaml", {"models": {"dir": "data/models"}})
    monkeypatch.setenv("MODELS__DIR", "mine")

    assert load_settings(config).models_dir == elsewhere / "mine"


# -- validation --------------------------------------------------------------------------------


def test_an_interval_under_the_five_minute_floor_is_refused_naming_key_and_bound(
    tmp_path: Path,
) -> None:
    config = write_yaml(tmp_path / "s.yaml", {"cloud_sync": {"interval_minutes": 2}})

    message = refusal(config)

    assert "cloud_sync.interval_minutes" in message
    assert "greater than or equal to 5" in message
    assert "CLOUD_SYNC__INTERVAL_MINUTES" in message  # how to override it


def test_an_interval_from_the_environment_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUD_SYNC__INTERVAL_MINUTES", "4.5")

    assert "cloud_sync.interval_minutes" in refusal(REPO_SETTINGS)


def test_the_floor_itself_is_allowed(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "s.yaml", {"cloud_sync": {"interval_minutes": 5}})

    assert load_settings(config).cloud_sync.interval_minutes == 5


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"github": {"ownr": "me"}}, "github.ownr"),
        ({"clouds_sync": {"enabled": False}}, "clouds_sync"),
        ({"brain": {"slots": {"unified_brain": {"path": "x.onnx", "pth": "y"}}}}, "pth"),
    ],
)
def test_an_unknown_key_is_refused_by_name(tmp_path: Path, document: Any, named: str) -> None:
    message = refusal(write_yaml(tmp_path / "s.yaml", document))

    assert named in message
    assert "not permitted" in message


def test_ops_server_on_every_interface_is_refused_unless_allowed(tmp_path: Path) -> None:
    exposed = write_yaml(tmp_path / "exposed.yaml", {"ops": {"host": "0.0.0.0"}})
    allowed = write_yaml(
        tmp_path / "allowed.yaml",
        {"ops": {"host": "0.0.0.0", "allow_non_loopback": True}},
    )

    message = refusal(exposed)

    assert "ops.host" in message
    assert "allow_non_loopback" in message
    assert load_settings(allowed).ops.host == "0.0.0.0"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_hosts_are_accepted(host: str) -> None:
    assert load_settings(REPO_SETTINGS, ops={"host": host}).ops.host == host


@pytest.mark.parametrize(
    "document",
    [
        pytest.param("github: [\n", id="unclosed-flow"),
        pytest.param("- just\n- a list\n", id="top-level-list"),
    ],
)
def test_a_malformed_settings_file_is_a_configuration_error(tmp_path: Path, document: str) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text(document, encoding="utf-8")

    assert "broken.yaml" in refusal(config)


def test_a_section_variable_that_is_not_json_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELS", "/srv/models")

    assert "models" in refusal(REPO_SETTINGS)


# -- secrets -----------------------------------------------------------------------------------


def test_secrets_are_hidden_in_repr_str_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("OPS__WEBHOOK_SECRET", "whsec_SECRETVALUE456")
    monkeypatch.setenv("OPS__ADMIN_TOKEN", "admin_SECRETVALUE789")
    monkeypatch.setenv("ALERTS__PASSWORD", "smtp_SECRETVALUE000")

    settings = load_settings(REPO_SETTINGS)

    shown = " ".join(
        [repr(settings), str(settings), settings.model_dump_json(), repr(settings.github)]
    )
    assert "SECRETVALUE" not in shown
    assert settings.github.token.get_secret_value() == TOKEN
    assert settings.ops.webhook_secret.get_secret_value() == "whsec_SECRETVALUE456"
    assert settings.ops.admin_token.get_secret_value() == "admin_SECRETVALUE789"
    assert settings.alerts.password.get_secret_value() == "smtp_SECRETVALUE000"


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({"github": {"token": [TOKEN]}}, id="token-of-wrong-type"),
        pytest.param({"ops": {"webhook_secret": [TOKEN]}}, id="webhook-secret-of-wrong-type"),
        pytest.param({"alerts": {"password": {"value": TOKEN}}}, id="password-of-wrong-type"),
        pytest.param(
            {"github": {"Token": TOKEN}},
            id="token-key-in-other-case",
        ),
        pytest.param(
            {"alerts": {"pasword": TOKEN}},
            id="misspelt-password-key",
        ),
    ],
)
def test_a_refused_secret_is_never_echoed(tmp_path: Path, document: Any) -> None:
    message = refusal(write_yaml(tmp_path / "s.yaml", document))

    assert TOKEN not in message
    assert "invalid settings" in message


def test_a_secret_from_the_environment_under_a_bad_key_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GITHUB__TOKEN__VALUE", TOKEN)

    message = refusal(REPO_SETTINGS)

    assert "github.token" in message
    assert TOKEN not in message


def test_a_list_from_the_environment_that_is_not_json_names_the_variable_and_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIFECYCLE__BLACKOUT", "09:00-09:30")

    with pytest.raises(ConfigurationError) as raised:
        load_settings(None)

    said = str(raised.value)
    assert "LIFECYCLE__BLACKOUT: a list or mapping is written as JSON" in said
    assert "09:00" not in said  # a value is never echoed (it could be a secret)
