"""streamrec: a real-time streaming recommender on Kafka, Redis and implicit ALS.

This package holds what every stage shares: settings, the event contract, the two external
boundaries (Kafka and Redis), the local stack launcher and the traffic simulator. It imports no stage:
the command line and everything that composes the stages is `ops/`.
"""

__version__ = "0.1.0"
