"""Evaluation harness: image-quality metrics, FRC, baselines, metrics.json and the HTML report.

The one implementation of the metrics used by training validation, the calibration gate, the
demo and `ssum eval`. No torch here (numpy, scipy, OpenCV, matplotlib only)."""
