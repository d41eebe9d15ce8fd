"""Inference for a model bundle: the bundle, backends, engine cache, tiling, preprocessing and the
Converter that puts them together."""
