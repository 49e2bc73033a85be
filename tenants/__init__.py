"""Tenants (teams), their members and roles, API tokens and per-user working directories."""
