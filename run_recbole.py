"""Train and evaluate any RecBole model or plugin model, like RecBole's own ``run_recbole.py``.

    python run_recbole.py --model=SASRec --dataset=ml-100k --epochs=10
    python run_recbole.py --model=M6Rec --dataset=ml-100k --epochs=10 --learning_rate=0.005
    python run_recbole.py --model=M6Rec --dataset=ml-100k --config_files="my_settings.yaml"
    python run_recbole.py --model=M6Rec --dataset=ml-100k --nproc=2

Named flags are RecBole's; every other ``--key=value`` overrides the config, as in RecBole. ``--config_files`` takes
your own yaml files, separated by spaces; the model's defaults (``recbole_m6rec/properties/model/<Model>.yaml``) and
the dataset's (``<name>.yaml`` from ``--dataset_yaml_dirs``, else ``recbole_m6rec/properties/dataset/``) are read
first. Returns RecBole's result dict. The installed ``recbole-m6rec`` command is the same script.
"""

from recbole_m6rec.cli import build_parser, main  # noqa: F401  (build_parser: the flags, for callers and tests)

if __name__ == "__main__":
    main()
