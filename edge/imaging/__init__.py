"""Image tools shared by the trainer and the edge: image files, resampling, registration, mosaics."""
