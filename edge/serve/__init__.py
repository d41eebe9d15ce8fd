"""The conversion daemon: configuration, pipeline, metrics, systemd notification, GPU metrics."""
