"""WHOOP's webhooks: the receiver that keeps their events, the drain that reads them in a run."""
