"""Benchmark systems as plugins.

Importing this package registers the built-in systems; they are also declared under the
``sp_dynamics.systems`` entry-point group, so ``sp_dynamics`` finds them by name without
importing this package. Register your own with :func:`register_system`.

=================== ============ ============================================
name                kind         parameters (sampling box)
=================== ============ ============================================
``pendulum``        Hamiltonian  m in [0.5, 2], l in [0.5, 2]
``mass_spring``     Hamiltonian  m in [0.5, 2], k in [0.5, 2]
``duffing``         Hamiltonian  alpha in [0.5, 2], beta in [0.1, 1]
``dno``             GENERIC      k in [1, 6], gamma in [0.04, 0.25]
``gas_containers``  GENERIC      gamma in [5, 10]
=================== ============ ============================================
"""

from sp_dynamics.registry import get_system, list_systems, register_system, unregister_system
from sp_dynamics.system import System, ring_states

from .dno import DampedNonlinearOscillator
from .duffing import Duffing
from .gas_containers import GasContainers
from .mass_spring import MassSpring
from .pendulum import Pendulum

BUILTIN_SYSTEMS = {
    "pendulum": Pendulum,
    "mass_spring": MassSpring,
    "duffing": Duffing,
    "dno": DampedNonlinearOscillator,
    "gas_containers": GasContainers,
}
for _name, _cls in BUILTIN_SYSTEMS.items():
    register_system(_name, _cls)

__all__ = [
    "System",
    "ring_states",
    "register_system",
    "get_system",
    "list_systems",
    "unregister_system",
    "BUILTIN_SYSTEMS",
    "Pendulum",
    "MassSpring",
    "Duffing",
    "DampedNonlinearOscillator",
    "GasContainers",
]
