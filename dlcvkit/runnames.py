"""The names of what a run writes into its folder, spelled here and nowhere else: the engine writes these files,
the run commands, reports and benchmarks find them by these constants (tests/test_names.py checks that no other
module spells them). Which of them a new run may remove is decided in `dlcvkit.engine.rundir`.

At the bottom of the layers, beside config.py (which reads RUN_DIR/recipe.toml when given a run folder).
"""

RUN_MARKER = ".dlcvkit-run"  # marks a folder as dlcvkit's: only there are the names below removed on a restart
RECIPE_FILE = "recipe.toml"  # the fully resolved recipe: `--recipe RUN_DIR/recipe.toml` reproduces the run
METRICS_FILE = "metrics.jsonl"  # one JSON object per logged step or evaluation
SUMMARY_FILE = "summary.csv"  # one row per evaluation
CHECKPOINTS_DIR = "checkpoints"  # resumable checkpoints, one folder each
LATEST_FILE = "latest"  # in CHECKPOINTS_DIR: the name of the newest complete checkpoint
MODEL_FILE = "model.safetensors"  # the weights at the last step
BEST_FILE = "best.safetensors"  # the weights with the best validation metric (the Task's `best_metric`)
EMA_FILE = "ema.safetensors"  # the model EMA's weights (train.model_ema > 0)
BACKBONE_FILE = "backbone.safetensors"  # BYOL's online encoder, what fine-tuning and probes start from
TENSORBOARD_DIR = "tensorboard"
MLRUNS_DIR = "mlruns"  # MLflow's store when no tracking server is configured
WANDB_DIR = "wandb"
TRACKERS_FILE = "trackers.json"  # the MLflow and W&B run ids of the run, which a resume continues
REPORT_NAME = "report"  # REPORT_NAME.md and REPORT_NAME.html
REPORT_MD = f"{REPORT_NAME}.md"
REPORT_HTML = f"{REPORT_NAME}.html"
CURVES_FILE = "curves.png"

REPORT_FILES = (REPORT_MD, REPORT_HTML, CURVES_FILE)  # also rewritten by `dlcvkit report RUN_DIR`
ENGINE_FILES = (RECIPE_FILE, METRICS_FILE, CHECKPOINTS_DIR, TENSORBOARD_DIR, MODEL_FILE, BEST_FILE, EMA_FILE)
LOG_FILES = (SUMMARY_FILE, MLRUNS_DIR, WANDB_DIR, TRACKERS_FILE, *REPORT_FILES)
