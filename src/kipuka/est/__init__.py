"""The EST front end: routes under /.well-known/est/, wire codecs and caller identity."""
