"""Services wired around the brain: cloud sync, resilience, monitoring, alerts."""
