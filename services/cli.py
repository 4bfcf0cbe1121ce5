"""The ``harmony`` command."""

from __future__ import annotations

import argparse
import sys

from services.core.runtime.exit_deadline import ExitWhenServed


def main(argv: list[str] | None = None) -> int:
    # `harmony serve` skips the interpreter's teardown once it has stopped (services/core/runtime/exit_deadline.py);
    # armed before the imports below, whose atexit handlers (SQLAlchemy's, multiprocessing's) must run before it
    served = ExitWhenServed().arm() if (sys.argv[1:] if argv is None else argv)[:1] == ["serve"] else None
    parser = argparse.ArgumentParser(prog="harmony", description="Harmony Speech Engine")
    commands = parser.add_subparsers(dest="command", required=True)

    add_serve_command(commands)

    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config")

    commands.add_parser("backends", help="list the installed backends (built-in and plugins) with their task, "
                                         "languages and devices")

    crds = commands.add_parser("crds", help="print the Kubernetes CRDs (SpeechModel, SpeechRoute)")
    crds.add_argument("--out", metavar="DIR", help="write one YAML file per CRD into DIR instead")

    from services.commands import NAMES, run_command
    from services.commands import add_commands as add_client_commands
    from services.keys_cli import add_commands

    add_commands(commands)
    add_client_commands(commands)
    args = parser.parse_args(argv)
    if args.command in NAMES:
        return run_command(args)
    if args.command == "serve":
        from services.core.runtime.memory import release_memory_at_start
        from services.serve import run_serve

        release_memory_at_start()  # before any model loads: freed memory goes back to the OS
        code = run_serve(args.config, args.host, args.port, args.log_level, args.ready_file,
                         args.require_auth, wyoming_flags(args), args.model, log_format=args.log_format)
        return served.done(code) if served is not None else code
    if args.command in ("keys", "db"):
        from services.keys_cli import run_db, run_keys

        return run_keys(args) if args.command == "keys" else run_db(args)
    if args.command == "check-config":
        from services.core.contracts.specs import ConfigError, load_config
        from services.model_services import check_backends

        try:
            config = load_config(args.config)
            check_backends(config)
        except ConfigError as exc:
            print(f"harmony: {exc}", file=sys.stderr)
            return 2
        print(f"{args.config}: {len(config.models)} models, {len(config.routes)} routes: ok")
        return 0
    if args.command == "backends":
        return print_backends()
    if args.command == "crds":
        from services.core.contracts.crd import write_crds

        write_crds(args.out)
        return 0
    return 1


def add_serve_command(commands) -> None:
    serve = commands.add_parser("serve", help="run the router and every model service on this machine")
    serve.add_argument("--config", help="YAML config of models and routes (default: the embedded default)")
    serve.add_argument("--model", action="append", default=[], metavar="MODEL",
                       help="serve this model (repeatable): a Hugging Face id such as Systran/faster-whisper-small "
                            "or rhasspy/piper-voices:en_US-lessac-medium (@revision to pin), an https://, s3://, "
                            "gs:// or oci:// URL, or a path; fetched into the model cache, task and backend read "
                            "from its files. Without --config only these models are served; with it, they are "
                            "added to the config's")
    serve.add_argument("--host", help="address of the public API (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port of the public API (default 8000)")
    from services.core.runtime.logs import add_log_arguments

    add_log_arguments(serve)
    serve.add_argument("--ready-file", help="write the URL to this file once every model is loaded")
    serve.add_argument("--require-auth", action="store_true",
                       help="every API request needs an API key (harmony keys create); same as auth.required")
    serve.add_argument("--wyoming-port", type=int, metavar="PORT",
                       help="also serve the Wyoming protocol for Home Assistant on this port (its usual one: 10300); "
                            "same as wyoming.port")
    serve.add_argument("--wyoming-host", metavar="HOST", help="address of the Wyoming listener (default: --host)")
    serve.add_argument("--wyoming-zeroconf", nargs="?", const="", metavar="NAME",
                       help="announce the Wyoming service on the local network (mDNS _wyoming._tcp) so Home "
                            "Assistant discovers it, optionally under NAME (default harmony-<hostname>)")


def wyoming_flags(args: argparse.Namespace) -> dict:
    """The ``--wyoming-*`` flags given, as fields of the config's ``wyoming`` section."""
    flags: dict = {}
    if args.wyoming_port is not None:
        flags["port"] = args.wyoming_port
    if args.wyoming_host is not None:
        flags["host"] = args.wyoming_host
    if args.wyoming_zeroconf is not None:
        flags["zeroconf"] = True
        if args.wyoming_zeroconf:
            flags["zeroconf_name"] = args.wyoming_zeroconf
    return flags


def print_backends() -> int:
    """One line per installed backend: name, task, languages, devices, and the distribution that registered it."""
    from services.core.contracts.specs import ConfigError
    from services.core.tasks.backends import BackendRegistry

    try:
        backends = BackendRegistry.installed().all()
    except ConfigError as exc:
        print(f"harmony: {exc}", file=sys.stderr)
        return 2
    rows = [("BACKEND", "TASK", "LANGUAGES", "DEVICES", "PACKAGE", "DESCRIPTION")]
    rows += [(b.name, b.task.value, ",".join(b.languages) or "from the model", ",".join(b.devices),
              b.distribution, b.description) for b in backends]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[5])
    return 0


if __name__ == "__main__":
    sys.exit(main())
