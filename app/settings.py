"""The settings: ``settings.yaml`` plus environment overrides, validated once at start-up.

Precedence, highest first: keyword arguments, ``SECTION__KEY`` environment variables,
``GITHUB_TOKEN``, the YAML file, ``GITHUB_API_URL`` (a runner's default, so it only fills
``github.api_url`` when nothing else set it), then the defaults below (which mirror
``settings.yaml``). A relative ``models.dir`` in the YAML file resolves against the file's
folder; one from the environment resolves against the working directory.
"""

from __future__ import annotations

import ipaddress
import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from app.errors import ConfigurationError

DEFAULT_SETTINGS_FILE = "settings.yaml"
DEFAULT_SLOT = "unified_brain"
MIN_SYNC_INTERVAL_MINUTES = 5  # the seed's floor between syncs

DEFAULT_FEATURES = (
    "return_1m",
    "return_5m",
    "return_15m",
    "return_1h",
    "volatility_5m",
    "volatility_1h",
    "volume_ratio_5m",
    "volume_ratio_1h",
    "spread_bps",
    "order_imbalance",
    "rsi_14",
    "macd_signal",
    "bollinger_position",
    "atr_14",
    "vwap_distance",
    "time_of_day",
)


class Section(BaseModel):
    """A settings section: unknown keys are typos, and typos are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CloudSyncSettings(Section):
    enabled: bool = True
    interval_minutes: float = Field(default=15, ge=MIN_SYNC_INTERVAL_MINUTES, le=24 * 60)
    min_interval_minutes: float = Field(default=MIN_SYNC_INTERVAL_MINUTES, ge=0)
    sync_on_startup: bool = True
    inbox_enabled: bool = True
    inbox_poll_seconds: float = Field(default=5, gt=0, le=3600)


class GitHubSettings(Section):
    owner: str = Field(default="c-trading-bo", min_length=1)
    repository: str = Field(default="trading-bot-c-", min_length=1)
    token: SecretStr = SecretStr("")
    api_url: str = ""
    workflow: str = ""
    branch: str = "main"
    artifact_pattern: str = "*model*"
    allowed_events: tuple[str, ...] = ("push", "schedule", "workflow_dispatch")
    allow_pull_requests: bool = False
    allow_forks: bool = False
    per_page: int = Field(default=100, ge=1, le=100)
    max_pages_per_cycle: int = Field(default=50, ge=1, le=1000)

    @property
    def effective_api_url(self) -> str:
        return (self.api_url or "https://api.github.com").rstrip("/")

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repository}"


class SlotSettings(Section):
    path: str = Field(min_length=1)

    @field_validator("path")
    @classmethod
    def _inside_models_dir(cls, value: str) -> str:
        relative = Path(value)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError("must be a relative path inside models.dir")
        return value


def _default_slots() -> dict[str, SlotSettings]:
    return {DEFAULT_SLOT: SlotSettings(path=f"{DEFAULT_SLOT}.onnx")}


class ModelsSettings(Section):
    dir: Path = Path("models")
    backup_retention: int = Field(default=5, ge=1, le=1000)
    max_artifact_mb: float = Field(default=1024, gt=0)
    max_uncompressed_mb: float = Field(default=4096, gt=0)
    max_members: int = Field(default=1000, ge=1)
    max_compression_ratio: float = Field(default=200, ge=1)
    max_metadata_kb: float = Field(default=1024, gt=0)
    require_checksums: bool = False
    lock_wait_seconds: float = Field(default=10, ge=0)
    watch_seconds: float = Field(default=2, gt=0)
    # A slot whose active file cannot serve at start-up: serve its newest valid backup (and
    # say so loudly, /readyz 503), or refuse to start.
    on_bad_active: Literal["fall_back", "refuse"] = "fall_back"


class BrainSettings(Section):
    confidence_threshold: float = Field(default=0.65, ge=0, le=1)
    intra_op_threads: int = Field(default=1, ge=1, le=64)
    inter_op_threads: int = Field(default=1, ge=1, le=64)
    features: tuple[str, ...] = DEFAULT_FEATURES
    slots: dict[str, SlotSettings] = Field(default_factory=_default_slots)
    decision_slot: str = DEFAULT_SLOT
    log_every: int = Field(default=10, ge=1)  # one terminal line per this many bars
    # Budgets a model must meet at warm-up before it serves (see app/brain/budget.py).
    max_decision_ms: float = Field(default=100, gt=0)
    validation_timeout_seconds: float = Field(default=30, gt=0, le=3600)
    # A model whose measured decision is slower than this decides in a worker thread, so the
    # event loop (ops server, webhook, signals) never waits for it.
    inline_decision_ms: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _decision_slot_exists(self) -> BrainSettings:
        if not self.slots:
            raise ValueError("brain.slots must name at least one slot")
        if self.decision_slot not in self.slots:
            raise ValueError(f"brain.decision_slot {self.decision_slot!r} is not in brain.slots")
        if len(set(self.features)) != len(self.features) or not self.features:
            raise ValueError("brain.features must be a non-empty list of distinct names")
        return self


class MarketSettings(Section):
    """Where the host's bars come from (``app.trading.market``)."""

    source: Literal["synthetic", "csv"] = "synthetic"
    csv_path: Path | None = None
    bars_per_second: float = Field(default=1.0, ge=0)  # 0: as fast as possible
    seed: int = 7  # the synthetic market's
    bar_seconds: float = Field(default=60, gt=0)  # the synthetic market's bar spacing

    @model_validator(mode="after")
    def _csv_needs_a_path(self) -> MarketSettings:
        if self.source == "csv" and self.csv_path is None:
            raise ValueError("market.csv_path must be set when market.source is csv")
        return self


