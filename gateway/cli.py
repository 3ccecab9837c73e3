"""The ``gateway`` command: serve, migrate, seed, apikey, persisted, explain, export-schema."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url

from core.auth import KEY_CHECKED_FOR
from core.settings import Settings
from core.store_urls import StoreUrls
from core.stores import not_answering
from datasources import api_keys
from datasources.models import Role
from datasources.persisted_queries import allow_queries
from gateway import migrate
from gateway.embedded import DataDirectoryInUseError, EmbeddedStores
from gateway.embedded.process import ServerStartError
from gateway.runtime import UnreachableStoreError, running_stores
from gateway.server import configure_logging, serve


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        problems = "; ".join(_describe(problem) for problem in error.errors())
        print(f"gateway: invalid configuration: {problems}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        result: int = arguments.handler(arguments, settings)
    except (DataDirectoryInUseError, ServerStartError, UnreachableStoreError) as error:
        print(f"gateway: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        # A store that refuses the connection, its TLS or its password is the operator's
        # to fix, from one line; any other error is a bug, with its traceback.
        backend = make_url(settings.database_url or "postgresql://").get_backend_name()
        message = not_answering(
            error,
            backend,
            StoreUrls(settings.database_url, settings.mongo_url, settings.redis_url),
        )
        if message is None:
            raise
        print(f"gateway: {message}", file=sys.stderr)
        return 1
    return result


def _describe(problem: object) -> str:
    assert isinstance(problem, dict)
    location = ".".join(str(part) for part in problem.get("loc", ()))
    message = str(problem.get("msg", "")).removeprefix("Value error, ")
    return f"GATEWAY_{location.upper()}: {message}" if location else message


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve GraphQL (embedded stores if no URL is set)")
    serve.add_argument("--host", help="overrides GATEWAY_HOST")
    serve.add_argument("--port", type=int, help="overrides GATEWAY_PORT")
    serve.add_argument(
        "--workers",
        type=_worker_count,
        help="processes serving one port; overrides GATEWAY_WORKERS",
    )
    serve.set_defaults(handler=_serve)

    migration = commands.add_parser("migrate", help="migrate the PostgreSQL and MongoDB schemas")
    steps = migration.add_subparsers(dest="step")
    upgrade = steps.add_parser("upgrade", help="to the newest schema (the default)")
    upgrade.add_argument("revision", nargs="?", default="head")
    downgrade = steps.add_parser(
        "downgrade", help="the relational schema to REV; 'base' also reverts MongoDB's"
    )
    downgrade.add_argument("revision")
    steps.add_parser("current", help="print the applied versions")
    migration.set_defaults(handler=_migrate, step="upgrade", revision="head")

    seed = commands.add_parser("seed", help="fill all three stores with deterministic demo data")
    seed.add_argument("--reports", type=int, default=1000, help="how many reports (default 1000)")
    seed.add_argument(
        "--random-seed", type=int, default=1, help="the same seed gives the same data"
    )
    seed.add_argument("--no-progress", action="store_true", help="no progress bar")
    seed.set_defaults(handler=_seed)

    keys = commands.add_parser("apikey", help="manage API keys")
    key_commands = keys.add_subparsers(dest="key_command", required=True)
    create = key_commands.add_parser("create", help="create a key; it is printed once")
    create.add_argument("--role", required=True, choices=[role.value for role in Role])
    create.add_argument("--name", default="unnamed", help="what the key is for")
    revoke = key_commands.add_parser("revoke", help="revoke a key by id, prefix or key")
    revoke.add_argument("key")
    key_commands.add_parser("list", help="list keys (never the keys themselves)")
    keys.set_defaults(handler=_apikey)

    persisted = commands.add_parser("persisted", help="manage the allow-list of persisted queries")
    persisted_commands = persisted.add_subparsers(dest="persisted_command", required=True)
    add = persisted_commands.add_parser(
        "add",
        help="add the operations of a file: Apollo's persisted-query manifest, or a JSON "
        "object of documents by SHA-256",
    )
    add.add_argument("file", type=Path)
    persisted.set_defaults(handler=_persisted)

    explain = commands.add_parser(
        "explain",
        help="run a query as an admin and print what each store ran for it, with the stores' plans",
    )
    explain.add_argument("file", type=Path, help="a file holding the query document")
    explain.add_argument("--variables", type=_json_object, help="its variables, as JSON")
    explain.add_argument("--operation-name", help="which operation, if the file has several")
    explain.set_defaults(handler=_explain)

    export = commands.add_parser("export-schema", help="print the GraphQL SDL")
    export.add_argument("--output", type=Path, help="write to this file instead of stdout")
    export.set_defaults(handler=_export_schema)
    return parser


def _serve(arguments: argparse.Namespace, settings: Settings) -> int:
    overrides = {
        name: value
        for name, value in (
            ("host", arguments.host),
            ("port", arguments.port),
            ("workers", arguments.workers),
        )
        if value is not None
    }
    settings = settings.model_copy(update=overrides)
    # The application checks this again when it starts; asking first turns the common
    # mistake into one line instead of a traceback from the server's start-up.
    owner = EmbeddedStores(settings.data_dir, StoreUrls()).owner()
    if owner is not None and None in (
        settings.database_url,
        settings.mongo_url,
        settings.redis_url,
    ):
        raise DataDirectoryInUseError(settings.data_dir.resolve(), owner)
    if settings.workers > 1:
        from gateway.workers import supervise  # noqa: PLC0415 - only with several workers

        return supervise(settings)
    from gateway.app import create_app  # noqa: PLC0415 - only `serve` needs the web stack

    serve(create_app(settings), settings)
    return 0


def _worker_count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value!r}")
    return int(value)


def _migrate(arguments: argparse.Namespace, settings: Settings) -> int:
    async def run() -> None:
        async with running_stores(settings, attach=True) as connections:
            if arguments.step == "upgrade":
                await migrate.upgrade(
                    connections.engine, connections.documents, revision=arguments.revision
                )
            elif arguments.step == "downgrade":
                await migrate.downgrade(
                    connections.engine, connections.documents, revision=arguments.revision
                )
            versions = await migrate.versions(connections.engine, connections.documents)
            print(f"postgresql: {versions.relational or 'base'} (head {versions.relational_head})")
            print(f"mongodb: {versions.documents} (head {versions.documents_head})")

    asyncio.run(run())
    return 0


def _seed(arguments: argparse.Namespace, settings: Settings) -> int:
    from gateway.seed import seed  # noqa: PLC0415 - the generator is only needed here

    if arguments.reports < 0:
        print("gateway: --reports must not be negative", file=sys.stderr)
        return 2

    async def run() -> None:
        async with running_stores(settings, attach=True, apply_migrations=True) as connections:
            counts = await seed(
                connections,
                reports=arguments.reports,
                random_seed=arguments.random_seed,
                progress=not arguments.no_progress,
            )
        print(", ".join(f"{count} {name}" for name, count in counts.items()))

    asyncio.run(run())
    return 0


def _apikey(arguments: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        async with running_stores(settings, attach=True, apply_migrations=True) as connections:
            engine = connections.engine
            secret = settings.secret_key.get_secret_value()
            if arguments.key_command == "create":
                issued = await api_keys.create_key(
                    engine=engine, secret=secret, name=arguments.name, role=Role(arguments.role)
                )
                print(f"key {issued.id} ({issued.role.value}): {issued.key}")
                print("store it now: it is not shown again", file=sys.stderr)
            elif arguments.key_command == "revoke":
                if not await api_keys.revoke_key(
                    engine=engine, secret=secret, key_or_id=arguments.key
                ):
                    print(f"gateway: no active key matches {arguments.key!r}", file=sys.stderr)
                    return 1
                try:
                    await api_keys.announce_revocation(redis=connections.redis)
                except (RedisError, OSError):
                    print(
                        f"revoked; running gateways refuse it within {KEY_CHECKED_FOR:g}s "
                        "(Redis is unavailable to tell them at once)",
                        file=sys.stderr,
                    )
                    return 0
                print("revoked")
            else:
                for key in await api_keys.list_keys(engine=engine):
                    state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
                    print(f"{key.id}\t{key.prefix}…\t{key.role}\t{key.name}\t{state}")
        return 0

    return asyncio.run(run())


def _persisted(arguments: argparse.Namespace, settings: Settings) -> int:
    from gateway.limits import Limits  # noqa: PLC0415 - the schema is only needed here
    from gateway.persisted_queries import allow_list_of  # noqa: PLC0415
    from gateway.schema import operation_cache  # noqa: PLC0415

    try:
        text = arguments.file.read_text(encoding="utf-8")
        allowed = allow_list_of(text, operation_cache(Limits.from_settings(settings)))
    except (OSError, ValueError) as error:
        print(f"gateway: {arguments.file}: {error}", file=sys.stderr)
        return 1

    async def run() -> None:
        async with running_stores(settings, attach=True, apply_migrations=True) as connections:
            await allow_queries(engine=connections.engine, queries=allowed)

    asyncio.run(run())
    print(f"{len(allowed)} operations in the allow-list")
    return 0


def _explain(arguments: argparse.Namespace, settings: Settings) -> int:
    from gateway.explain import ExplainRefusedError, explain_document  # noqa: PLC0415

    try:
        query = arguments.file.read_text(encoding="utf-8")
    except OSError as error:
        print(f"gateway: {arguments.file}: {error}", file=sys.stderr)
        return 1

    async def run() -> dict[str, Any]:
        async with running_stores(settings, attach=True) as connections:
            return await explain_document(
                settings, connections, query, arguments.variables, arguments.operation_name
            )

    try:
        answer = asyncio.run(run())
    except ExplainRefusedError as refused:
        print(f"gateway: {arguments.file}: {refused}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    return 0


def _json_object(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from error
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return parsed


def _export_schema(arguments: argparse.Namespace, _: Settings) -> int:
    from gateway.schema import export_sdl  # noqa: PLC0415

    sdl = export_sdl()
    if arguments.output is None:
        sys.stdout.write(sdl)
    else:
        arguments.output.write_text(sdl)
    return 0
