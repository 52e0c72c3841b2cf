"""serving_store: publish per-member recommendation lists to Redis atomically and look them up."""
