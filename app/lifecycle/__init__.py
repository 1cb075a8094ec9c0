"""The model lifecycle: shadow, canary, the judge (pure), rollback and quarantine decisions."""
