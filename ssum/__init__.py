"""The `ssum` command: the dispatcher, one argument-parsing module per command, and the demo."""
