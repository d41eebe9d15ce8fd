"""Physics-based simulator: chip layouts, SEM rendering, SSUM optical rendering, pairs and scans.

Pure numpy/OpenCV, seeded and deterministic; importing it needs no torch.
"""
