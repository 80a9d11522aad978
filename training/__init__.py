"""Training of keras_resnet models: datasets/pipelines, `python -m training.fit`, evaluation,
and the preprocessing that turns image files into a model's input.

    from training.data import DATASETS, load, load_pipelines
    from training.fit import run            # run(TrainConfig(...)) -> metrics
    from training.config import TrainConfig
    from training import decode_predictions, load_images, preprocessing_for
"""

from training.preprocessing import Preprocessing, load_image, load_images
from training.ranking import decode_predictions
from training.runrecord import preprocessing_for

__all__ = ["Preprocessing", "decode_predictions", "load_image", "load_images",
           "preprocessing_for"]
