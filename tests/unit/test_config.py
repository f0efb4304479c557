from __future__ import annotations

from pathlib import Path

import pytest

from interference.cli import _configure, _parser
from interference.cli import main as cli_main
from interference.config import (
    Config,
    ConfigError,
    RemoteProviderConfig,
    config_from_dict,
    load_config,
)

FULL = """
server:
  host: 127.0.0.1
  port: 8080
  max_body_bytes: 100000
  log_level: debug
providers:
  embedded:
    kind: local
    model: smollm2-135m-instruct
    id: tiny
    aliases: [small]
    parallel: 2
    context: 1024
    sampling:
      temperature: ${TEMP}
      top_p: 0.8
  cloud:
    kind: openai
    base_url: https://api.example.com/v1/
    api_key: ${TEMP}
    timeouts: {connect: 2, first_token: 5, idle: 3, total: 60}
models:
  gpt-4o:
    deployments:
      - provider: cloud
        model: gpt-4o-2024-08-06
        weight: 2
        max_concurrency: 8
      - provider: embedded
    fallbacks: [tiny]
openai_aliases: false
aliases:
  chat: tiny
routing:
  strategy: ordered
  max_attempts: 3
  cooldown: {failures: 2, seconds: 10}
"""


def test_full_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMP", "0.4")
    path = tmp_path / "c.yaml"
    path.write_text(FULL)
    config = load_config(path)
    assert config.server.port == 8080
    model = config.local_providers["embedded"]
    assert (model.id, model.parallel, model.context, model.aliases) == ("tiny", 2, 1024, ["small"])
    assert model.sampling is not None
    assert model.sampling.temperature == 0.4
    cloud = config.providers["cloud"]
    assert isinstance(cloud, RemoteProviderConfig)
    assert cloud.base_url == "https://api.example.com/v1"
    assert cloud.api_key == "0.4"
    assert cloud.timeouts.first_token == 5
    deployment = config.models["gpt-4o"].deployments[0]
    assert (deployment.provider, deployment.model, deployment.weight) == (
        "cloud",
        "gpt-4o-2024-08-06",
        2,
    )
    assert config.models["gpt-4o"].fallbacks == ["tiny"]
    assert config.routing.strategy == "ordered"
    assert config.routing.cooldown.failures == 2
    assert config.openai_aliases is False
    assert config.aliases == {"chat": "tiny"}


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("server:\n  port: high\n", ["server.port", "integer"]),
        ("server:\n  prot: 1\n", ["server.prot", "unknown field"]),
        (
            "providers:\n  l: {kind: local, parallel: 0}\n",
            ["providers.l.parallel", "greater than or equal to 1"],
        ),
        (
            "providers:\n  l: {kind: local, sampling: {temperature: 5}}\n",
            ["providers.l.sampling.temperature"],
        ),
        (
            "providers:\n  l: {kind: local, weights: q2_k}\n",
            ["providers.l.weights", "'q8_0'"],
        ),
        (
            "providers:\n  l: {kind: local, sampling: {samplers: [top_k, magic]}}\n",
            ["providers.l.sampling.samplers.1"],
        ),
        ("providers: {}\n", ["at least one provider"]),
        ("providers:\n  x: {kind: opnai, base_url: 'http://h'}\n", ["providers.x", "'openai'"]),
        (
            "providers:\n  x: {kind: openai, base_url: 'ftp://h'}\n",
            ["providers.x", "http:// or https://"],
        ),
        ("providers:\n  x: {kind: openai}\n", ["providers.x.base_url", "required"]),
        (
            "models:\n  m: {deployments: [{provider: nope}]}\n",
            ["models.m.deployments.0.provider", "`nope`"],
        ),
        ("models:\n  m: {deployments: []}\n", ["models.m.deployments"]),
        ("routing:\n  strategy: fastest\n", ["routing.strategy", "least-busy"]),
        ("- a\n- b\n", ["top level must be a mapping"]),
        ("server: [\n", ["not valid YAML"]),
        (
            "models:\n  - model: ${NOT_SET_ANYWHERE_42}\n",
            ["NOT_SET_ANYWHERE_42", "models[0].model"],
        ),
    ],
)
def test_errors_name_the_file_and_field(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config("/nonexistent/interference.yaml")


def test_command_line_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMP", "0.4")
    path = tmp_path / "c.yaml"
    path.write_text(FULL)
    args = _parser().parse_args(
        [
            "serve",
            "--config",
            str(path),
            "--port",
            "9999",
            "--parallel",
            "16",
            "--log-level",
            "warning",
        ]
    )
    config = _configure(args)
    assert config.server.port == 9999
    assert config.server.log_level == "warning"
    assert config.local_providers["embedded"].parallel == 16
    assert config.local_providers["embedded"].id == "tiny"
    assert "cloud" in config.providers


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTERFERENCE_CONFIG", raising=False)
    config = _configure(_parser().parse_args(["serve", "--model", "/some/file.gguf"]))
    assert config == Config.model_validate(
        {"providers": {"local": {"kind": "local", "model": "/some/file.gguf"}}}
    )
    assert (config.server.host, config.server.port) == ("127.0.0.1", 1337)
    assert config.providers["local"].weights == "q8_0"  # type: ignore[union-attr]


def test_config_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("server:\n  port: 1400\n")
    assert cli_main(["config", "check", str(good)]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: -1\n")
    assert cli_main(["config", "check", str(bad)]) == 2
    assert "server.port" in capsys.readouterr().err


def test_the_documented_configurations_are_valid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import re

    root = Path(__file__).resolve().parents[2]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    # ```yaml blocks are interference configurations (other tools' YAML is shown as ```yml)
    found = [
        (page.relative_to(root).as_posix(), block)
        for page in pages
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S)
    ]
    names = ("OPENAI_API_KEY", "GROQ_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY")
    for name in (*names, "INTERFERENCE_KEY_ALICE", "INTERFERENCE_KEY_BOB"):
        monkeypatch.setenv(name, "test")
    import yaml

    from interference.config import config_from_dict

    # the example's certificate authority is a file on the reader's machine: one stands in here
    ca_bundle = tmp_path / "internal-ca.pem"
    ca_bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    blocks = [
        (name, block.replace("/etc/ssl/internal-ca.pem", str(ca_bundle))) for name, block in found
    ]
    assert len(blocks) >= 3
    for name, block in blocks:  # every configuration shown is valid (the multi-core ones too)
        config_from_dict(yaml.safe_load(block), name)
    name, example = next((name, block) for name, block in blocks if "routing:" in block)
    config = config_from_dict(yaml.safe_load(example), name)
    assert set(config.providers) == {
        "local",
        "openai",
        "groq",
        "ollama",
        "corporate",
        "claude",
        "gemini",
    }
    assert config.models["gpt-4o"].fallbacks == ["smollm2-135m-instruct"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--parallel", "3"], "parallel must be a power of two"),
        (["--parallel", "0"], "parallel: Input should be greater than or equal to 1"),
        (["--context", "10"], "context: Input should be greater than or equal to 128"),
        (["--port", "70000"], "port: Input should be less than or equal to 65535"),
    ],
)
def test_command_line_overrides_are_validated_like_the_file(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _configure(_parser().parse_args(["serve", *argv]))
    assert "the command line" in str(raised.value)
    assert message in str(raised.value)


def test_slots_must_be_a_power_of_two_only_with_embeddings() -> None:
    with pytest.raises(ConfigError, match="set `embeddings: false` to use 6 slots"):
        config_from_dict({"providers": {"local": {"kind": "local", "parallel": 6}}}, "x.yaml")
    config = config_from_dict(
        {"providers": {"local": {"kind": "local", "parallel": 6, "embeddings": False}}}, "x.yaml"
    )
    assert config.local_providers["local"].parallel == 6


def test_every_remote_kind_has_a_provider_and_every_provider_a_kind() -> None:
    """The kinds are listed once (config.RemoteKind); each names its module and class."""
    from typing import get_args

    from interference.config import RemoteKind
    from interference.providers import REMOTE_KINDS
    from interference.providers.anthropic import AnthropicProvider

    assert set(REMOTE_KINDS) == set(get_args(RemoteKind))
    assert REMOTE_KINDS["anthropic"] is AnthropicProvider
    assert all(provider.kind == kind for kind, provider in REMOTE_KINDS.items())
