"""Read-only queries behind the pages: indexed columns, time-bounded, a few round trips each."""
