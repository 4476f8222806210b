"""The ``constcl-zoo`` subcommands, one module each, every one exposing ``add_parser(subparsers)`` and
``run(args) -> int`` (exit status). :mod:`constcl_zoo.cli` builds the parser from them and runs the chosen one
through :func:`constcl_zoo.errors.run_command` (user errors: one line, exit status 2)."""
