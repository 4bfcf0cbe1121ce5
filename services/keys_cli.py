"""``harmony keys`` and ``harmony db``: API keys and the database, on the configured database."""

from __future__ import annotations

import argparse
import json
import sys
import time

from sqlalchemy.exc import SQLAlchemyError

from services.auth.expiry import parse_expires
from services.auth.keys import ApiKey, KeyStore, iso
from services.auth.limits import Limits, usage_summary
from services.core.contracts.specs import ConfigError, HarmonyConfig, load_config
from services.store.db import Database, open_database


def _csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def add_commands(commands) -> None:
    db = commands.add_parser("db", help="the engine's database (API keys, usage, audit)")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    _common(db_commands.add_parser("upgrade", help="apply the database migrations shipped with this version"))
    _common(db_commands.add_parser("current", help="print the database's migration revision"))

    keys = commands.add_parser("keys", help="create, list, show, revoke API keys; show their usage")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="create a key and print it (once: only its hash is stored)")
    create.add_argument("--name", required=True)
    create.add_argument("--owner", default="")
    create.add_argument("--models", help="comma-separated public model or route names it may use (default: all)")
    create.add_argument("--routes", help="comma-separated API paths it may call, e.g. /v1/audio/speech (default: all)")
    create.add_argument("--rpm", type=int, help="requests per minute (default: unlimited)")
    create.add_argument("--audio-seconds-per-day", type=float)
    create.add_argument("--audio-seconds-per-month", type=float)
    create.add_argument("--expires", help="a date (2027-01-31), a time (2027-01-31T12:00:00Z) or a duration (90d)")
    create.add_argument("--admin", action="store_true", help="may use the admin API (/admin/keys, /admin/usage)")
    listing = sub.add_parser("list", help="every key (never the secrets)")
    listing.add_argument("--active", action="store_true", help="leave out revoked keys")
    for name, text in (("show", "one key and its usage"), ("revoke", "revoke a key (takes effect at once)")):
        sub.add_parser(name, help=text).add_argument("key_id")
    usage = sub.add_parser("usage", help="usage per key and day (UTC); a realtime session is one request, its "
                                         "turns counted and charged as each is transcribed")
    usage.add_argument("key_id", nargs="?")
    usage.add_argument("--since", help="first day, YYYY-MM-DD")
    usage.add_argument("--until", help="last day, YYYY-MM-DD")
    for parser in (create, listing, usage, *(sub.choices[n] for n in ("show", "revoke"))):
        _common(parser)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="the config file of harmony serve (its database and data_dir)")
    parser.add_argument("--database-url", help="overrides the config's database.url")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _database(args) -> Database:
    config = load_config(args.config) if args.config else HarmonyConfig()
    if args.database_url:
        config.database.url = args.database_url
    return open_database(config)


def run_db(args) -> int:
    try:
        db = _database(args)  # opening applies the migrations
    except (ConfigError, SQLAlchemyError) as exc:
        print(f"harmony: {exc}", file=sys.stderr)
        return 2
    print(f"{db!r}: at revision {db.current_revision()}")
    return 0


def run_keys(args) -> int:
    try:
        db = _database(args)
        handler = {"create": _create, "list": _list, "show": _show, "revoke": _revoke, "usage": _usage}
        try:
            return handler[args.keys_command](args, KeyStore(db), Limits(db))
        finally:
            db.dispose()  # its connections closed, also when the command runs inside a longer-lived process
    except ConfigError as exc:
        print(f"harmony: {exc}", file=sys.stderr)
        return 2
    except (ValueError, SQLAlchemyError) as exc:
        print(f"harmony: {exc}", file=sys.stderr)
        return 2


def _create(args, keys: KeyStore, _limits: Limits) -> int:
    expires_at = parse_expires(args.expires)
    if expires_at is not None and expires_at <= time.time():
        raise ValueError(f"--expires {args.expires} is in the past")
    key, secret = keys.create(args.name, args.owner, _csv(args.models), _csv(args.routes), args.rpm,
                              args.audio_seconds_per_day, args.audio_seconds_per_month, expires_at, args.admin)
    if args.json:
        print(json.dumps({**key.public(time.time()), "key": secret}))
    else:
        print(f"Created {key.id} ({key.name}). The key, shown this once:\n\n    {secret}\n")
    return 0


def _line(key: ApiKey) -> str:
    limits = f"rpm={key.rpm if key.rpm is not None else '-'}"
    return (f"{key.id}  {key.prefix}...  {key.state(time.time()):8}  {'admin' if key.admin else 'user ':5}  "
            f"{key.name} ({key.owner or '-'})  models={','.join(key.models) or 'all'}  {limits}  "
            f"expires={iso(key.expires_at) or 'never'}")


def _list(args, keys: KeyStore, _limits: Limits) -> int:
    found = keys.list(include_revoked=not args.active)
    if args.json:
        print(json.dumps([k.public(time.time()) for k in found]))
    for key in [] if args.json else found:
        print(_line(key))
    return 0


def _show(args, keys: KeyStore, limits: Limits) -> int:
    key = keys.get(args.key_id)
    if key is None:
        print(f"harmony: no API key '{args.key_id}'", file=sys.stderr)
        return 1
    data = {**key.public(time.time()), "usage": usage_summary(limits.usage(key.id)).get(key.id, {})}
    print(json.dumps(data, indent=None if args.json else 2))
    return 0


def _revoke(args, keys: KeyStore, _limits: Limits) -> int:
    key = keys.revoke(args.key_id)
    if key is None:
        print(f"harmony: no API key '{args.key_id}'", file=sys.stderr)
        return 1
    print(json.dumps(key.public(time.time())) if args.json
          else f"Revoked {key.id} ({key.name}) at {iso(key.revoked_at)}")
    return 0


def _usage(args, _keys: KeyStore, limits: Limits) -> int:
    rows = limits.usage(args.key_id, args.since, args.until)
    if args.json:
        print(json.dumps({"data": rows, "totals": usage_summary(rows)}))
        return 0
    print("KEY                   DAY         REQUESTS  ERRORS  AUDIO_IN_S  AUDIO_OUT_S  CHARACTERS  REALTIME_TURNS")
    for row in rows:
        print(f"{row['key_id']:20}  {row['day']}  {row['requests']:8}  {row['errors']:6}  "
              f"{row['audio_seconds_in']:10.1f}  {row['audio_seconds_out']:11.1f}  {row['characters']:10}  "
              f"{row['turns']:14}")
    return 0
