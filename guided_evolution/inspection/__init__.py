"""Read-only views of a run, live or finished: JSON-able data, terminal rendering, the HTML report."""
