"""streamrec: a real-time streaming recommender on Kafka, Redis and implicit ALS.

This package holds what every stage shares: settings, the event contract, the two external
boundaries (Kafka and Redis), the local stack launcher, the traffic simulator and the CLI.
"""

__version__ = "0.1.0"
