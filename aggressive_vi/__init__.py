"""aggressive-vi: aggressive inference-network training against posterior collapse in VAEs.

He, Spokoyny, Neubig, Berg-Kirkpatrick, "Lagging Inference Networks and Posterior Collapse in
Variational Autoencoders", ICLR 2019.
"""
from . import catch_up, engines, estimators, metrics
from .callbacks import Callback, PrintLogger, ProgressBar, StepInfo
from .checkpoint import Checkpoint, CheckpointError, latest_checkpoint
from .faults import NonFiniteError
from .history import EpochRecord, History
from .model import VAE, ELBOTerms
from .protocols import Decoder, Encoder, KLSchedule, KLThreshold, StoppingCriterion, TrainingEvent
from .schedules import ConstantKL, CyclicalKLAnnealing, LinearKLAnnealing
from .free_bits import FreeBits
from .lr_decay import LRDecayOnPlateau
from .stopping import Always, AnyOf, FixedEpochs, FixedSteps, MIPlateau
from .tensorboard_logger import TensorBoardLogger
from .engines import Engine
from .step import AggressiveStep, StepOutput
from .trainer import AggressiveTrainer
from ._impl.precision import allow_tf32

__version__ = "0.1.0"

__all__ = [
    "AggressiveTrainer",
    "AggressiveStep",
    "StepOutput",
    "Engine",
    "VAE",
    "ELBOTerms",
    "Encoder",
    "Decoder",
    "StoppingCriterion",
    "KLSchedule",
    "KLThreshold",
    "TrainingEvent",
    "MIPlateau",
    "FixedSteps",
    "FixedEpochs",
    "Always",
    "AnyOf",
    "LRDecayOnPlateau",
    "ConstantKL",
    "LinearKLAnnealing",
    "CyclicalKLAnnealing",
    "FreeBits",
    "History",
    "EpochRecord",
    "Callback",
    "StepInfo",
    "PrintLogger",
    "ProgressBar",
    "TensorBoardLogger",
    "allow_tf32",
    "Checkpoint",
    "CheckpointError",
    "latest_checkpoint",
    "NonFiniteError",
    "catch_up",
    "engines",
    "estimators",
    "metrics",
]
