"""The ``qkd-hw`` command line: one entry point, one module per subcommand."""
