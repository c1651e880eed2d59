"""fastmlp: multilayer perceptrons with hand-written forward and backward kernels, one model
on interchangeable backends (NumPy reference, numba, C++, CuPy) behind one dispatch API.

``import fastmlp`` imports NumPy and nothing heavy; a backend's native code loads on first use.
"""

from . import callbacks, data, datasets, init, io, ops, optim, plot
from ._random import seed
from .backends import (
    BackendInfo,
    BackendUnavailableError,
    backends,
    empty_cache,
    get_backend,
    set_backend,
    use_backend,
)
from .callbacks import Callback, CSVLogger, EarlyStopping, ModelCheckpoint
from .io import load, save
from .layers import (
    ACTIVATIONS,
    ELU,
    GELU,
    MLP,
    SELU,
    Activation,
    Identity,
    LeakyReLU,
    Linear,
    LogSigmoid,
    LogSoftmax,
    Mish,
    Module,
    PReLU,
    ReLU,
    Sequential,
    Sigmoid,
    SiLU,
    Sinc,
    Softmax,
    Softplus,
    Softsign,
    Step,
    Swish,
    Tanh,
    get_activation,
)
from .losses import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    L1Loss,
    Loss,
    MSELoss,
    NLLLoss,
    get_loss,
)
from .train import History, accuracy, evaluate, fit, misclassified

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # backends
    "BackendInfo", "BackendUnavailableError", "backends", "empty_cache", "get_backend", "set_backend",
    "use_backend",
    # layers and models
    "Module", "Linear", "Sequential", "MLP", "Activation", "ACTIVATIONS", "get_activation",
    "Identity", "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softplus", "Softsign",
    "LogSigmoid", "SiLU", "Swish", "Mish", "GELU", "SELU", "Sinc", "Step", "Softmax",
    "LogSoftmax",
    # losses
    "Loss", "MSELoss", "L1Loss", "HuberLoss", "CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss",
    "BCELoss", "get_loss",
    # training, files
    "fit", "evaluate", "accuracy", "misclassified", "History", "Callback", "EarlyStopping",
    "ModelCheckpoint", "CSVLogger", "save", "load",
    # randomness and submodules
    "seed", "init", "ops", "optim", "data", "datasets", "plot", "io", "callbacks",
]
