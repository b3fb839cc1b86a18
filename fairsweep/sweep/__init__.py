"""The sweep: plan (trials and their stages), stage store, execution under Ray Tune."""
