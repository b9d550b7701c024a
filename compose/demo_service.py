"""The compose stack's demo service: deploy it into the Cloud Run emulator once, and tell its URL.

    python demo_service.py deploy [--endpoint URL] [--service NAME]   create it unless it exists
    python demo_service.py uri    [--endpoint URL] [--service NAME]   print its router URL

`remediator up` deploys the demo service itself as soon as its emulator answers. In compose.yaml the
emulator is a container of its own, so the one-shot `demo-service` job runs `deploy`, and the load
generator asks `uri` where to send its traffic: the emulator picks each router's port when the
service is created, so the URL cannot be written into compose.yaml. Both run in the emulator's
network namespace, where the URL it hands out (http://127.0.0.1:PORT) is valid.

The service is deployed by the stack runner's own code (`LocalStack.deploy_demo_service`), so the
containers serve the same service as `remediator up`: the same capacity, and two healthy revisions,
the older one being what a rollback goes back to.

Exit status: 0 done, 1 the emulator refused or could not be reached, 3 (`uri`) no such service.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from google.api_core import exceptions as google_exceptions

from collector import CloudRunClients
from remediator.stack import PROJECT, REGION, LocalStack, StackOptions

DEFAULT_ENDPOINT = "http://127.0.0.1:8090"
NOT_FOUND = 3


def existing_uri(clients: CloudRunClients, service: str) -> str | None:
    try:
        return str(clients.services.get_service(name=clients.service_name(service)).uri)
    except google_exceptions.NotFound:
        return None


async def deploy(endpoint: str, service: str) -> str:
    """The service's URL, after creating it when the emulator does not have it yet."""
    stack = LocalStack(StackOptions(service=service), say=lambda line: print(line, flush=True))
    try:
        stack.clients = CloudRunClients.create(project=PROJECT, region=REGION, endpoint=endpoint)
        # A second run of the job (compose up after a stop) must not create it twice: the emulator
        # would answer 409, and the running revisions would be left as they are anyway.
        uri = await asyncio.to_thread(existing_uri, stack.clients, service)
        if uri is not None:
            print(f"demo service {service} already exists", flush=True)
            return uri
        deployed = await stack.deploy_demo_service(service, stack.options.profile)
        print(f"demo service {service}: revisions {', '.join(reversed(deployed.revisions))}", flush=True)
        return deployed.uri
    finally:
        await stack.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo_service.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["deploy", "uri"])
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help="the emulator's Admin API")
    parser.add_argument("--service", default=StackOptions.service, help="service name")
    args = parser.parse_args(argv)
    try:
        if args.command == "deploy":
            print(asyncio.run(deploy(args.endpoint, args.service)), flush=True)
            return 0
        clients = CloudRunClients.create(project=PROJECT, region=REGION, endpoint=args.endpoint)
        try:
            uri = existing_uri(clients, args.service)
        finally:
            clients.close()
    except (google_exceptions.GoogleAPIError, OSError) as exc:
        print(f"demo_service.py: {args.command} failed: {exc}", file=sys.stderr)
        return 1
    if uri is None:
        print(f"demo_service.py: no service {args.service} at {args.endpoint}", file=sys.stderr)
        return NOT_FOUND
    print(uri, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
