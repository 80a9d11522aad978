"""Training of keras_resnet models: datasets/pipelines, `python -m training.fit`, evaluation.

    from training.datasets import DATASETS, load, load_pipelines
    from training.fit import run            # run(TrainConfig(...)) -> metrics
    from training.config import TrainConfig
"""
