"""`python -m kipuka.client` runs the `kipuka-est` command."""

from kipuka.client.cli import run

run()
