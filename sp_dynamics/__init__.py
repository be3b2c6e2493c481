"""sp-dynamics: structure-preserving dynamics in PyTorch.

Layers, each importing only the ones above it:
brackets -> models -> integrators -> data (systems are plugins found through the registry).
"""

from .brackets import (
    BasisBracket,
    CanonicalJ,
    GenericBracket,
    KnownBracket,
    LearnedSkew,
    MixedBracket,
    LearnedSPD,
    ProjectionBracket,
    SoftBracket,
    degeneracy_penalty,
    make_bracket,
)
from .data import DatasetConfig, FamilyDataset, load_trajectories, make_family_dataset, save_trajectories
from .derivatives import estimate_derivatives
from .fitting import FitConfig, FitResult, fit, trajectory_loss
from .integrators import ConvergenceError, discrete_gradient, integrate
from .models import GENERICNet, HamiltonianNN, KineticPotential, LatentGENERICNet, LatentHamiltonianNN, PortHamiltonianNN
from .modulation import MODULATIONS, ModulatedMLP, orthogonality_penalty
from .nn import MLP, gradient
from .registry import get_system, list_systems, register_system, unregister_system
from .serialization import load, save
from .system import System, ring_states

__version__ = "0.1.0"

__all__ = [
    "CanonicalJ",
    "LearnedSkew",
    "LearnedSPD",
    "GenericBracket",
    "ProjectionBracket",
    "BasisBracket",
    "MixedBracket",
    "SoftBracket",
    "KnownBracket",
    "degeneracy_penalty",
    "make_bracket",
    "HamiltonianNN",
    "PortHamiltonianNN",
    "GENERICNet",
    "KineticPotential",
    "LatentHamiltonianNN",
    "LatentGENERICNet",
    "ModulatedMLP",
    "MODULATIONS",
    "orthogonality_penalty",
    "MLP",
    "gradient",
    "integrate",
    "fit",
    "FitConfig",
    "FitResult",
    "trajectory_loss",
    "estimate_derivatives",
    "discrete_gradient",
    "ConvergenceError",
    "System",
    "ring_states",
    "register_system",
    "get_system",
    "list_systems",
    "unregister_system",
    "DatasetConfig",
    "FamilyDataset",
    "make_family_dataset",
    "load_trajectories",
    "save_trajectories",
    "save",
    "load",
]
