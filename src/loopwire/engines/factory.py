"""Building an engine from its name and loose options, as a command line or a config file gives them.

Owns the list of engine names, which settings class each takes, and turning option strings into the
settings' types; must not parse command lines.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from typing import Any

from .base import Engine
from .common.options import refuse_unknown

ENGINE_NAMES = ("sim", "openai-chat", "responses", "local")
_TRUE, _FALSE = {"on", "true", "yes", "1"}, {"off", "false", "no", "0"}


def coerce(settings_class: type, options: dict[str, Any]) -> dict[str, Any]:
    """String values become the type of the field's default (bool, int, float, a JSON object for mappings);
    values that are not strings, and fields without a typed default, pass through unchanged."""
    defaults: dict[str, Any] = {}
    for item in fields(settings_class):
        if item.default is not MISSING:
            defaults[item.name] = item.default
        elif item.default_factory is not MISSING:
            defaults[item.name] = item.default_factory()
    coerced: dict[str, Any] = {}
    for name, value in options.items():
        default = defaults.get(name)
        if not isinstance(value, str) or default is None or isinstance(default, str | frozenset):
            coerced[name] = value
        elif isinstance(default, bool):
            lowered = value.strip().lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError(f"option {name} takes on or off, got {value!r}")
            coerced[name] = lowered in _TRUE
        elif isinstance(default, int | float):
            try:
                coerced[name] = type(default)(value)
            except ValueError:
                raise ValueError(f"option {name} takes a number, got {value!r}") from None
        elif isinstance(default, dict):
            try:
                coerced[name] = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError(f"option {name} takes a JSON object, got {value!r}") from None
        else:
            coerced[name] = value
    return coerced


def check_options(name: str, options: dict[str, Any]) -> None:
    """Raise ValueError for options `build_engine` would refuse, without building anything."""
    _build(name, options, build=False)


def build_engine(name: str, **options: Any) -> Engine:
    """A ready engine. `sim` takes the fields of SimSettings; `openai-chat` those of OpenAIChatSettings
    (`upstream="http://a/v1,http://b/v1"` or `upstreams=[...]`, `api_key`, `model`, timeouts, ...);
    `responses` those of ResponsesSettings (`upstream="https://api.openai.com/v1"`, `transport`, `store`,
    ...); `local` those of LocalSettings (`model` a local directory, `device`, `kv_budget_bytes`, ...; with
    `upstream`, the token-id mode in front of a llama-server).
    Option values may be strings. A bad name or option is a ValueError that names what is accepted."""
    engine = _build(name, options, build=True)
    assert engine is not None
    return engine


def _build(name: str, options: dict[str, Any], *, build: bool) -> Engine | None:
    if name == "sim":
        from .sim.engine import SimEngine, SimSettings

        refuse_unknown("sim", SimSettings, options)
        sim = SimSettings(**coerce(SimSettings, options))
        return SimEngine(sim) if build else None
    if name == "openai-chat":
        from .openai_chat import OpenAIChatEngine, OpenAIChatSettings

        chat = OpenAIChatSettings.from_options(**coerce(OpenAIChatSettings, options))
        return OpenAIChatEngine(chat) if build else None
    if name == "responses":
        from .responses_upstream import ResponsesEngine, ResponsesSettings

        responses = ResponsesSettings.from_options(**coerce(ResponsesSettings, options))
        return ResponsesEngine(responses) if build else None
    if name == "local":
        return _build_local(options, build=build)
    raise ValueError(f"unknown engine {name!r}; this build offers: {', '.join(ENGINE_NAMES)}")


def _build_local(options: dict[str, Any], *, build: bool) -> Engine | None:
    """Checks settings, the model directory and the device (torch is imported only for an accelerator), so
    a bad one fails before the server starts; only building loads the model."""
    from .local.device import check_device, needs_torch
    from .local.model_dir import check_model
    from .local.settings import LocalSettings

    refuse_unknown("local", LocalSettings, options)
    if "model" not in options:
        raise ValueError("the local engine needs a model: --model DIR or --model FILE.gguf")
    settings = LocalSettings(**coerce(LocalSettings, options))
    check_model(settings.model)
    if settings.upstream:
        if not build:
            return None
        try:
            from .local.upstream_engine import LocalUpstreamEngine
        except ImportError as error:
            raise needs_torch(error) from None
        return LocalUpstreamEngine(settings)
    check_device(settings.device)
    if not build:
        return None
    try:
        from .local.engine import LocalEngine
    except ImportError as error:
        raise needs_torch(error) from None
    return LocalEngine(settings)
