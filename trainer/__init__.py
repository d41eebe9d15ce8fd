"""Simulator, model, training, evaluation and export. Importing the package needs no torch."""
