"""What `dlcvkit bench all` runs: every benchmark at the sizes below (the subcommands' defaults too), sized so
that the whole suite takes under 10 minutes on a 2-core CPU; `SMOKE` is the same suite at toy sizes, to check
that everything runs (its figures mean nothing).

No torch import here: the CLI reads these defaults at start-up.
"""

from __future__ import annotations

FULL = {
    "augment": {"sizes": [64, 128], "batches": [64, 256], "workers": 2, "batches_per_repeat": 2, "repeats": 3,
                "warmup": 1},
    # torch.compile of kornia takes ~30 s per shape on this CPU: one case in the suite
    "augment_compiled": {"sizes": [64], "batches": [256], "workers": 2, "batches_per_repeat": 2, "repeats": 3,
                         "warmup": 1},
    "train": [
        {"task": "byol", "model": "resnet18", "img_size": 64, "batch": 32},
        {"task": "cls", "model": "resnet18", "img_size": 32, "batch": 64},
        {"task": "seg", "model": "resnet18", "segmenter": "fcn8s", "img_size": 128, "batch": 8},
    ],
    "train_timing": {"interval": 5, "repeats": 3, "warmup": 1, "workers": 2},
    "ema": {"model": "resnet50", "tau": 0.996, "repeats": 20, "warmup": 3},
    "miou": {"batch": 8, "size": 512, "classes": 7, "repeats": 10, "warmup": 2},
    "eval_seg": {"masks": 257, "size": 512, "repeats": 3, "warmup": 1},
    "infer": {"segmenter": "fcn8s", "backbone": "resnet18", "images": 16, "img_size": 512, "batch": 8,
              "workers": 2, "precision": "fp32", "repeats": 3, "warmup": 1},
    "loader": {"cases": {"officehome": {"n": 16, "width": 3000, "height": 2000, "size": 224, "batch": 4},
                         "p2": {"n": 32, "width": 512, "height": 512, "size": 512, "batch": 8},
                         "mini": {"n": 256, "width": 84, "height": 84, "size": 128, "batch": 64}},
               "workers": [0, 2], "repeats": 3, "warmup": 1},
}

SMOKE = {
    "augment": {"sizes": [32], "batches": [8], "workers": 1, "batches_per_repeat": 1, "repeats": 2, "warmup": 0},
    "augment_compiled": None,
    "train": [
        {"task": "byol", "model": "test_resnet", "img_size": 32, "batch": 8},
        {"task": "cls", "model": "test_resnet", "img_size": 32, "batch": 8},
        {"task": "seg", "model": "test_resnet", "segmenter": "fcn8s", "img_size": 32, "batch": 4},
    ],
    "train_timing": {"interval": 2, "repeats": 2, "warmup": 1, "workers": 1},
    "ema": {"model": "test_resnet", "tau": 0.996, "repeats": 2, "warmup": 0},
    "miou": {"batch": 2, "size": 64, "classes": 7, "repeats": 2, "warmup": 0},
    "eval_seg": {"masks": 4, "size": 64, "repeats": 2, "warmup": 0},
    "infer": {"segmenter": "fcn8s", "backbone": "test_resnet", "images": 4, "img_size": 64, "batch": 2,
              "workers": 0, "precision": "fp32", "repeats": 2, "warmup": 0},
    # the officehome images are 8x the size, so that the scaled decode reduces them
    "loader": {"cases": {"officehome": {"n": 4, "width": 384, "height": 256, "size": 32, "batch": 2},
                         "p2": {"n": 4, "width": 64, "height": 64, "size": 64, "batch": 2},
                         "mini": {"n": 4, "width": 84, "height": 84, "size": 128, "batch": 2}},
               "workers": [0, 2], "repeats": 1, "warmup": 0},
}

# bench -> the contender the others' speed-ups are relative to
REFERENCES = {"augment": "torchvision", "train": "bare", "ema": "timm", "miou": "torchmetrics",
              "loader": "dlcvkit decode", "infer": "forward"}


def run_suite(config: dict, device, cache) -> list[dict]:
    """Every benchmark of `config` (FULL or SMOKE) in turn; the records of all of them."""
    from dlcvkit.bench.augment import bench_augment
    from dlcvkit.bench.ema import bench_ema
    from dlcvkit.bench.infer import bench_infer
    from dlcvkit.bench.loader import bench_loader
    from dlcvkit.bench.miou import bench_eval_seg, bench_miou
    from dlcvkit.bench.train import bench_train

    def augment(cfg: dict, contenders: tuple[str, ...]) -> list[dict]:
        return bench_augment(cfg["sizes"], cfg["batches"], device=device, repeats=cfg["repeats"],
                             warmup=cfg["warmup"], workers=cfg["workers"],
                             batches_per_repeat=cfg["batches_per_repeat"], contenders=contenders)

    records = augment(config["augment"], ("kornia", "torchvision"))
    if config["augment_compiled"]:
        records += augment(config["augment_compiled"], ("kornia_compiled",))
    for case in config["train"]:
        records += bench_train(**case, cache=cache, **config["train_timing"])
    records += bench_ema(**config["ema"], device=device)
    records += bench_miou(**config["miou"], device=device)
    records += bench_eval_seg(cache, **config["eval_seg"])
    records += bench_infer(**config["infer"], cache=cache)
    records += bench_loader(**config["loader"], cache=cache)
    return records
