"""fairsweep: reproducible sweeps on the fairness cost of ReLU linearization.

Importing the package is cheap on purpose: torch, Ray and MLflow load only in the commands
that need them.
"""

__version__ = "0.1.0"
