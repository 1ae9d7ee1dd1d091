"""The kipuka command line."""
