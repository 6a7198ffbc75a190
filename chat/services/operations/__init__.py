"""Abuse limits, the audit log, and what a site administrator does."""
