"""The kipuka-est agent: certificates that renew themselves.

    config      the agent's TOML file
    schedule    thresholds, jitter, back-off
    state       what is remembered between runs (state directory, lock)
    runner      one certificate, one pass
    hook        the post-renew hook
    status      status file and Prometheus textfile
    daemon      --once and the long-running loop
    command     `kipuka-est agent`
    certmonger  `kipuka-est certmonger-submit`, certmonger's external CA helper
"""
