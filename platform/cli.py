"""The `sagecraft` command: `train` and `serve` as SageMaker runs them, anything else is executed.

SageMaker starts training with `docker run IMAGE train` and hosting with `docker run IMAGE serve`;
`docker run IMAGE bash` (or any other command) runs that command instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import sys

from .environment import SageMakerPaths, ServingSettings
from .errors import SagecraftError

COMMANDS = ("train", "serve", "plugins", "hyperparameters", "metrics")


def _configure_logging() -> None:
    level = os.environ.get("SAGECRAFT_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sagecraft",
        description="Train and serve tabular models under the SageMaker container contract. "
        "Any other command is executed as given.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("train", help="run a training job from $SAGEMAKER_BASE_DIR (/opt/ml)")
    commands.add_parser("serve", help="serve $SAGEMAKER_BASE_DIR/model on port 8080")
    plugins = commands.add_parser("plugins", help="list the installed algorithm plugins")
    plugins.add_argument("--json", action="store_true", help="as JSON, with what each algorithm declares")
    table = commands.add_parser(
        "hyperparameters", help="print an algorithm's hyperparameters as a Markdown table"
    )
    table.add_argument("algorithm", help="an installed algorithm, or 'sagecraft' for the core's")
    metrics = commands.add_parser(
        "metrics", help="print the MetricDefinitions (JSON) a tuning job needs for an algorithm's metrics"
    )
    metrics.add_argument("algorithm", help="an installed algorithm")
    return parser


def _plugins_json() -> int:
    from .plugins import installed_plugins

    plugins = installed_plugins()
    entries = []
    for name, record in sorted(plugins.records.items()):
        entry: dict[str, object] = {
            "name": name,
            "distribution": record.source.distribution,
            "version": record.source.version,
            "hooks": list(record.hooks),
            "content_types": list(record.content_types),
        }
        if name in plugins.algorithms:
            info = plugins.algorithms[name].info
            entry["algorithm"] = {
                "description": info.description,
                "api_version": info.api_version,
                "several_hosts": info.several_hosts,
                "checkpoints": info.checkpoints,
                "metrics": list(info.metrics),
                "metric_channels": list(info.metric_channels),
                "hyperparameters": [h.name for h in info.hyperparameters],
            }
        entries.append(entry)
    entries += [{"name": name, "problem": problem} for name, problem in sorted(plugins.problems.items())]
    print(json.dumps(entries, indent=2))
    return 0


def _list_plugins() -> int:
    from .plugins import installed_plugins

    plugins = installed_plugins()
    for name, record in sorted(plugins.records.items()):
        source = record.source
        print(f"{name}  ({source.distribution} {source.version}, {source.target})")
        if name in plugins.algorithms:
            print(f"  algorithm: {plugins.algorithms[name].info.description}")
        if record.content_types:
            print(f"  content types: {', '.join(record.content_types)}")
        print(f"  hooks: {', '.join(record.hooks)}")
    for name, problem in sorted(plugins.problems.items()):
        print(f"{name}  UNAVAILABLE: {problem}")
    return 0


def _metric_definitions(algorithm: str) -> int:
    from .metrics import metric_definitions
    from .plugins import installed_plugins

    try:
        info = installed_plugins().algorithm(algorithm).info
    except SagecraftError as exc:
        print(f"sagecraft: {exc}", file=sys.stderr)
        return 2
    if not info.metrics:
        print(
            f"sagecraft: algorithm '{algorithm}' declares no metrics (AlgorithmInfo.metrics)", file=sys.stderr
        )
        return 1
    print(json.dumps(metric_definitions(info.metrics, info.metric_channels), indent=2))
    return 0


def _hyperparameters(algorithm: str) -> int:
    from .hyperparameter_table import markdown_table
    from .plugins import installed_plugins
    from .training.trainer import CORE_HYPERPARAMETERS

    if algorithm == "sagecraft":
        print(markdown_table(CORE_HYPERPARAMETERS))
        return 0
    try:
        declarations = installed_plugins().algorithm(algorithm).info.hyperparameters
    except SagecraftError as exc:
        print(f"sagecraft: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(declarations))
    return 0


def _exec(argv: list[str]) -> int:
    program = shutil.which(argv[0])
    if program is None:
        print(f"sagecraft: unknown command '{argv[0]}'; use one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    os.execv(program, argv)
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        return _exec(argv)
    args = _parser().parse_args(argv)
    _configure_logging()
    if args.command == "train":
        from .training.trainer import run_training

        return run_training(SageMakerPaths.from_environment())
    if args.command == "serve":
        try:
            settings = ServingSettings.from_environment()
            # Listen before the heavy imports: SageMaker expects a connection within 250 ms.
            listener = socket.create_server((settings.host, settings.port), backlog=1024)
        except (SagecraftError, OSError) as exc:
            logging.getLogger("sagecraft").error("cannot serve: %s", exc)
            return 1
        from .serving.lifecycle import run_server

        return run_server(settings, SageMakerPaths.from_environment().model_dir, listener)
    if args.command == "hyperparameters":
        return _hyperparameters(args.algorithm)
    if args.command == "metrics":
        return _metric_definitions(args.algorithm)
    return _plugins_json() if args.json else _list_plugins()


if __name__ == "__main__":
    sys.exit(main())
