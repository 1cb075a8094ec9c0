"""The model lifecycle: shadow, canary, the judge (pure), quarantine."""
