"""The deploy driver: plan, engine, remote hosts, redaction, and the one subprocess caller."""
