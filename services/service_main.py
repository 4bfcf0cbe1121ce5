"""One model service, on its own: what a SpeechModel's pods run in Kubernetes.

    python -m services.service_main --model-file /etc/harmony/model.yaml --port 8080

The file holds one NamedModel (YAML), as the operator writes it into the model's
ConfigMap. The app comes from the same factories ``harmony serve`` uses. SIGTERM drains
(:mod:`services.core.http.draining`): ``/readyz`` answers 503, new model calls are refused with 503
``draining`` (the router retries them on another pod), and in-flight requests finish
(``--drain-timeout``, which the operator sets above the model's ``batching.timeout_s``) before the
process exits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from services.core.contracts.specs import ConfigError, NamedModel, ServerSettings
from services.core.http.server import add_connection_arguments, build_server, connection_settings
from services.core.runtime.logs import add_log_arguments, configure_from


def load_model(path: str | Path) -> NamedModel:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
        return NamedModel.model_validate(data)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the model file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        lines = [f"{path}: invalid model"] + [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                               for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def build_app(model: NamedModel, max_upload_bytes: int = ServerSettings().max_upload_bytes):
    """The FastAPI app of ``model``'s task, with its backend checked (ConfigError names the field)."""
    from services.core.contracts.specs import HarmonyConfig
    from services.model_services import check_backends, service_for

    check_backends(HarmonyConfig(models=[model]))
    return service_for(model.task).create_app([model], max_upload_bytes, None)  # state: $HARMONY_* settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.service_main", description=__doc__.split("\n")[0])
    parser.add_argument("--model-file", required=True, help="YAML file holding one NamedModel")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--max-upload-bytes", type=int, default=ServerSettings().max_upload_bytes)
    parser.add_argument("--drain-timeout", type=float, default=ServerSettings().drain_timeout_s,
                        help="seconds SIGTERM waits for in-flight requests")
    add_connection_arguments(parser, ServerSettings())
    add_log_arguments(parser)
    args = parser.parse_args(argv)

    from services.core.http.draining import drain_on_signal
    from services.core.runtime import tracing
    from services.core.runtime.memory import release_memory_at_start

    release_memory_at_start()  # before the model loads: freed memory goes back to the OS
    try:
        model = load_model(args.model_file)
        tracing.configure_from_env(f"harmony-{model.name}")  # spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
        app = build_app(model, args.max_upload_bytes)
    except ConfigError as exc:
        print(f"harmony: {exc}", file=sys.stderr)
        return 2
    log_level = configure_from(args.log_format, args.log_level)
    settings = ServerSettings(host=args.host, port=args.port, max_upload_bytes=args.max_upload_bytes,
                              drain_timeout_s=args.drain_timeout, **connection_settings(args))
    server = build_server(app, settings, log_level)
    # SIGTERM: /readyz 503, no new model calls, in-flight ones finish; at the drain's end the rest is answered 503
    drain_on_signal(server, app.state.drain, args.drain_timeout)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
