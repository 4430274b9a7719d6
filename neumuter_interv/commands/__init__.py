"""One module per ``neumuter`` subcommand."""
