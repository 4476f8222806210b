"""Subcommands of the `constcl-zoo` command line, one module each: `add_parser(subparsers)` and `run(args) -> int`."""