class TradingSettings(Section):
    """Paper trading: what a change of position costs."""

    enabled: bool = True
    cost_bps: float = Field(default=1.0, ge=0, le=10000)


class JournalSettings(Section):
    """The decision journal, ``models/.sync/journal.sqlite3``."""

    enabled: bool = True
    retention_days: float = Field(default=30, gt=0)
    max_rows: int = Field(default=1_000_000, ge=1)
    flush_seconds: float = Field(default=0.25, gt=0, le=60)


_CLOCK_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


class LifecycleSettings(Section):
    """The model lifecycle (``app.lifecycle``): shadow, canary, the judge, quarantine.

    Windows are in market time (the bars' timestamps). ``blackout``: ranges of the market's
    clock (``HH:MM-HH:MM`` in ``blackout_timezone``; a range may cross midnight) in which no
    new model starts trading: it waits in shadow and starts its canary after the window.
    """

    mode: Literal["canary", "direct"] = "canary"  # direct: the seed's validated swap, no judging
    shadow_minutes: float = Field(default=0, ge=0, le=7 * 24 * 60)
    canary_minutes: float = Field(default=60, gt=0, le=7 * 24 * 60)
    on_inconclusive: Literal["keep", "rollback"] = "keep"
    degradation: float = Field(default=0.15, gt=0, lt=1)  # the seed's 15%
    alpha: float = Field(default=0.05, gt=0, le=0.5)  # the false-rollback budget
    min_trades: int = Field(default=10, ge=1)  # closed trades before the soft judgement speaks
    loss_limit: float = Field(default=0.02, gt=0, le=1)  # net return of the canary, -2%
    max_drawdown: float = Field(default=0.03, gt=0, le=1)  # of the canary's equity curve
    # One action this many market minutes while the incumbent's vary: rolled back (0: off).
    stuck_minutes: float = Field(default=60, ge=0, le=7 * 24 * 60)
    blackout: tuple[str, ...] = ()
    blackout_timezone: str = "UTC"

    @field_validator("blackout")
    @classmethod
    def _clock_ranges(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if not _CLOCK_RANGE.match(entry.strip()):
                raise ValueError(f"lifecycle.blackout entry {entry!r} is not HH:MM-HH:MM")
            start, end = entry.strip().split("-")
            if start == end:
                raise ValueError(f"lifecycle.blackout entry {entry!r} is empty (start = end)")
        return tuple(entry.strip() for entry in value)

    @field_validator("blackout_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            message = f"lifecycle.blackout_timezone {value!r} is not a known zone"
            raise ValueError(message) from error
        return value


def _is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses only (not a name like 127.example.com)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpsSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    allow_non_loopback: bool = False
    webhook_secret: SecretStr = SecretStr("")
    admin_token: SecretStr = SecretStr("")
    max_webhook_body_mb: float = Field(default=25, gt=0)
    # Bodies are read before their signature can be checked: bound how many, and how long.
    max_concurrent_bodies: int = Field(default=4, ge=1, le=1000)
    body_timeout_seconds: float = Field(default=10, gt=0)

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> OpsSettings:
        if not _is_loopback(self.host) and not self.allow_non_loopback:
            raise ValueError(
                f"ops.host {self.host!r} is not a loopback address; "
                "set ops.allow_non_loopback: true to expose the ops server"
            )
        return self


class ResilienceSettings(Section):
    max_retries: int = Field(default=3, ge=0, le=20)
    base_delay_seconds: float = Field(default=0.5, ge=0)
    max_delay_seconds: float = Field(default=30, ge=0)
    http_timeout_seconds: float = Field(default=30, gt=0)
    # One download, all its attempts included; and the pace below which an attempt is cut.
    download_deadline_seconds: float = Field(default=900, gt=0)
    min_download_kbps: float = Field(default=256, ge=0)
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_open_seconds: float = Field(default=60, ge=0)


class MemorySettings(Section):
    limit_mb: float = Field(default=4096, gt=0)


class AlertSettings(Section):
    enabled: bool = False
    smtp_host: str = "smtp.gmail.com"
    smtp_port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str = ""
    password: SecretStr = SecretStr("")
    sender: str = ""
    recipients: tuple[str, ...] = ()
    timeout_seconds: float = Field(default=10, gt=0)


class LoggingSettings(Section):
    json_lines: bool = False
    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = "INFO"


_yaml_file: ContextVar[Path | None] = ContextVar("_yaml_file", default=None)


class _EnvironmentAliases(PydanticBaseSettingsSource):
    """Plain environment variables that mean a nested key (``GITHUB_TOKEN`` -> github.token)."""

    def __init__(
        self, settings_cls: type[BaseSettings], aliases: dict[str, tuple[str, str]]
    ) -> None:
        super().__init__(settings_cls)
        self._aliases = aliases

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # noqa: ARG002
        return None, field_name, False  # pragma: no cover - __call__ does the work

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for variable, (section, key) in self._aliases.items():
            value = os.environ.get(variable)
            if value:
                values.setdefault(section, {})[key] = value
        return values


class _YamlRelativeToFile(YamlConfigSettingsSource):
    """The YAML file, with ``models.dir`` and ``market.csv_path`` resolved against the file's
    own folder.

    An empty ``github.api_url`` counts as unset, so that ``GITHUB_API_URL`` can fill it.
    """

    def __init__(self, settings_cls: type[BaseSettings], yaml_file: Path) -> None:
        super().__init__(settings_cls, yaml_file=yaml_file)
        self._folder = yaml_file.resolve().parent

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        models = data.get("models")
        if isinstance(models, dict) and isinstance(models.get("dir"), str):
            models = dict(models)
            models["dir"] = str(self._folder / models["dir"])
            data = {**data, "models": models}
        market = data.get("market")
        if isinstance(market, dict) and isinstance(market.get("csv_path"), str):
            csv_path = str(self._folder / market["csv_path"])
            data = {**data, "market": {**market, "csv_path": csv_path}}
        github = data.get("github")
        if isinstance(github, dict) and github.get("api_url") == "":
            data = {**data, "github": {k: v for k, v in github.items() if k != "api_url"}}
        return data


class Settings(BaseSettings):
    """Every setting of the application, one section per concern."""

    model_config = SettingsConfigDict(
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="forbid",
        frozen=True,
    )

    cloud_sync: CloudSyncSettings = CloudSyncSettings()
    github: GitHubSettings = GitHubSettings()
    models: ModelsSettings = ModelsSettings()
    brain: BrainSettings = BrainSettings()
    market: MarketSettings = MarketSettings()
    trading: TradingSettings = TradingSettings()
    journal: JournalSettings = JournalSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    ops: OpsSettings = OpsSettings()
    resilience: ResilienceSettings = ResilienceSettings()
    memory: MemorySettings = MemorySettings()
    alerts: AlertSettings = AlertSettings()
    logging: LoggingSettings = LoggingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            _EnvironmentAliases(settings_cls, {"GITHUB_TOKEN": ("github", "token")}),
        ]
        yaml_file = _yaml_file.get()
        if yaml_file is not None:
            sources.append(_YamlRelativeToFile(settings_cls, yaml_file))
        sources.append(_EnvironmentAliases(settings_cls, {"GITHUB_API_URL": ("github", "api_url")}))
        return tuple(sources)

    @property
    def models_dir(self) -> Path:
        return self.models.dir.resolve()

    @property
    def judges_models(self) -> bool:
        """True when the host's lifecycle judges new models: canary mode, on a trading loop
        (without one there are no bars to judge on, and swaps are direct)."""
        return self.lifecycle.mode == "canary" and self.trading.enabled

    @property
    def journal_path(self) -> Path:
        """The decision journal: in the models directory's private space."""
        return self.models_dir / ".sync" / "journal.sqlite3"


def settings_file(explicit: str | Path | None = None) -> Path | None:
    """The settings file to read: ``--settings``, else ``APP_SETTINGS``, else ./settings.yaml."""
    chosen = explicit or os.environ.get("APP_SETTINGS")
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise ConfigurationError(f"settings file {path} does not exist")
        return path
    default = Path(DEFAULT_SETTINGS_FILE)
    return default if default.is_file() else None


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "settings"
        env = "__".join(str(part) for part in item["loc"]).upper()
        given = item.get("input")
        secret = any(word in key.lower() for word in ("token", "password", "secret"))
        # An unknown key or a whole section may be a misspelt secret: never echo those.
        hidden = secret or item["type"] == "extra_forbidden" or len(item["loc"]) <= 1
        shown = "" if hidden or isinstance(given, dict | SecretStr) else f" (got {given!r})"
        hint = f" [environment: {env}]" if env else ""
        problems.append(f"{key}: {item['msg']}{shown}{hint}")
    return "invalid settings: " + "; ".join(problems)


def _env_hint(error: SettingsError) -> str:
    """Which environment variables the unparsable section has (names only: a value may be a
    secret), and how a list is written."""
    named = re.search(r'field "(\w+)" from source "EnvSettingsSource"', str(error))
    if named is None:
        return ""
    prefix = f"{named.group(1).upper()}__"
    variables = sorted(name for name in os.environ if name.upper().startswith(prefix))
    if not variables:
        return ""
    return (
        f" ({', '.join(variables)}: a list or mapping is written as JSON, "
        """e.g. LIFECYCLE__BLACKOUT='["13:25-13:45"]')"""
    )


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read and validate the settings; a bad value raises ConfigurationError naming its key."""
    chosen = settings_file(path)
    token = _yaml_file.set(chosen)
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigurationError(_describe(error)) from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigurationError(f"settings file {chosen} is not valid YAML{at}") from None
    except SettingsError as error:
        # pydantic-settings names the field and the source, never the value.
        raise ConfigurationError(f"invalid settings: {error}{_env_hint(error)}") from None
    except ValueError:
        # The message may quote a value (possibly a token): say only where the problem is.
        raise ConfigurationError(
            f"settings file {chosen} must be a mapping of sections (cloud_sync, github, ...)"
        ) from None
    finally:
        _yaml_file.reset(token)
