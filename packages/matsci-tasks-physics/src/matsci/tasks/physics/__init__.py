"""Energy, force and stress tasks, direct forces and denoising pretraining for matsci."""

from importlib.metadata import version as _version

__version__ = _version("matsci-tasks-physics")

__all__: list[str] = ["__version__"]
