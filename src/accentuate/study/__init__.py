"""A human extrapolation study: the trials, the participant page and its server, the analysis."""
