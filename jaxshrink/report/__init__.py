"""What a person reads after a run: `pictures` (masks, filter outputs, timelines, the
tasks' pictures by name), `plots` (the classifiers' and regressions' figures),
`run_pictures` (every picture of one run) and `summary` (the results record and its text)."""
