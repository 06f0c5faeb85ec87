"""The batch refit: reads the event history from Kafka, fits implicit ALS, publishes a model version."""
