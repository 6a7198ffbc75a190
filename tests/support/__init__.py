"""Helpers shared by the test tiers: real services, a real server process, test clients."""
