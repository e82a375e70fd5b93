"""The jobs that run the engine: replay, the live runner and its reloads, re-ingesting dead letters,
with the all-or-nothing steps and the stop signals they share."""
