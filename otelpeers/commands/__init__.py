"""One module per `otelpeers` command; otelpeers.cli parses arguments and dispatches here."""
