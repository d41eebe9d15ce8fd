"""One module per `ssum` command: `add_arguments(parser)` and `run(args) -> int`; argument
parsing only, the work is done by the library packages."""
