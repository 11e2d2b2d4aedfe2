"""Circuit discovery: sweeps over sparsity and extracted circuits."""

from circuitcut.circuits.circuit import Circuit, extract_circuit
from circuitcut.circuits.sweep import DEFAULT_KEEP, SweepConfig, SweepResult, sweep

__all__ = ["DEFAULT_KEEP", "Circuit", "SweepConfig", "SweepResult", "extract_circuit", "sweep"]
