"""The package's version and where its code lives: a leaf module that imports nothing of batcat_nb."""

from pathlib import Path

__version__ = "0.1.0"
PACKAGE_DIR = Path(__file__).resolve().parent  # the image hash, the agent's code key, the wheel
