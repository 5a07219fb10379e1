"""IniLoRA's weight approximation (``solver``) and the factors files it writes (``artifact``).

``job.run`` is the workflow's decompose stage: read the target weights, solve, write every
checkpoint with its metadata.
"""

from inilora.decompose.artifact import (ArtifactError, check_provenance, fingerprint, load_artifact, save_artifact,
                                        versions)
from inilora.decompose.solver import (Checkpoint, SolverSettings, decompose_weights, eckart_young_mse, exact_mse,
                                      global_sigma, init_factors, module_seed, module_type, products_reading_w,
                                      read_dtype, solve)

__all__ = ["ArtifactError", "Checkpoint", "SolverSettings", "check_provenance", "decompose_weights",
           "eckart_young_mse", "exact_mse", "fingerprint", "global_sigma", "init_factors", "load_artifact",
           "module_seed", "module_type", "products_reading_w", "read_dtype", "save_artifact", "solve", "versions"]
