"""CLI subcommands, one module per stage (see ``metaerr_edge.cli.COMMANDS``)."""
