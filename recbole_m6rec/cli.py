"""Train and evaluate any RecBole model or plugin model, like RecBole's own ``run_recbole.py``.

    recbole-m6rec --model=SASRec --dataset=ml-100k --epochs=10
    recbole-m6rec --model=M6Rec --dataset=ml-100k --epochs=10 --learning_rate=0.005
    recbole-m6rec --model=M6Rec --dataset=ml-100k --config_files="my_settings.yaml"
    recbole-m6rec --model=M6Rec --dataset=my-shop --data_path=data --dataset_yaml_dirs=datasets
    recbole-m6rec --model=M6Rec --dataset=ml-100k --nproc=2

``recbole-m6rec`` is installed with the package; ``python -m recbole_m6rec.cli`` and, in a checkout,
``python run_recbole.py`` take the same flags. Named flags are RecBole's; every other ``--key=value`` overrides the
config, as in RecBole. ``--config_files`` takes your own yaml files, separated by spaces; the model's defaults
(``recbole_m6rec/properties/model/<Model>.yaml``) and the dataset's (``<name>.yaml``, from the
``--dataset_yaml_dirs`` folders or the built-in ``recbole_m6rec/properties/dataset/``) are read first.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main", "console_main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", type=str, default="BPR", help="name of a RecBole or plugin model")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="name of datasets")
    parser.add_argument("--config_files", type=str, default=None, help="config files, separated by spaces")
    parser.add_argument("--nproc", type=int, default=1, help="the number of processes in this machine")
    parser.add_argument("--ip", type=str, default="localhost", help="the ip of master node")
    parser.add_argument("--port", type=str, default="5678", help="the port of master node")
    parser.add_argument("--world_size", type=int, default=-1, help="total number of jobs")
    parser.add_argument("--group_offset", type=int, default=0, help="the global rank offset of this group")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Run from command-line arguments (``sys.argv[1:]`` by default); returns RecBole's result dict."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, _ = build_parser().parse_known_args(argv)
    from recbole_m6rec.quick_start import run, run_distributed

    config_file_list = args.config_files.strip().split(" ") if args.config_files else None
    if args.nproc != 1 or args.world_size > 0:
        return run_distributed(
            args.model,
            args.dataset,
            args.nproc,
            config_file_list=config_file_list,
            cmd_args=argv,
            world_size=args.world_size,
            ip=args.ip,
            port=args.port,
            group_offset=args.group_offset,
        )
    return run(args.model, args.dataset, config_file_list=config_file_list, cmd_args=argv)


def console_main() -> int:
    """The ``recbole-m6rec`` command: :func:`main`, exit status 0 (a console script's return value becomes the exit
    status, and a dict there would be printed and exit 1). Results are in RecBole's log."""
    main()
    return 0


if __name__ == "__main__":
    main()
