"""Inline inspection: defects found by comparing an image with a reference (a golden image,
the neighbouring cells of a repeating pattern, or the layout), as records, KLARF files and
overlay pictures. See docs/inspection.md."""
