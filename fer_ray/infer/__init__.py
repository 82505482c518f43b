"""Pure (Ray-free) inference math: Smooth Predicting, ensembles and cascade routing, gap filling, writers."""
