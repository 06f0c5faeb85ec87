"""The streaming worker: Faust agents that fold every event into the user's factors in Redis."""
