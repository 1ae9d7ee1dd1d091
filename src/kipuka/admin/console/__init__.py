"""The web console: pages for RA officers and operators, served on the admin listener.

Static HTML, CSS and JavaScript committed under static/ (no build step, nothing
fetched from elsewhere at run time); the pages call the JSON admin API with the
session cookie. routes.py serves them, session.py keeps sessions and CSRF tokens.
"""
