"""The subcommands of `mflow-sbi`, one module each: `add_parser(commands)` and `run(args)`."""
