"""camu: the science half of camu-orch. Pure PyTorch: CaMU unlearning, forgetting scenarios,
datasets, models and evaluation. Never imports ray or mlflow."""

from camu.data import DATASETS, ImageData, load_dataset
from camu.evaluation import Evaluation, evaluate
from camu.loop import run_method
from camu.methods import METHODS, CamuParams, UnlearnContext, official_params
from camu.models import MODELS, build_model
from camu.scenarios import SCENARIOS, forget_indices, load_split, make_split, retain_indices, save_split
from camu.training import TrainRecipe, train_classifier

__version__ = "0.1.0"

__all__ = ["DATASETS", "METHODS", "MODELS", "SCENARIOS", "CamuParams", "Evaluation", "ImageData", "TrainRecipe",
           "UnlearnContext", "__version__", "build_model", "evaluate", "forget_indices", "load_dataset",
           "load_split", "make_split", "official_params", "retain_indices", "run_method", "save_split",
           "train_classifier"]
