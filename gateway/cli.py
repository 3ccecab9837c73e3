"""The ``gateway`` command: serve, migrate, seed, export-schema."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import uvicorn
from pydantic import ValidationError
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.connections import StoreUrls
from core.settings import Settings
from datasources import api_keys
from datasources.models import Role
from gateway import migrate
from gateway.embedded import DataDirectoryInUseError, EmbeddedStores
from gateway.embedded.process import ServerStartError
from gateway.runtime import running_stores

logger = logging.getLogger("gateway")
# Seconds the application's shutdown (background work, clients, embedded servers) may take
# beyond one store call, once the requests' time is up; past it the process exits anyway.
STOP_ALLOWANCE = 5.0


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        problems = "; ".join(_describe(problem) for problem in error.errors())
        print(f"gateway: invalid configuration: {problems}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        result: int = arguments.handler(arguments, settings)
    except (DataDirectoryInUseError, ServerStartError) as error:
        print(f"gateway: {error}", file=sys.stderr)
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

    export = commands.add_parser("export-schema", help="print the GraphQL SDL")
    export.add_argument("--output", type=Path, help="write to this file instead of stdout")
    export.set_defaults(handler=_export_schema)
    return parser


def _serve(arguments: argparse.Namespace, settings: Settings) -> int:
    overrides = {
        name: value
        for name, value in (("host", arguments.host), ("port", arguments.port))
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
    from gateway.app import create_app  # noqa: PLC0415 - only `serve` needs the web stack

    # Whole seconds for uvicorn: rounded up, so no request gets less than promised.
    graceful = math.ceil(settings.shutdown_timeout)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        lifespan="on",
        http=DrainingHttpProtocol,
        # Requests still running then are cancelled: safe here, unlike on a request path,
        # since the pools whose connections they hold are about to be closed anyway.
        timeout_graceful_shutdown=graceful,
    )
    server = GatewayServer(config)
    threading.Thread(
        target=_exit_if_stuck,
        args=(server.signalled, graceful + settings.store_timeout + STOP_ALLOWANCE),
        name="shutdown-deadline",
        daemon=True,
    ).start()
    # Once shut down, uvicorn raises the signal it caught again, with the handler it had
    # replaced: a SIGTERM ends the process there, a SIGINT comes back as KeyboardInterrupt.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0


class GatewayServer(uvicorn.Server):
    """uvicorn's server, which also lets the shutdown deadline know when a signal came."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.signalled = threading.Event()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.signalled.set()
        super().handle_exit(sig, frame)


class DrainingHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 connection, which does not drop a request when shutdown begins.

    uvicorn closes every connection that is between requests the moment it shuts down. A
    request the client has already sent on it, but that the server has not read yet, is
    lost: under load there are many. Instead, such a connection stays open until its
    keep-alive time runs out, as at any other time, and a request that arrives meanwhile
    is answered with ``Connection: close``. A connection accepted with no request read
    yet gets the same time to send one.
    """

    draining = False

    def shutdown(self) -> None:
        self.draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        elif self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.draining:
            self.cycle.keep_alive = False


def _exit_if_stuck(signalled: threading.Event, seconds: float) -> None:
    """Exit once shutdown has run past its time, whatever a request or the loop is doing.

    A thread, not a task: a request that blocks the event loop must not block this. The
    watchdog then stops the embedded servers that the interrupted shutdown left running.
    """
    signalled.wait()
    time.sleep(seconds)
    logger.error("shutdown did not finish within %.0f s of the signal; exiting now", seconds)
    os._exit(1)


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
                print("revoked")
            else:
                for key in await api_keys.list_keys(engine=engine):
                    state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
                    print(f"{key.id}\t{key.prefix}…\t{key.role}\t{key.name}\t{state}")
        return 0

    return asyncio.run(run())


def _export_schema(arguments: argparse.Namespace, _: Settings) -> int:
    from gateway.schema import export_sdl  # noqa: PLC0415

    sdl = export_sdl()
    if arguments.output is None:
        sys.stdout.write(sdl)
    else:
        arguments.output.write_text(sdl)
    return 0
