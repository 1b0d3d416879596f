"""`trillium-fl-client`: one federated client process (registers, trains each round, exits on FINISH)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import grpc

from trillium.federated.service.client_runtime import FederatedClient, load_client_data

TOKEN_ENV = "TRILLIUM_FL_TOKEN"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trillium-fl-client", description=__doc__)
    parser.add_argument("--coordinator", required=True, metavar="HOST:PORT", help="coordinator address")
    parser.add_argument("--token", default=None, help=f"bearer token (default: env {TOKEN_ENV})")
    parser.add_argument("--dataset", default="digits", help="offline dataset (digits)")
    parser.add_argument("--partition", default="dirichlet:0.3", help="iid, dirichlet:<alpha> or labels:<k>")
    parser.add_argument("--client-index", type=int, required=True, help="this client's shard, 0-based")
    parser.add_argument("--num-clients", type=int, required=True, help="number of shards")
    parser.add_argument("--seed", type=int, default=0, help="partition seed (the same for every client)")
    parser.add_argument("--name", default="", help="client name shown in the coordinator's logs")
    parser.add_argument("--rpc-timeout", type=float, default=30.0, help="deadline of each RPC, seconds")
    parser.add_argument(
        "--max-outage-seconds", type=float, default=120.0, help="how long to retry an unreachable coordinator"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    try:
        data = load_client_data(args.dataset, args.partition, args.client_index, args.num_clients, args.seed)
    except ValueError as error:
        print(f"trillium-fl-client: {error}", file=sys.stderr)
        return 2
    name = args.name or f"client-{args.client_index}"
    with FederatedClient(
        args.coordinator,
        token,
        data,
        args.dataset,
        name=name,
        rpc_timeout=args.rpc_timeout,
        max_outage_seconds=args.max_outage_seconds,
    ) as client:
        try:
            report = client.run()
        except grpc.RpcError as error:
            print(f"trillium-fl-client: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(f"{name}: trained rounds {report.rounds_trained}", file=sys.stderr)
    return 0 if report.finished else 1
